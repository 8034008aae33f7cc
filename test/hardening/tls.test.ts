import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Channel as GrpcChannel, ChannelCredentials, credentials as grpcCredentials } from '@grpc/grpc-js';
import { createChannel, createClient, Metadata, Status, type Channel } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { HealthCheckResponse_ServingStatus } from 'nice-grpc-server-health/lib/proto/grpc/health/v1/health';
import { GenerationServiceDefinition } from '../../gen/moeflash/v1/generation';
import { InferenceServiceDefinition } from '../../gen/moeflash/v1/inference';
import { DefinitionClient } from '../../services/common/DefinitionClient';
import { InvalidArgumentError } from '../../services/common/errors';
import { backendCredentials, serverCredentials, transportSettings, type TransportSettings } from '../../services/common/tls';
import { repoRoot } from '../../services/engine/loadAddon';
import { createInferenceServer } from '../../services/inference/createInferenceServer';
import { EngineHost } from '../../services/inference/EngineHost';
import { createRouterServer } from '../../services/router/createRouterServer';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, failure, generateRequest } from '../../harness/grpcClients';
import { spawnService } from '../../harness/spawnService';
import { routerReady, startInference, TEST_ROUTER_CONFIG, testLog } from '../../harness/startStack';
import { makeTestCertificates, SERVICE_NAME, type TestCertificates } from './testCertificates';
import { LoopbackDnsServer } from '../../harness/LoopbackDnsServer';

const API_KEY = 'moeflash-tls-test-key-aaaaaaaaaa';

