import { ServerCredentials } from '@grpc/grpc-js';
import type { ServerTlsSettings } from './transportSettings';

/**
 * The credentials a gRPC port is bound with: plaintext without settings, TLS with a certificate, mutual TLS (the
 * handshake fails for a client without a certificate chaining to `ca`) when client certificates are required.
 */
export function serverCredentials(tls: ServerTlsSettings | undefined): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  return ServerCredentials.createSsl(tls.ca ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], tls.requireClientCert);
}
