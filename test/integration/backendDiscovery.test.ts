/**
 * Backends discovered, not listed: the router resolves dns:///name:port through a real DNS server on the loopback
 * (UDP, started here) into inference processes on 127.0.0.2-5, and follows the answer as it changes, as it would a
 * Kubernetes headless Service when the StatefulSet scales. Which backend served a call is read from that backend's
 * ListRecentRequests, by request id.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createChannel, createClient } from 'nice-grpc';

import { RecentRequestsServiceDefinition } from '../../gen/moeflash/v1/inference';
import { repoRoot } from '../../services/engine/loadAddon';
import { drain, generateRequest, generationClient } from '../../harness/grpcClients';
import { LoopbackDnsServer } from '../../harness/LoopbackDnsServer';
import { spawnService, type SpawnedService } from '../../harness/spawnService';
import { startRouter, waitFor, type RouterInstance } from '../../harness/startStack';

const NAME = 'moeflash-inference.moeflash.svc.test';
const RESOLVE_MS = 200;
const FAKE_INFERENCE_MAIN = join(repoRoot(), 'dist', 'test', 'helpers', 'fakeInferenceMain.js');

/** A port free on every loopback address the test uses (taken on one, then bound on all). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.2', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('router: backends discovered through DNS', function () {
  let dns: LoopbackDnsServer;
  let router: RouterInstance;
  const backends = new Map<string, SpawnedService>();
  let port: number;

  async function startBackend(ip: string): Promise<void> {
    backends.set(ip, await spawnService(FAKE_INFERENCE_MAIN, { MOEFLASH_INFERENCE_ADDR: `${ip}:${port}`, MOEFLASH_METRICS_ADDR: 'off', FAKE_TOKEN_DELAY_MS: '2' }));
  }
  /** The request ids with `prefix` that the backend on `ip` served. */
  async function served(ip: string, prefix: string): Promise<number> {
    const channel = createChannel(`${ip}:${port}`);
    try {
      const { requests } = await createClient(RecentRequestsServiceDefinition, channel).listRecentRequests({ limit: 0, requestId: '' });
      return requests.filter((r) => r.requestId.startsWith(prefix)).length;
    } finally {
      channel.close();
    }
  }
  const candidates = () => router.router.pool.candidates('fake');

  before(async () => {
    port = await freePort();
    dns = await LoopbackDnsServer.start();
    for (const ip of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) await startBackend(ip);
    dns.set(NAME, ['127.0.0.2', '127.0.0.3', '127.0.0.4']);
    router = await startRouter([`dns:///${NAME}:${port}`], { resolveMs: RESOLVE_MS, dnsServers: [dns.address], maxInFlightPerBackend: undefined });
  });
  after(async () => {
    await router?.stop();
    for (const backend of backends.values()) {
      backend.child.kill('SIGKILL');
      await backend.exited;
    }
    await dns?.close();
  });

  /** `n` calls with request ids `prefix-i`, 6 at a time; every one must succeed. */
  async function calls(prefix: string, n: number): Promise<void> {
    const { client, channel } = generationClient(router.address);
    try {
      for (let i = 0; i < n; i += 6)
        await Promise.all(
          Array.from({ length: Math.min(6, n - i) }, (_, k) => drain(client.generate(generateRequest({ prompt: `call ${i + k}`, maxTokens: 4, requestId: `${prefix}-${i + k}` })))),
        );
    } finally {
      channel.close();
    }
  }

  it('spreads calls over every address the name resolves to', async () => {
    await waitFor(router.router.pool, 'change', () => candidates().length === 3);
    await calls('spread', 36);
    for (const ip of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) assert.ok((await served(ip, 'spread')) > 0, `${ip} served none`);
  });

  it('an address that leaves the answer gets no call after the next lookup, and no call fails meanwhile', async () => {
    const traffic = calls('across', 60); // running across the change
    dns.set(NAME, ['127.0.0.2', '127.0.0.3']);
    const started = performance.now();
    await waitFor(router.router.pool, 'change', () => !router.router.pool.has(`127.0.0.4:${port}`));
    const ms = performance.now() - started;
    assert.ok(ms < RESOLVE_MS * 3, `removed ${ms.toFixed(0)} ms after the answer changed (lookups every ${RESOLVE_MS} ms)`);
    await traffic;
    await calls('after', 24);
    assert.equal(await served('127.0.0.4', 'after'), 0, 'no call went to the removed address after it left');
  });

  it('an address that joins is health-checked, then gets traffic', async () => {
    await startBackend('127.0.0.5');
    dns.set(NAME, ['127.0.0.2', '127.0.0.3', '127.0.0.5']);
    await waitFor(router.router.pool, 'change', () => candidates().includes(`127.0.0.5:${port}`));
    assert.ok(router.router.pool.isHealthy(`127.0.0.5:${port}`));
    await calls('joined', 36);
    assert.ok((await served('127.0.0.5', 'joined')) > 0, 'the new backend served none');
  });
});
