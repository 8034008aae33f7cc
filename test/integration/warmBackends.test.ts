/**
 * Warmth-aware routing: the inference service reports how much of each model's expert bytes its page cache holds
 * (GetLoad expert_residency, measured with cachestat over the GGUF's expert ranges), and the router passes a cold
 * backend over while a warm one has room, as it would a replica just scaled up from zero.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { loadAddon } from '../../services/engine/loadAddon';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, generateRequest, generationClient } from '../../harness/grpcClients';
import { startInference, startRouter, waitFor, type InferenceInstance, type RouterInstance } from '../../harness/startStack';
import { testModel } from '../../harness/testModels';

describe('router: warm backends first', function () {
  const dir = mkdtempSync(join(tmpdir(), 'moeflash-warm-'));
  const files = { warm: join(dir, 'warm.gguf'), cold: join(dir, 'cold.gguf') };
  const engines = { warm: new FakeEngine({ path: files.warm, tokenDelayMs: 5, parallel: 2 }), cold: new FakeEngine({ path: files.cold, tokenDelayMs: 5, parallel: 2 }) };
  const servers: InferenceInstance[] = [];
  let router: RouterInstance;

  before(async () => {
    const model = await testModel('tiny');
    for (const file of Object.values(files)) copyFileSync(model, file);
    for (const engine of Object.values(engines)) servers.push(await startInference({ fake: engine }));
    router = await startRouter(servers.map((s) => s.address), { maxInFlightPerBackend: undefined, loadPollMs: 50 });
  });
  after(async () => {
    await router?.stop();
    for (const s of servers) await s.server.shutdown(0);
    rmSync(dir, { recursive: true, force: true });
  });

  it('GetLoad reports residency; a cold backend gets calls only when the warm one has no room', async () => {
    const [warm, cold] = servers.map((s) => s.address);
    const residency = (address: string) => router.router.pool.load(address, 'fake')?.expertResidency;
    // The cold copy leaves the page cache; the warm one is read into it (again just before each check: the
    // kernel may page it out on its own).
    await loadAddon().evict([files.cold], null);
    readFileSync(files.warm);
    await waitFor(router.router.pool, 'change', () => {
      readFileSync(files.warm);
      return (residency(warm) ?? 0) >= 0.9 && (residency(cold) ?? 1) < 0.5;
    });

    const { client, channel } = generationClient(router.address);
    try {
      // One call at a time: the warm backend always has room, so the cold one gets none.
      for (let i = 0; i < 8; i++) {
        readFileSync(files.warm);
        await drain(client.generate(generateRequest({ prompt: `one ${i}`, maxTokens: 2 })));
      }
      assert.equal(engines.cold.stats().totalRequests, 0);
      assert.equal(engines.warm.stats().totalRequests, 8);
      // Four at once: the warm backend's two slots fill, and the cold one takes the rest rather than a queue.
      await Promise.all(Array.from({ length: 4 }, (_, i) => drain(client.generate(generateRequest({ prompt: `many ${i}`, maxTokens: 20 })))));
      assert.equal(engines.cold.stats().totalRequests, 2);
    } finally {
      channel.close();
    }
  });
});
