import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** PEM files made for one test run (paths) and their contents. */
export interface TestCertificates {
  dir: string;
  /** The CA every good certificate chains to. */
  caCert: string;
  /** Server certificate for 127.0.0.1 / localhost (serverAuth). */
  serverCert: string;
  serverKey: string;
  /** Server certificate for SERVICE_NAME only (a DNS name, no address): what a Kubernetes Service's pods present. */
  serviceCert: string;
  serviceKey: string;
  /** Client certificate (clientAuth) from the same CA. */
  clientCert: string;
  clientKey: string;
  /** A second, unrelated CA and a client certificate of its own: trusted by nobody. */
  rogueCaCert: string;
  rogueClientCert: string;
  rogueClientKey: string;
  read(path: string): Buffer;
}

/** The DNS name the service certificate is for. */
export const SERVICE_NAME = 'moeflash-inference.moeflash.svc.test';

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string): void {
  openssl(dir, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', `/CN=moeflash test ${name}`, '-keyout', `${name}.key`, '-out', `${name}.crt`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

function makeLeaf(dir: string, name: string, ca: string, extensions: string): void {
  openssl(dir, ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=moeflash test ${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`]);
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-set_serial', String(Date.now()), '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.crt`]);
}

/**
 * A CA, a server certificate (127.0.0.1, localhost), a client certificate, and a rogue CA with its own client
 * certificate, made with the openssl command in `dir` (EC P-256, valid for two days). Keys are written 0600.
 */
export function makeTestCertificates(dir: string): TestCertificates {
  makeCa(dir, 'ca');
  makeCa(dir, 'rogue-ca');
  makeLeaf(dir, 'server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n');
  makeLeaf(dir, 'service', 'ca', `subjectAltName=DNS:${SERVICE_NAME}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n`);
  makeLeaf(dir, 'client', 'ca', 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n');
  makeLeaf(dir, 'rogue-client', 'rogue-ca', 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n');
  const p = (f: string) => join(dir, f);
  return {
    dir,
    caCert: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    serviceCert: p('service.crt'),
    serviceKey: p('service.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    rogueCaCert: p('rogue-ca.crt'),
    rogueClientCert: p('rogue-client.crt'),
    rogueClientKey: p('rogue-client.key'),
    read: (path) => readFileSync(path),
  };
}
