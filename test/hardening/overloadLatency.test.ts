/**
 * The short (CI) load test of issues 7 and 20: router and a synthetic-engine inference as processes on loopback, the
 * router at its defaults (admission limit at the engine's parallel sequences, the deadline-aware queue). The long
 * version on the real engine is `npm run bench:load`. MOEFLASH_LOAD_REPORT=1 prints the figures.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { rawGenerationClient, generateRequest } from '../../harness/grpcClients';
import { spawnService, type SpawnedService } from '../../harness/spawnService';
import { runOverload } from '../../harness/runOverload';

const dist = path.resolve(__dirname, '..', '..');
const ROUTER_MAIN = path.join(dist, 'services', 'router', 'main.js');
const FAKE_INFERENCE_MAIN = path.join(dist, 'test', 'helpers', 'fakeInferenceMain.js');
/** fakeInferenceMain's FakeEngine decodes 4 sequences at once. */
const ENGINE_PARALLEL = 4;
const MiB = 1 << 20;

describe('overload at 2x capacity (processes, synthetic engine)', function () {
  const spawned: SpawnedService[] = [];
  afterEach(async () => {
    for (const s of spawned.splice(0).reverse()) {
      s.child.kill('SIGKILL');
      await s.exited;
    }
  });

  it('sustained overload: admitted calls wait at most a little, the rest are refused fast, goodput holds, memory stays bounded', async () => {
    const quiet = { MOEFLASH_METRICS_ADDR: 'off' };
    const inference = await spawnService(FAKE_INFERENCE_MAIN, { ...quiet, MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0', FAKE_TOKEN_DELAY_MS: '20' });
    spawned.push(inference);
    const router = await spawnService(ROUTER_MAIN, {
      ...quiet,
      MOEFLASH_ROUTER_ADDR: '127.0.0.1:0',
      MOEFLASH_BACKENDS: `127.0.0.1:${inference.port}`,
    });
    spawned.push(router);
    await router.waitForLog((l) => l.msg === 'backend health' && l.serving === true);
    const { client, channel } = rawGenerationClient(`127.0.0.1:${router.port}`);
    try {
      const report = await runOverload({
        client,
        request: (i) => generateRequest({ prompt: `load ${i % 16}`, maxTokens: 5 }),
        warmupCalls: 5,
        unloadedCalls: 30,
        concurrency: ENGINE_PARALLEL,
        capacityMs: 1_500,
        factor: 2,
        overloadMs: 2_000,
        deadlineMs: 10_000,
        processes: { router: router.child.pid!, inference: inference.child.pid! },
      });
      if (process.env.MOEFLASH_LOAD_REPORT) console.log(JSON.stringify(report, null, 2));
      const { unloaded, atCapacity, overload } = report;
      assert.equal(unloaded.count, 30);
      assert.deepEqual(atCapacity.failures, {});
      assert.deepEqual(overload.failures, {}, 'only OK and RESOURCE_EXHAUSTED under overload');
      // Half the offered calls cannot be served: they are refused, and the admitted ones still fill the capacity.
      assert.ok(overload.rejected.count >= overload.offered * 0.3, `${overload.rejected.count} of ${overload.offered} refused`);
      assert.ok(overload.admittedPerSecond >= atCapacity.callsPerSecond * 0.8, `goodput ${overload.admittedPerSecond} vs capacity ${atCapacity.callsPerSecond}`);
      // Once the overload is told from a burst, a call joins the queue only for a wait of half a call: the admitted
      // p50 stays within 1.5x (plus scheduling noise). The p99 also holds the calls admitted during the first burst
      // time (250 ms), which waited up to that long: 2x the at-capacity p99 plus it. The 20 s run of
      // npm run bench:load measures the p99 where that start is a small part.
      const burstMs = 250;
      assert.ok(overload.admitted.p50 <= atCapacity.latency.p50 * 1.5 * 1.15, `admitted p50 ${overload.admitted.p50.toFixed(1)} ms vs ${atCapacity.latency.p50.toFixed(1)} ms at capacity`);
      assert.ok(
        overload.admitted.p99 <= atCapacity.latency.p99 * 2 + burstMs,
        `admitted p99 ${overload.admitted.p99.toFixed(1)} ms vs ${atCapacity.latency.p99.toFixed(1)} ms at capacity`,
      );
      // Refused at once, but for the calls dropped from the queue when the overload was told from a burst, which
      // waited up to the burst time.
      assert.ok(overload.rejected.p50 < 10, `refusal p50 ${overload.rejected.p50.toFixed(1)} ms`);
      assert.ok(overload.rejected.max < burstMs + unloaded.p99, `slowest refusal ${overload.rejected.max.toFixed(1)} ms`);
      for (const [name, m] of Object.entries(report.processes))
        assert.ok(m.peak - m.before < 32 * MiB, `${name} RSS grew ${((m.peak - m.before) / MiB).toFixed(1)} MiB under overload`);
    } finally {
      channel.close();
    }
  });
});
