/**
 * Backends discovered, not listed: the router resolves dns:///name:port through a real DNS server on the loopback
 * (UDP, started here) into inference servers on 127.0.0.2-5, and follows the answer as it changes, as it would a
 * Kubernetes headless Service when the StatefulSet scales.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';

import { FakeEngine } from '../../harness/FakeEngine';
import { drain, generateRequest, generationClient } from '../../harness/grpcClients';
import { LoopbackDnsServer } from '../../harness/LoopbackDnsServer';
import { startInference, startRouter, waitFor, type InferenceInstance, type RouterInstance } from '../../harness/startStack';

const NAME = 'moeflash-inference.moeflash.svc.test';
const RESOLVE_MS = 200;

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
  const backends = new Map<string, { inference: InferenceInstance; engine: FakeEngine }>();
  let port: number;

  async function startBackend(ip: string): Promise<void> {
    const engine = new FakeEngine({ tokenDelayMs: 2 });
    backends.set(ip, { inference: await startInference({ fake: engine }, port, ip), engine });
  }
  const served = (ip: string) => backends.get(ip)!.engine.stats().totalRequests;
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
    for (const { inference } of backends.values()) await inference.server.shutdown(0);
    await dns?.close();
  });

  /** `n` calls, 6 at a time; every one must succeed. */
  async function calls(n: number): Promise<void> {
    const { client, channel } = generationClient(router.address);
    try {
      for (let i = 0; i < n; i += 6)
        await Promise.all(Array.from({ length: Math.min(6, n - i) }, (_, k) => drain(client.generate(generateRequest({ prompt: `call ${i + k}`, maxTokens: 4 })))));
    } finally {
      channel.close();
    }
  }

  it('spreads calls over every address the name resolves to', async () => {
    await waitFor(router.router.pool, 'change', () => candidates().length === 3);
    await calls(36);
    for (const ip of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) assert.ok(served(ip) > 0, `${ip} served ${served(ip)} calls`);
  });

  it('an address that leaves the answer gets no call after the next lookup, and no call fails meanwhile', async () => {
    const traffic = calls(60); // running across the change
    dns.set(NAME, ['127.0.0.2', '127.0.0.3']);
    const started = performance.now();
    await waitFor(router.router.pool, 'change', () => !router.router.pool.has(`127.0.0.4:${port}`));
    const ms = performance.now() - started;
    assert.ok(ms < RESOLVE_MS * 3, `removed ${ms.toFixed(0)} ms after the answer changed (lookups every ${RESOLVE_MS} ms)`);
    const before = served('127.0.0.4');
    await traffic;
    await calls(24);
    assert.equal(served('127.0.0.4'), before, 'no call went to the removed address after it left');
  });

  it('an address that joins is health-checked, then gets traffic', async () => {
    await startBackend('127.0.0.5');
    dns.set(NAME, ['127.0.0.2', '127.0.0.3', '127.0.0.5']);
    await waitFor(router.router.pool, 'change', () => candidates().includes(`127.0.0.5:${port}`));
    assert.ok(router.router.pool.isHealthy(`127.0.0.5:${port}`));
    await calls(36);
    assert.ok(served('127.0.0.5') > 0, `the new backend served ${served('127.0.0.5')} calls`);
  });
});
