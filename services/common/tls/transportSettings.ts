import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { InvalidArgumentError, type FieldViolation } from '../errors';

/** TLS on a process's own gRPC port. */
export interface ServerTlsSettings {
  /** PEM certificate chain (MOEFLASH_TLS_CERT). */
  cert: Buffer;
  /** PEM private key of the certificate (MOEFLASH_TLS_KEY). */
  key: Buffer;
  /** PEM CA bundle that client certificates must chain to (MOEFLASH_TLS_CA). */
  ca?: Buffer;
  /** MOEFLASH_TLS_CLIENT_AUTH=require: mutual TLS, a client without a certificate from `ca` cannot connect. */
  requireClientCert: boolean;
}

/** TLS on the router's channels to its inference backends. */
export interface BackendTlsSettings {
  /** PEM CA bundle the backends' certificates must chain to (MOEFLASH_BACKEND_TLS_CA). */
  ca: Buffer;
  /** The router's client certificate and key, for backends that require mutual TLS (MOEFLASH_BACKEND_TLS_CERT/_KEY). */
  cert?: Buffer;
  key?: Buffer;
  /** Name the backends' certificates are checked against instead of the host of their address (MOEFLASH_BACKEND_TLS_SERVER_NAME). */
  serverName?: string;
}

/** How a process's gRPC traffic is protected; every part off by default (loopback, plaintext). */
export interface TransportSettings {
  server?: ServerTlsSettings;
  backend?: BackendTlsSettings;
  /**
   * MOEFLASH_HEALTH_ADDR: a second, plaintext listener serving grpc.health.v1 only, so that probes (kubelet gRPC
   * probes speak neither TLS nor bearer tokens) work while the main port requires TLS or a client certificate.
   */
  healthAddr?: string;
}

const CLIENT_AUTH = ['none', 'require'] as const;
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/**
 * Reads MOEFLASH_TLS_*, MOEFLASH_BACKEND_TLS_* and MOEFLASH_HEALTH_ADDR, loads the PEM files and checks that each
 * key matches its certificate, so a wrong file fails startup naming the variable instead of failing every
 * handshake later. Throws InvalidArgumentError naming each bad variable.
 */
export function transportSettings(env: NodeJS.ProcessEnv = process.env): TransportSettings {
  const violations: FieldViolation[] = [];
  const get = (name: string): string | undefined => {
    const v = env[name]?.trim();
    return v ? v : undefined;
  };
  const pem = (name: string): Buffer | undefined => {
    const file = get(name);
    if (file === undefined) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      violations.push({ field: name, description: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` });
      return undefined;
    }
  };
  const settings: TransportSettings = {};

  const cert = pem('MOEFLASH_TLS_CERT');
  const key = pem('MOEFLASH_TLS_KEY');
  const ca = pem('MOEFLASH_TLS_CA');
  const clientAuth = get('MOEFLASH_TLS_CLIENT_AUTH') ?? 'none';
  if (!(CLIENT_AUTH as readonly string[]).includes(clientAuth)) {
    violations.push({ field: 'MOEFLASH_TLS_CLIENT_AUTH', description: `must be one of ${CLIENT_AUTH.join(', ')}, got '${clientAuth}'` });
  }
  const serverConfigured = get('MOEFLASH_TLS_CERT') !== undefined || get('MOEFLASH_TLS_KEY') !== undefined;
  if (serverConfigured && (get('MOEFLASH_TLS_CERT') === undefined || get('MOEFLASH_TLS_KEY') === undefined)) {
    violations.push({ field: 'MOEFLASH_TLS_CERT', description: 'MOEFLASH_TLS_CERT and MOEFLASH_TLS_KEY are set together' });
  }
  if (!serverConfigured && (clientAuth === 'require' || get('MOEFLASH_TLS_CA') !== undefined)) {
    violations.push({ field: 'MOEFLASH_TLS_CERT', description: 'MOEFLASH_TLS_CA and MOEFLASH_TLS_CLIENT_AUTH need a server certificate (MOEFLASH_TLS_CERT, MOEFLASH_TLS_KEY)' });
  }
  if (clientAuth === 'require' && get('MOEFLASH_TLS_CA') === undefined) {
    violations.push({ field: 'MOEFLASH_TLS_CA', description: 'MOEFLASH_TLS_CLIENT_AUTH=require needs the CA that client certificates chain to' });
  }
  if (cert && key) {
    checkPem(violations, 'MOEFLASH_TLS_KEY', { cert, key });
    if (ca) checkPem(violations, 'MOEFLASH_TLS_CA', { ca });
    settings.server = { cert, key, ca, requireClientCert: clientAuth === 'require' };
  }

  const backendCa = pem('MOEFLASH_BACKEND_TLS_CA');
  const backendCert = pem('MOEFLASH_BACKEND_TLS_CERT');
  const backendKey = pem('MOEFLASH_BACKEND_TLS_KEY');
  const serverName = get('MOEFLASH_BACKEND_TLS_SERVER_NAME');
  if ((get('MOEFLASH_BACKEND_TLS_CERT') === undefined) !== (get('MOEFLASH_BACKEND_TLS_KEY') === undefined)) {
    violations.push({ field: 'MOEFLASH_BACKEND_TLS_CERT', description: 'MOEFLASH_BACKEND_TLS_CERT and MOEFLASH_BACKEND_TLS_KEY are set together' });
  }
  const backendConfigured = ['MOEFLASH_BACKEND_TLS_CERT', 'MOEFLASH_BACKEND_TLS_KEY', 'MOEFLASH_BACKEND_TLS_SERVER_NAME'].some((n) => get(n) !== undefined);
  if (backendConfigured && get('MOEFLASH_BACKEND_TLS_CA') === undefined) {
    violations.push({ field: 'MOEFLASH_BACKEND_TLS_CA', description: 'TLS to the backends needs the CA their certificates chain to' });
  }
  if (backendCa) {
    checkPem(violations, 'MOEFLASH_BACKEND_TLS_CA', { ca: backendCa });
    if (backendCert && backendKey) checkPem(violations, 'MOEFLASH_BACKEND_TLS_KEY', { cert: backendCert, key: backendKey });
    settings.backend = { ca: backendCa, cert: backendCert, key: backendKey, serverName };
  }

  const healthAddr = get('MOEFLASH_HEALTH_ADDR');
  if (healthAddr !== undefined) {
    const m = HOST_PORT.exec(healthAddr);
    if (!m || Number(m[2]) > 65535) violations.push({ field: 'MOEFLASH_HEALTH_ADDR', description: `must be host:port, got '${healthAddr}'` });
    else settings.healthAddr = healthAddr;
  }

  if (violations.length > 0) throw new InvalidArgumentError(violations);
  return settings;
}

/**
 * Whether Node's TLS accepts the PEM material (it parses, the key belongs to the certificate, a CA bundle starts
 * with a certificate: Node's TLS skips anything else in it silently).
 */
function checkPem(violations: FieldViolation[], field: string, material: { cert?: Buffer; key?: Buffer; ca?: Buffer }): void {
  try {
    if (material.ca) new X509Certificate(material.ca);
    createSecureContext(material);
  } catch (err) {
    violations.push({ field, description: `unusable TLS material: ${(err as Error).message}` });
  }
}
