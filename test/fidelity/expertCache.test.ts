/**
 * The expert slot cache (patches/llama.cpp/0003-0005) must not change a single token: greedy output with the cache
 * on equals stock llama-completion's (same pinned source, no patches) for every slot count from the experts one
 * token uses (K) to all of them (N), with and without predictive prefetch, single stream and 4 concurrent streams,
 * short prompts (whose prefill runs on the slots) and a long one (whose prefill runs on the staging bank). On the
 * CPU backend the "device" banks are host buffers, so this runs in CI on every change; the GPU machine runs the same
 * comparison for CUDA and Vulkan (bench/gpuFidelity.ts).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { Engine } from '../../services/engine/Engine';
import { repoRoot } from '../../services/engine/loadAddon';
import type { ExpertCacheStats } from '../../services/engine/types';
import { collect } from '../../harness/collect';
import { stockGreedyCompletion } from '../../harness/stockLlama';
import { testModel, type TestPreset } from '../../harness/testModels';

const LONG_PROMPT = Array.from({ length: 12 }, (_, i) => `Paragraph ${i}: the expert cache keeps hot experts resident.`).join(' ');
const PROMPTS = ['The quick brown fox', 'def fibonacci(n):', 'Once upon a time, in a land far away,', LONG_PROMPT];
// Concurrent streams use short prompts: a long prompt chunk batched together with other streams' decode tokens
// changes which CPU matmul kernels run (llama.cpp is not batch-invariant), with or without the cache (measured:
// the long prompt's concurrent output differs from its solo output with the cache off too).
const CONCURRENT = ['The quick brown fox', 'def fibonacci(n):', 'Once upon a time, in a land far away,', 'Hello world'];
const N_PREDICT = 32;
const CONTEXT = 1024;
const THREADS = 2;

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

for (const preset of ['tiny', 'small'] as TestPreset[]) {
  describe(`expert cache fidelity: ${preset} model`, function () {
    let model: string;
    const stock = new Map<string, string>();
    let nExpert = 0;
    let nUsed = 0;
    let nLayer = 0;
    let bytesPerExpert = 0;

    before(async function () {
      model = await testModel(preset);
      for (const prompt of new Set([...PROMPTS, ...CONCURRENT])) {
        const bytes = await stockGreedyCompletion({ model, prompt, nPredict: N_PREDICT, contextSize: CONTEXT, threads: THREADS });
        stock.set(prompt, bytes.toString('hex'));
      }
      const probe = await Engine.load({ path: model, contextSize: 256, threads: THREADS, parallel: 1, warmup: false });
      nExpert = probe.info.nExpert;
      nUsed = probe.info.nExpertUsed;
      nLayer = probe.info.nLayer;
      bytesPerExpert = probe.info.bytesPerExpert;
      await probe.close();
    });

    for (const fraction of ['K', 'N/4', 'N/2', 'N'] as const) {
      describe(`${fraction} slots per layer`, function () {
        let engine: Engine;
        let slots: number;

        before(async function () {
          const bySize = { K: nUsed, 'N/4': nExpert / 4, 'N/2': nExpert / 2, N: nExpert };
          slots = Math.max(nUsed, bySize[fraction]);
          engine = await Engine.load({ path: model, contextSize: CONTEXT, threads: THREADS, parallel: 4, expertCache: { slots } });
        });
        after(async () => engine?.close());

        it('reports its size: slots, bytes per slot, the staging bank (none when every expert has a slot)', function () {
          assert.equal(engine.info.expertCache?.slots, slots);
          assert.equal(engine.info.expertCache?.slotBytes, engine.info.bytesPerExpert * engine.info.nLayer);
          assert.equal(engine.info.expertCache?.allResident, slots === nExpert);
          assert.equal(engine.info.expertCache?.stagingBytes, slots === nExpert ? 0 : nExpert * engine.info.bytesPerExpert);
        });

        it('single stream: greedy bytes equal llama-completion for every prompt', async function () {
          for (const prompt of PROMPTS) {
            const ours = await collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }));
            assert.equal(engine.tokenBytes(ours.tokens).toString('hex'), stock.get(prompt), `prompt "${prompt.slice(0, 30)}"`);
            const cache = ours.final.expertCache;
            assert.ok(cache, 'the final record carries the request expert cache activity');
            assert.equal(cache.hits.length, engine.info.nLayer);
            // with a slot for every expert there is nothing to look up: all were loaded once
            assert.equal(sum(cache.hits) + sum(cache.misses) > 0, slots < nExpert, 'the request ran on the cache');
          }
        });

        it('4 concurrent streams: each equals its single-stream stock output', async function () {
          const outs = await Promise.all(
            CONCURRENT.map((prompt) => collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }))),
          );
          outs.forEach((o, i) => assert.equal(engine.tokenBytes(o.tokens).toString('hex'), stock.get(CONCURRENT[i]), `stream ${i}`));
        });

        it('counts what happened: lookups on the cache, the long prefill on the staging bank, evictions when short of slots', function () {
          const stats = engine.expertCacheStats() as ExpertCacheStats;
          assert.ok(stats, 'stats available while the cache is on');
          assert.equal(stats.layers.length, engine.info.nLayer);
          const t = stats.total;
          if (slots === nExpert) {
            // loaded once at start, no stop and no copy afterwards
            assert.deepEqual([t.steps, t.bypassed, t.bytesCopied, t.bytesStaged], [0, 0, 0, 0]);
            return;
          }
          assert.ok(t.steps > 0 && t.hits > 0 && t.misses > 0);
          assert.ok(t.bypassed > 0, 'a ubatch with more possible experts than slots ran on the staging bank');
          // the ubatch decides, not the layer's rows: a prefill runs its last layer (output rows only) staged too,
          // so that its graph is the stock one
          assert.equal(new Set(stats.layers.map((l) => l.bypassed)).size, 1, 'every layer staged the same ubatches');
          assert.ok(t.bytesStaged > 0 && t.bytesStaged % engine.info.bytesPerExpert === 0, 'whole experts were staged');
          // the long prompt came after decode steps had filled slots: those experts were staged from their slots
          assert.ok(t.bytesStagedOnDevice > 0 && t.bytesStagedOnDevice % engine.info.bytesPerExpert === 0, 'resident experts were staged from their slots');
          assert.equal(t.bytesCopied, t.misses * engine.info.bytesPerExpert);
          assert.ok(t.evictions > 0);
        });
      });
    }

    for (const fraction of ['N/4', 'N/2'] as const) {
      describe(`predictive prefetch, ${fraction} slots per layer`, function () {
        let engine: Engine;

        before(async function () {
          const slots = Math.max(nUsed, fraction === 'N/4' ? nExpert / 4 : nExpert / 2);
          engine = await Engine.load({ path: model, contextSize: CONTEXT, threads: THREADS, parallel: 4, expertCache: { slots, prefetch: true } });
        });
        after(async () => engine?.close());

        it('single stream and 4 concurrent streams: greedy bytes equal llama-completion', async function () {
          assert.equal(engine.info.expertCache?.prefetch, true);
          for (const prompt of PROMPTS) {
            const ours = await collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }));
            assert.equal(engine.tokenBytes(ours.tokens).toString('hex'), stock.get(prompt), `prompt "${prompt.slice(0, 30)}"`);
          }
          const outs = await Promise.all(
            CONCURRENT.map((prompt) => collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }))),
          );
          outs.forEach((o, i) => assert.equal(engine.tokenBytes(o.tokens).toString('hex'), stock.get(CONCURRENT[i]), `stream ${i}`));
        });

        it('counts predictions and speculative copies, and predicts better than chance', function () {
          const t = (engine.expertCacheStats() as ExpertCacheStats).total;
          assert.ok(t.predicted > 0 && t.predictedUsed > 0 && t.predictedUsed <= t.predicted);
          assert.ok(t.prefetched > 0 && t.prefetchedUsed <= t.prefetched);
          assert.ok(t.prefetched <= t.predicted, 'only predicted experts are copied speculatively');
          assert.equal(t.bytesPrefetched, t.prefetched * engine.info.bytesPerExpert);
          assert.equal(t.bytesCopied, (t.misses + t.prefetched) * engine.info.bytesPerExpert, 'demand + speculative copies');
          // a random guess of the experts a step uses is right nUsed/nExpert of the time
          const accuracy = t.predictedUsed / t.predicted;
          assert.ok(accuracy > (2 * nUsed) / nExpert, `accuracy ${accuracy.toFixed(3)} vs chance ${(nUsed / nExpert).toFixed(3)}`);
        });
      });
    }

    it('prefetch stops copying where predictions are mostly wrong, instead of evicting experts that are used', async function () {
      // a synthetic routing trace replaces the model's routing: the predictor (the model's own next router) is no
      // better than chance, and speculative copies would only evict experts the trace reuses
      const run = async (prefetch: boolean) => {
        const engine = await Engine.load({ path: model, contextSize: CONTEXT, threads: THREADS, parallel: 1,
          expertCache: { slots: Math.max(nUsed, nExpert / 4), prefetch, syntheticRouting: { seed: 3 } } });
        try {
          await collect(engine.generate({ prompt: PROMPTS[0], maxTokens: 64, sampling: { temperature: 0 } }));
          return (engine.expertCacheStats() as ExpertCacheStats).total;
        } finally {
          await engine.close();
        }
      };
      const [off, on] = [await run(false), await run(true)];
      assert.ok(on.predictedUsed / on.predicted < 0.5, 'predictions no better than the gate allows');
      const hitRate = (t: ExpertCacheStats['total']) => t.hits / (t.hits + t.misses);
      assert.ok(hitRate(on) >= hitRate(off) - 0.02, `hit rate ${hitRate(on).toFixed(3)} with prefetch vs ${hitRate(off).toFixed(3)} without`);
      // copies happen only in the first step or two of a layer (one token each), before the moving accuracy falls
      // below the gate
      assert.ok(on.prefetched <= 2 * nLayer * nUsed, `${on.prefetched} speculative copies over 64 tokens`);
    });

    it('the device path (slots resolved in the graph) makes the host path\'s decisions, layer by layer', async function () {
      // GGML_OP_MOE_SLOTS reimplements the host's slot assignment (hits first, misses in expert order, home slot,
      // first free slot, the policy's victim): the same traffic must give the same per-layer hits, misses and
      // evictions, for both policies, with the synthetic trace (many evictions) and the model's own routing
      for (const policy of ['lru', 'lru2'] as const) {
        for (const syntheticRouting of [undefined, { seed: 5 }]) {
          const load = (resolve: 'device' | 'host') =>
            Engine.load({ path: model, contextSize: CONTEXT, threads: THREADS, parallel: 1,
              expertCache: { slots: Math.max(nUsed, nExpert / 4), policy, resolve, syntheticRouting } });
          const [device, host] = [await load('device'), await load('host')];
          try {
            assert.equal(device.info.expertCache?.path, 'device');
            assert.equal(host.info.expertCache?.path, 'host-stop');
            for (const prompt of PROMPTS.slice(0, 2)) {
              // one engine at a time: two engines' thread pools spinning on CI's 2 cores slowed this test tenfold
              const run = (e: Engine) => collect(e.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }));
              const da = await run(device);
              const db = await run(host);
              if (!syntheticRouting) assert.equal(device.tokenBytes(da.tokens).toString('hex'), stock.get(prompt), `${policy}: "${prompt}"`);
              assert.deepEqual(da.tokens, db.tokens);
            }
            const [sd, sh] = [device.expertCacheStats()!, host.expertCacheStats()!];
            const decisions = (s: ExpertCacheStats) => s.layers.map((l) => [l.layer, l.steps, l.hits, l.misses, l.evictions, l.bytesCopied]);
            assert.deepEqual(decisions(sd), decisions(sh), `${policy}${syntheticRouting ? ', synthetic trace' : ''}`);
            assert.ok(sd.total.misses > 0 && sd.total.hits > 0);
            if (syntheticRouting) assert.ok(sd.total.evictions > 0, 'the trace evicted');
          } finally {
            await Promise.all([device.close(), host.close()]);
          }
        }
      }
    });

    it('LRU and SLRU policies and several cached contexts in the same process are exact too (no shared state)', async function () {
      const contexts = await Promise.all([
        Engine.load({ path: model, contextSize: CONTEXT, threads: 1, parallel: 1, expertCache: { slots: nUsed, policy: 'lru' } }),
        Engine.load({ path: model, contextSize: CONTEXT, threads: 1, parallel: 1, expertCache: { slots: nExpert / 2 } }),
        Engine.load({ path: model, contextSize: CONTEXT, threads: 1, parallel: 1, expertCache: { slots: nExpert / 4, policy: 'slru' } }),
      ]);
      try {
        const prompt = PROMPTS[2];
        const outs = await Promise.all(
          contexts.map((e) => collect(e.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }))),
        );
        contexts.forEach((e, i) => assert.equal(e.tokenBytes(outs[i].tokens).toString('hex'), stock.get(prompt), `context ${i}`));
        const [lru, lru2, slru] = contexts.map((e) => e.expertCacheStats()!.total);
        assert.notDeepEqual(lru, lru2, 'each context counts its own');
        assert.ok(slru.evictions > 0, 'SLRU evicted: its victim choice ran');
      } finally {
        await Promise.all(contexts.map((e) => e.close()));
      }
    });

    it('moeflash generate --expert-cache-slots prints the same text and the cache line', async function () {
      const run = promisify(execFile);
      const cli = join(repoRoot(), 'bin', 'moeflash.js');
      const args = [cli, 'generate', '--model', model, '--prompt', PROMPTS[0], '--max-tokens', String(N_PREDICT), '--temperature', '0', '--threads', '2'];
      const plain = await run(process.execPath, args);
      const cached = await run(process.execPath, [...args, '--expert-cache-slots', String(nExpert / 2)]);
      assert.equal(cached.stdout, plain.stdout);
      assert.match(cached.stderr, /expert_cache hit_rate=\d+\.\d% hits=\d+ misses=\d+ mib_copied_per_token=[\d.]+ copy_ms=[\d.]+ stall_ms=[\d.]+/);
      await assert.rejects(run(process.execPath, [...args, '--expert-cache-mem', '12 parsecs']), /--expert-cache-mem/);
      const prefetching = await run(process.execPath, [...args, '--expert-cache-slots', String(nExpert / 4), '--expert-cache-prefetch']);
      assert.equal(prefetching.stdout, plain.stdout);
      assert.match(prefetching.stderr, /expert_prefetch accuracy=\d+\.\d% predicted=[1-9]\d* prefetched=\d+ useful=\d+\.\d% mib_prefetched=[\d.]+ mib_wasted=[\d.]+/);
      await assert.rejects(run(process.execPath, [...args, '--expert-cache-prefetch']), /--expert-cache-prefetch: needs --expert-cache-slots/);
    });

    it('a memory budget pays for the staging bank (one layer of experts) first, then whole slots', async function () {
      const staging = nExpert * bytesPerExpert;
      const slotBytes = bytesPerExpert * nLayer;
      const engine = await Engine.load({ path: model, contextSize: 256, threads: 1, parallel: 1, warmup: false,
        expertCache: { memBytes: staging + 5 * slotBytes + slotBytes / 2 } });
      try {
        assert.deepEqual([engine.info.expertCache?.stagingBytes, engine.info.expertCache?.slots], [staging, 5]);
      } finally {
        await engine.close();
      }
    });

    it('rejects fewer slots than the experts a token uses, naming the option', async function () {
      await assert.rejects(
        Engine.load({ path: model, contextSize: 256, threads: 1, parallel: 1, expertCache: { memBytes: 1 } }),
        /expertCache.*fewer than the \d+ experts a token uses/,
      );
      await assert.rejects(
        Engine.load({ path: model, contextSize: 256, threads: 1, parallel: 1, expertCache: { slots: 0 } }),
        /expertCache\.slots/,
      );
    });
  });
}
