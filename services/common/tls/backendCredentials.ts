import { ChannelCredentials, type ChannelOptions } from '@grpc/grpc-js';
import type { BackendTlsSettings } from './transportSettings';

export interface BackendCredentials {
  credentials: ChannelCredentials;
  /** Channel options that go with them (the name the server certificate is checked against). */
  channelOptions: ChannelOptions;
}

/**
 * Credentials of the router's channels to its backends: plaintext without settings; otherwise TLS verifying the
 * backend against `ca` (and its address's host, or `serverName`), presenting the router's certificate if given.
 */
export function backendCredentials(tls: BackendTlsSettings | undefined): BackendCredentials {
  if (!tls) return { credentials: ChannelCredentials.createInsecure(), channelOptions: {} };
  return {
    credentials: ChannelCredentials.createSsl(tls.ca, tls.key ?? null, tls.cert ?? null),
    channelOptions: tls.serverName ? { 'grpc.ssl_target_name_override': tls.serverName, 'grpc.default_authority': tls.serverName } : {},
  };
}
