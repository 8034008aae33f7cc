/**
 * npm run bench:gateway — what the gRPC path (client -> router -> inference, real sockets on loopback) adds to the
 * in-process engine, all in one process on this machine:
 *   1. per-token cost: decode ms/token of 128-token greedy generations through the router vs in-process;
 *   2. added time to first token: p50/p99 over short requests, through the router minus in-process;
 *   3. concurrent streams held by router + inference with a fast synthetic engine behind them, and memory per stream.
 * Env: BENCH_MODEL=<path|tiny>  BENCH_STREAMS=1000
 */
import { performance } from 'node:perf_hooks';

import { Engine } from '../services/engine/Engine';
import { FakeEngine } from '../harness/FakeEngine';
import { generationClient } from '../harness/grpcClients';
import { startStack } from '../harness/startStack';
import { benchModel } from './benchModel';
import { median, printTable, writeResult } from './benchTable';

function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function main(): Promise<void> {
  const engine = await Engine.load({ path: await benchModel(process.env.BENCH_MODEL ?? 'tiny'), threads: 1, parallel: 4, contextSize: 1024 });
  const stack = await startStack({ m: engine });
  const { client, channel } = generationClient(stack.router.address);
  const request = { model: 'm', prompt: 'The quick brown fox', maxTokens: 128, sampling: { temperature: 0 } };

  // 1. per-token cost (ms between first and last token, per token), alternating the two paths
  const direct: number[] = [];
  const routed: number[] = [];
  for (let r = 0; r < 8; r++) {
    let first = 0;
    let n = 0;
    for await (const e of engine.generate({ prompt: request.prompt, maxTokens: 128, sampling: { temperature: 0 } })) {
      if (e.type !== 'chunk') continue;
      if (!first) first = performance.now();
      n += e.tokenIds.length;
    }
    direct.push((performance.now() - first) / (n - 1));
    first = 0;
    n = 0;
    for await (const e of client.generate(request)) {
      if (e.event?.$case !== 'chunk') continue;
      if (!first) first = performance.now();
      n += e.event.value.tokenIds.length;
    }
    routed.push((performance.now() - first) / (n - 1));
  }

  // 2. time to first token, 60 short requests each way
  const ttftDirect: number[] = [];
  const ttftRouted: number[] = [];
  for (let r = 0; r < 60; r++) {
    let t0 = performance.now();
    for await (const e of engine.generate({ prompt: request.prompt, maxTokens: 1, sampling: { temperature: 0 } })) {
      if (e.type === 'chunk') ttftDirect.push(performance.now() - t0);
    }
    t0 = performance.now();
    let seen = false;
    for await (const e of client.generate({ ...request, maxTokens: 1 })) {
      if (e.event?.$case === 'chunk' && !seen) {
        seen = true;
        ttftRouted.push(performance.now() - t0);
      }
    }
  }
  channel.close();
  await stack.stop();
  await engine.close();

  // 3. concurrent streams: each holds a stream open for 20 tokens at 250 ms/token
  const streams = Number(process.env.BENCH_STREAMS ?? 1000);
  const fake = new FakeEngine({ tokenDelayMs: 250, parallel: streams });
  const fakeStack = await startStack({ fake }, { maxInFlightPerBackend: streams, maxQueued: streams });
  const fakeClient = generationClient(fakeStack.router.address);
  global.gc?.();
  const rssBefore = process.memoryUsage().rss;
  let peakRss = rssBefore;
  let open = 0;
  let peakOpen = 0;
  const t0 = performance.now();
  const results = await Promise.allSettled(
    Array.from({ length: streams }, async (_, i) => {
      let tokens = 0;
      let counted = false;
      for await (const e of fakeClient.client.generate({ model: 'fake', prompt: `stream ${i}`, maxTokens: 20, sampling: { temperature: 0 } })) {
        if (e.event?.$case === 'chunk') {
          tokens += e.event.value.tokenIds.length;
          if (!counted) {
            counted = true;
            peakOpen = Math.max(peakOpen, ++open);
            peakRss = Math.max(peakRss, process.memoryUsage().rss);
          }
        }
      }
      open--;
      if (tokens !== 20) throw new Error(`stream ${i}: ${tokens} tokens`);
    }),
  );
  const heldMs = performance.now() - t0;
  fakeClient.channel.close();
  await fakeStack.stop();
  const completed = results.filter((r) => r.status === 'fulfilled').length;

  const perToken = { direct: median(direct), routed: median(routed) };
  const added = { p50: percentile(ttftRouted, 50) - percentile(ttftDirect, 50), p99: percentile(ttftRouted, 99) - percentile(ttftDirect, 99) };
  console.log('\nbench:gateway — client, router, inference and engine in one process, loopback gRPC\n');
  printTable(
    ['measure', 'in-process', 'through router', 'overhead'],
    [
      ['decode ms/token (median of 8 x 128 tokens)', perToken.direct, perToken.routed, `${(((perToken.routed - perToken.direct) / perToken.direct) * 100).toFixed(1)}%`],
      ['time to first token p50 ms (60 requests)', percentile(ttftDirect, 50), percentile(ttftRouted, 50), `+${added.p50.toFixed(2)} ms`],
      ['time to first token p99 ms', percentile(ttftDirect, 99), percentile(ttftRouted, 99), `+${added.p99.toFixed(2)} ms`],
    ],
  );
  console.log('');
  printTable(
    ['concurrent streams (synthetic engine, 20 tokens at 250 ms)', 'value'],
    [
      ['streams started', streams],
      ['completed with all tokens', completed],
      ['peak streams open at once', peakOpen],
      ['wall time s', heldMs / 1000],
      ['RSS per open stream KiB', (peakRss - rssBefore) / 1024 / Math.max(1, peakOpen)],
    ],
  );
  const out = writeResult(`gateway-${process.env.BENCH_MODEL ?? 'tiny'}`, { model: process.env.BENCH_MODEL ?? 'tiny', date: new Date().toISOString(), perToken, ttft: { direct: ttftDirect, routed: ttftRouted, added }, streams: { streams, completed, peakOpen, heldMs, rssBefore, peakRss } });
  console.log(`\nwritten ${out}`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