describe('hardening: TLS, mutual TLS and the separate health listener', function () {
  this.timeout(60_000);
  let dir: string;
  let certs: TestCertificates;
  const channels: Channel[] = [];
  const cleanups: (() => Promise<void> | void)[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-tls-'));
    certs = makeTestCertificates(dir);
  });
  afterEach(async () => {
    for (const c of channels.splice(0)) c.close();
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Environment for the given TLS roles, file paths from `certs`. */
  function tlsEnv(parts: { server?: boolean; clientAuth?: boolean; backend?: 'ca' | 'mtls'; health?: string }): NodeJS.ProcessEnv {
    return {
      ...(parts.server && { MOEFLASH_TLS_CERT: certs.serverCert, MOEFLASH_TLS_KEY: certs.serverKey }),
      ...(parts.clientAuth && { MOEFLASH_TLS_CA: certs.caCert, MOEFLASH_TLS_CLIENT_AUTH: 'require' }),
      ...(parts.backend && { MOEFLASH_BACKEND_TLS_CA: certs.caCert }),
      ...(parts.backend === 'mtls' && { MOEFLASH_BACKEND_TLS_CERT: certs.clientCert, MOEFLASH_BACKEND_TLS_KEY: certs.clientKey }),
      ...(parts.health && { MOEFLASH_HEALTH_ADDR: parts.health }),
    };
  }

  /** A client's view: TLS trusting `ca`, optionally presenting a certificate; or plaintext. */
  function clientCredentials(kind: 'plaintext' | 'tls' | 'tls-rogue-ca' | 'mtls' | 'mtls-rogue'): ChannelCredentials {
    const r = certs.read;
    switch (kind) {
      case 'plaintext': return ChannelCredentials.createInsecure();
      case 'tls': return ChannelCredentials.createSsl(r(certs.caCert));
      case 'tls-rogue-ca': return ChannelCredentials.createSsl(r(certs.rogueCaCert));
      case 'mtls': return ChannelCredentials.createSsl(r(certs.caCert), r(certs.clientKey), r(certs.clientCert));
      case 'mtls-rogue': return ChannelCredentials.createSsl(r(certs.caCert), r(certs.rogueClientKey), r(certs.rogueClientCert));
    }
  }

  function generation(address: string, kind: Parameters<typeof clientCredentials>[0]) {
    const channel = createChannel(address, clientCredentials(kind));
    channels.push(channel);
    return createClient(GenerationServiceDefinition, channel);
  }

  /** A router on 127.0.0.1:0 with the transport `settings` in front of `backends`; stopped after the test. */
  async function startRouter(backends: string[], settings: TransportSettings, apiKeys?: string[]) {
    const router = createRouterServer({
      log: testLog,
      config: { ...TEST_ROUTER_CONFIG, backends, apiKeys },
      backendCredentials: backendCredentials(settings.backend),
    });
    const port = await router.listen('127.0.0.1:0', serverCredentials(settings.server));
    const healthPort = settings.healthAddr ? await router.listenHealth(settings.healthAddr) : undefined;
    cleanups.push(async () => {
      await router.shutdown(0);
      router.close();
    });
    return { router, address: `127.0.0.1:${port}`, healthAddress: `127.0.0.1:${healthPort}` };
  }

  /** An inference server hosting FakeEngine 'fake' behind mutual TLS; its address. */
  async function startMtlsInference(): Promise<string> {
    const host = new EngineHost();
    host.setReady('fake', new FakeEngine());
    const inference = createInferenceServer({ host, log: testLog });
    const port = await inference.listen('127.0.0.1:0', serverCredentials(transportSettings(tlsEnv({ server: true, clientAuth: true })).server));
    cleanups.push(() => inference.shutdown(0));
    return `127.0.0.1:${port}`;
  }

  async function startPlainStack(settings: TransportSettings) {
    const inference = await startInference({ fake: new FakeEngine() });
    cleanups.push(() => inference.server.shutdown(0));
    const router = await startRouter([inference.address], settings);
    await routerReady(router.router, 'fake');
    return router;
  }

  it('settings: everything off by default; incomplete, unreadable or mismatched material fails naming the variable', () => {
    assert.deepEqual(transportSettings({}), {});
    const full = transportSettings(tlsEnv({ server: true, clientAuth: true, backend: 'mtls', health: '0.0.0.0:8081' }));
    assert.equal(full.server?.requireClientCert, true);
    assert.ok(full.server?.ca && full.backend?.cert && full.backend.key);
    assert.equal(full.healthAddr, '0.0.0.0:8081');

    const fails = (env: NodeJS.ProcessEnv, field: string, pattern: RegExp) =>
      assert.throws(
        () => transportSettings(env),
        (e: unknown) => e instanceof InvalidArgumentError && e.violations.some((v) => v.field === field && pattern.test(v.description)),
        `${field} ${pattern}`,
      );
    fails({ MOEFLASH_TLS_CERT: certs.serverCert }, 'MOEFLASH_TLS_CERT', /set together/);
    fails({ MOEFLASH_TLS_CERT: certs.serverCert, MOEFLASH_TLS_KEY: join(dir, 'absent.key') }, 'MOEFLASH_TLS_KEY', /ENOENT/);
    fails({ MOEFLASH_TLS_CERT: certs.serverCert, MOEFLASH_TLS_KEY: certs.clientKey }, 'MOEFLASH_TLS_KEY', /unusable TLS material/);
    fails({ ...tlsEnv({ server: true }), MOEFLASH_TLS_CLIENT_AUTH: 'require' }, 'MOEFLASH_TLS_CA', /client certificates chain to/);
    fails({ ...tlsEnv({ server: true }), MOEFLASH_TLS_CLIENT_AUTH: 'optional' }, 'MOEFLASH_TLS_CLIENT_AUTH', /none, require/);
    fails({ MOEFLASH_TLS_CA: certs.caCert, MOEFLASH_TLS_CLIENT_AUTH: 'require' }, 'MOEFLASH_TLS_CERT', /need a server certificate/);
    fails({ MOEFLASH_BACKEND_TLS_CERT: certs.clientCert, MOEFLASH_BACKEND_TLS_KEY: certs.clientKey }, 'MOEFLASH_BACKEND_TLS_CA', /CA/);
    fails({ MOEFLASH_BACKEND_TLS_CA: certs.clientKey }, 'MOEFLASH_BACKEND_TLS_CA', /unusable TLS material/);
    fails({ MOEFLASH_HEALTH_ADDR: 'health' }, 'MOEFLASH_HEALTH_ADDR', /host:port/);
  });

  it('a TLS router serves a client trusting its CA; a plaintext client and one trusting another CA cannot connect', async () => {
    const router = await startPlainStack(transportSettings(tlsEnv({ server: true })));
    const request = generateRequest({ prompt: 'hi', maxTokens: 3 });
    assert.equal((await drain(generation(router.address, 'tls').generate(request))).tokens.length, 3);
    for (const kind of ['plaintext', 'tls-rogue-ca'] as const) {
      const f = await failure((o) => generation(router.address, kind).listModels({}, o));
      assert.equal(f.code, Status.UNAVAILABLE, kind);
      assert.doesNotMatch(f.details, /no healthy backend/, `${kind}: failed at the transport, not in the router`);
    }
  });

  it('a mutual-TLS router rejects a client without a certificate or with one from another CA', async () => {
    const router = await startPlainStack(transportSettings(tlsEnv({ server: true, clientAuth: true })));
    for (const kind of ['tls', 'mtls-rogue', 'plaintext'] as const) {
      const f = await failure((o) => generation(router.address, kind).listModels({}, o));
      assert.equal(f.code, Status.UNAVAILABLE, kind);
    }
    const { models } = await generation(router.address, 'mtls').listModels({});
    assert.deepEqual(models.map((m) => m.name), ['fake']);
  });

  it('router -> inference over mutual TLS: routes with its client certificate; without one the backend refuses the channel', async () => {
    const backend = await startMtlsInference();

    const router = await startRouter([backend], transportSettings(tlsEnv({ backend: 'mtls' })));
    await routerReady(router.router, 'fake');
    const tokens = (await drain(generation(router.address, 'plaintext').generate(generateRequest({ prompt: 'over mtls', maxTokens: 4 })))).tokens;
    assert.equal(tokens.length, 4);

    // The channel a router without a client certificate would open: the backend's handshake refuses it.
    for (const settings of [tlsEnv({ backend: 'ca' }), {}]) {
      const { credentials, channelOptions } = backendCredentials(transportSettings(settings).backend);
      const channel = new GrpcChannel(backend, credentials, channelOptions);
      try {
        const client = new DefinitionClient(InferenceServiceDefinition, channel, backend);
        const f = await failure(() => client.unary('listModels', {}));
        assert.equal(f.code, Status.UNAVAILABLE);
      } finally {
        channel.close();
      }
    }
  });

  it('a backend discovered through DNS is dialled by address and verified against the name it came from', async () => {
    // The pod's certificate names the Service, not the pod's address: without the name as TLS server name the
    // router could not verify it.
    const dns = await LoopbackDnsServer.start();
    cleanups.push(() => dns.close());
    const host = new EngineHost();
    host.setReady('fake', new FakeEngine());
    const inference = createInferenceServer({ host, log: testLog });
    const port = await inference.listen('127.0.0.2:0', serverCredentials(transportSettings({ MOEFLASH_TLS_CERT: certs.serviceCert, MOEFLASH_TLS_KEY: certs.serviceKey }).server));
    cleanups.push(() => inference.shutdown(0));
    dns.set(SERVICE_NAME, ['127.0.0.2']);
    const router = createRouterServer({
      log: testLog,
      config: { ...TEST_ROUTER_CONFIG, backends: [`dns:///${SERVICE_NAME}:${port}`], dnsServers: [dns.address], resolveMs: 1_000 },
      backendCredentials: backendCredentials(transportSettings(tlsEnv({ backend: 'ca' })).backend),
    });
    const routerPort = await router.listen('127.0.0.1:0');
    cleanups.push(async () => {
      await router.shutdown(0);
      router.close();
    });
    await routerReady(router, 'fake');
    const result = await drain(generation(`127.0.0.1:${routerPort}`, 'plaintext').generate(generateRequest({ prompt: 'hi', maxTokens: 3 })));
    assert.equal(result.tokens.length, 3);
  });

  it('the health listener answers plaintext probes while the main port needs mutual TLS and a token, and serves nothing else', async () => {
    const settings = transportSettings(tlsEnv({ server: true, clientAuth: true, health: '127.0.0.1:0' }));
    const inference = await startInference({ fake: new FakeEngine() });
    cleanups.push(() => inference.server.shutdown(0));
    const { router, address, healthAddress } = await startRouter([inference.address], settings, [API_KEY]);
    await routerReady(router, 'fake');

    const probeChannel = createChannel(healthAddress);
    channels.push(probeChannel);
    const probe = createClient(HealthDefinition, probeChannel);
    assert.equal((await probe.check({ service: 'moeflash.v1.GenerationService' })).status, HealthCheckResponse_ServingStatus.SERVING);
    assert.equal((await failure((o) => createClient(HealthDefinition, channelTo(address)).check({ service: '' }, o))).code, Status.UNAVAILABLE);
    const elsewhere = await failure((o) => generation(healthAddress, 'plaintext').listModels({}, o));
    assert.equal(elsewhere.code, Status.UNIMPLEMENTED);
    const metadata = new Metadata({ authorization: `Bearer ${API_KEY}` });
    assert.equal((await generation(address, 'mtls').listModels({}, { metadata })).models.length, 1);

    // A drain shows on the probe port: the watch sees NOT_SERVING, then the listener closes.
    const watch = probe.watch({ service: 'moeflash.v1.GenerationService' })[Symbol.asyncIterator]();
    assert.equal((await watch.next()).value?.status, HealthCheckResponse_ServingStatus.SERVING);
    const stopped = router.shutdown(0);
    assert.equal((await watch.next()).value?.status, HealthCheckResponse_ServingStatus.NOT_SERVING);
    await stopped;
    assert.equal((await failure((o) => probe.check({ service: '' }, o))).code, Status.UNAVAILABLE);
  });

  it('the router process takes its TLS, client-certificate, backend and health settings from the environment', async () => {
    const backend = await startMtlsInference();

    const env = tlsEnv({ server: true, clientAuth: true, backend: 'mtls', health: '127.0.0.1:0' });
    const service = await spawnService(join(repoRoot(), 'dist', 'services', 'router', 'main.js'), {
      ...(env as Record<string, string>),
      MOEFLASH_ROUTER_ADDR: '127.0.0.1:0',
      MOEFLASH_BACKENDS: backend,
      MOEFLASH_METRICS_ADDR: 'off',
    });
    cleanups.push(async () => {
      service.child.kill('SIGTERM');
      await service.exited;
    });
    const health = await service.waitForLog((l) => l.msg === 'health listening');
    assert.equal(service.logs.find((l) => l.msg === 'listening')?.tls, true);
    const probeChannel = createChannel(String(health.healthAddress));
    channels.push(probeChannel);
    // Ready once the router has its backend, over mutual TLS.
    for await (const { status } of createClient(HealthDefinition, probeChannel).watch({ service: 'moeflash.v1.GenerationService' })) {
      if (status === HealthCheckResponse_ServingStatus.SERVING) break;
    }
    const address = `127.0.0.1:${service.port}`;
    assert.equal((await drain(generation(address, 'mtls').generate(generateRequest({ prompt: 'e2e', maxTokens: 2 })))).tokens.length, 2);
    assert.equal((await failure((o) => generation(address, 'tls').listModels({}, o))).code, Status.UNAVAILABLE);
  });

  function channelTo(address: string): Channel {
    const channel = createChannel(address, grpcCredentials.createInsecure());
    channels.push(channel);
    return channel;
  }
});
