/**
 * npm run bench:cache — the GPU expert slot cache against stock llama.cpp, measured in the same run on the same build:
 * stock full GPU, stock --n-cpu-moe at the same device memory as each cache budget, stock with every expert on the
 * CPU, and our engine with all experts host-resident and slot budgets of 25/50/75% of the experts, under two routing
 * regimes: the model's own (random weights; greedy decoding of such a model repeats itself, so its routing repeats
 * too) and a synthetic trace with
 * realistic temporal locality (native/src/SyntheticRouting.h). Decode tg128 and prefill pp512 t/s, hit rate, MiB
 * copied and copy/stall ms per generated token. Prints a table, writes bench/results/cache-<label>.json and an SVG
 * plot of decode t/s against the budget.
 * With BENCH_PREFETCH=off,on each budget also runs with predictive prefetch, reporting the prediction accuracy
 * (predicted experts a step needed) and the share of speculative copies that were used.
 * BENCH_RESOLVE=device,host runs each budget with slots resolved in the graph (GGML_OP_MOE_SLOTS, the default) and
 * with the host stop per layer, in the same run. The "inline bound" column is the decode rate a step cannot beat
 * with copies inline: 1 / (stock full-GPU time per token + MiB copied per token / measured host->device bandwidth);
 * with BENCH_KERNEL_READ_GBPS (kernels' read rate of pinned host memory) the device-path rows also get that bound at
 * the rate the op's own copy kernel can reach.
 * Options (env): BENCH_MODEL=30b-a3b (preset or path)  BENCH_BUDGETS=0.25,0.5,0.75  BENCH_REGIMES=own,realistic BENCH_HOST_MEMORY=pinned|mmap
 * BENCH_PREFETCH=off|on|off,on  BENCH_RESOLVE=device|host|device,host  BENCH_ROUTING_FILE=<routingLog file: adds the
 * replay regime, the cache measured on recorded traffic>  BENCH_STOCK=1 (0: skip the stock rows)  BENCH_THREADS=<cores>  BENCH_TG=128  BENCH_PP=512
 * BENCH_LABEL=<backend>  BENCH_NGL=99
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { Engine } from '../services/engine/Engine';
import { loadAddon, repoRoot } from '../services/engine/loadAddon';
import type { GenerationFinal } from '../services/engine/types';
import { benchModel } from './benchModel';
import { plotLinesSvg } from './plotSvg';
import { QWEN3_30B_A3B_PUBLISHED, routingLocality, type RoutingLocality } from './routingLocality';
import { printTable, writeResult } from './benchTable';

const run = promisify(execFile);
const backend = process.env.MOEFLASH_BACKEND ?? 'cpu';
const label = process.env.BENCH_LABEL ?? backend;
const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const ngl = Number(process.env.BENCH_NGL ?? 99);
const TG = Number(process.env.BENCH_TG ?? 128);
const PP = Number(process.env.BENCH_PP ?? 512);
const budgets = (process.env.BENCH_BUDGETS ?? '0.25,0.5,0.75').split(',').map(Number);
const routingFile = process.env.BENCH_ROUTING_FILE;
const regimes = (process.env.BENCH_REGIMES ?? (routingFile ? 'own,realistic,replay' : 'own,realistic')).split(',') as Regime[];
const hostMemory = (process.env.BENCH_HOST_MEMORY ?? 'pinned') as 'pinned' | 'mmap';
const prefetchModes = (process.env.BENCH_PREFETCH ?? 'off').split(',').map((m) => m === 'on');
const resolveModes = (process.env.BENCH_RESOLVE ?? 'device').split(',') as ('device' | 'host')[];
const withStock = process.env.BENCH_STOCK !== '0';

/** own: the model's routing; realistic: the synthetic trace; replay: BENCH_ROUTING_FILE (a routingLog recording) */
type Regime = 'own' | 'realistic' | 'replay';

interface Row {
  system: string;
  regime: Regime | 'any';
  budget: number;
  tg: number;
  pp: number;
  hitRate?: number;
  mibPerToken?: number;
  copyMsPerToken?: number;
  stallMsPerToken?: number;
  /** How decode found its slots (ModelInfo.expertCache.path). */
  path?: string;
  /** Decode rate with copies inline at link speed: 1 / (full-GPU s/token + bytes/token / bandwidth). */
  bound?: number;
  /** The same at the rate kernels read pinned host memory (BENCH_KERNEL_READ_GBPS): the device path's own copies. */
  kernelBound?: number;
  /** Predictive prefetch: predicted experts the step needed, and speculative copies that were used. */
  predictionAccuracy?: number;
  usefulPrefetch?: number;
}

async function final(stream: AsyncIterable<{ type: string }>): Promise<GenerationFinal> {
  let last: GenerationFinal | undefined;
  for await (const e of stream) if (e.type === 'final') last = e as GenerationFinal;
  if (!last) throw new Error('no final record');
  return last;
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

async function ours(path: string, budget: number, regime: Regime, prefetch: boolean, resolve: 'device' | 'host'): Promise<{ row: Row; nLayer: number; nExpert: number; nUsed: number }> {
  const probe = await Engine.load({ path, threads, parallel: 1, contextSize: 256, nGpuLayers: 0, warmup: false });
  const { nExpert, nLayer, nVocab, nExpertUsed: nUsed } = probe.info;
  await probe.close();
  const slots = Math.max(1, Math.round(budget * nExpert));
  const engine = await Engine.load({
    path,
    threads,
    parallel: 1,
    contextSize: PP + TG + 16,
    batchSize: PP,
    nGpuLayers: ngl,
    expertCache: {
      slots,
      hostMemory,
      prefetch,
      resolve,
      syntheticRouting: regime === 'realistic' ? { seed: 7 } : undefined,
      replayRouting: regime === 'replay' ? routingFile : undefined,
    },
  });
  try {
    const prompt = Array.from({ length: PP }, (_, i) => 3 + ((i * 7919) % (nVocab - 3)));
    await final(engine.generate({ promptTokens: [1, 2, 3], maxTokens: 16, sampling: { temperature: 0 } })); // warm the slots
    // one unmeasured prefill of the same size, as llama-bench's warm-up run: a backend's first ubatch of this shape
    // pays one-off costs (Vulkan compiles its pipelines for it on first use)
    await final(engine.generate({ promptTokens: prompt, maxTokens: 1, sampling: { temperature: 0 } }));
    const p = await final(engine.generate({ promptTokens: prompt, maxTokens: 1, sampling: { temperature: 0 } }));
    const before = engine.expertCacheStats()!.total;
    const t = await final(engine.generate({ promptTokens: [1], maxTokens: TG, sampling: { temperature: 0 } }));
    const after = engine.expertCacheStats()!.total;
    const c = t.expertCache!;
    const hits = sum(c.hits);
    const misses = sum(c.misses);
    const n = Math.max(1, t.completionTokens);
    return {
      nLayer,
      nExpert,
      nUsed,
      row: {
        system: `moeflash cache ${Math.round(budget * 100)}%${prefetch ? ' + prefetch' : ''}${resolveModes.length > 1 ? ` (${resolve})` : ''}`,
        path: engine.info.expertCache?.path,
        regime,
        budget,
        tg: t.timings.decodeTokensPerSecond,
        pp: p.timings.prefillTokensPerSecond,
        hitRate: hits / Math.max(1, hits + misses),
        mibPerToken: c.bytesCopied / n / 1048576,
        copyMsPerToken: c.copyMs / n,
        stallMsPerToken: c.stallMs / n,
        ...(prefetch
          ? {
              predictionAccuracy: (after.predictedUsed - before.predictedUsed) / Math.max(1, after.predicted - before.predicted),
              // undefined: no speculative copies (the accuracy gate kept them off)
              usefulPrefetch: after.prefetched > before.prefetched ? (after.prefetchedUsed - before.prefetchedUsed) / (after.prefetched - before.prefetched) : undefined,
            }
          : {}),
      },
    };
  } finally {
    await engine.close();
  }
}

async function llamaBench(path: string, nCpuMoe: number): Promise<{ pp: number; tg: number }> {
  const bin = join(repoRoot(), 'build', 'llama', 'patched', `build-${backend}`, 'bin', 'llama-bench');
  const args = ['-m', path, '-p', String(PP), '-n', String(TG), '-t', String(threads), '-r', '2', '-ngl', String(ngl), '-o', 'json'];
  if (nCpuMoe > 0) args.push('-ncmoe', String(nCpuMoe));
  const { stdout } = await run(bin, args, { maxBuffer: 16 << 20 });
  const rows = JSON.parse(stdout) as { n_prompt: number; n_gen: number; avg_ts: number }[];
  return { pp: rows.find((r) => r.n_prompt > 0)!.avg_ts, tg: rows.find((r) => r.n_gen > 0)!.avg_ts };
}

/** The synthetic trace's locality at the model's shape next to published routing of Qwen3-30B-A3B. */
function printTraceLocality(nLayer: number, nExpert: number, nUsed: number): RoutingLocality {
  const trace = loadAddon().syntheticRoutingTrace({ layers: nLayer, experts: nExpert, expertsUsed: nUsed, tokens: 512, seed: 7 });
  const ours = routingLocality(trace, nLayer, nUsed);
  const pct = (n: number) => `${(100 * n).toFixed(1)}%`;
  const row = (name: string, l: RoutingLocality) => [
    name,
    ...[8, 16, 32, 64].map((k) => pct(l.lruHitRate[k])),
    pct(l.reuseNextToken),
    pct(l.reuseWithin8),
    `${pct(l.missFirst64)} / ${pct(l.missAfter64)}`,
  ];
  console.log(`\nsynthetic routing ("realistic"), ${nLayer} layers x ${nExpert} experts, top-${nUsed}, 512 tokens\n`);
  printTable(
    ['trace', 'LRU 8 slots', 'LRU 16', 'LRU 32', 'LRU 64', 'next-token reuse', 'reuse within 8', 'miss 64 slots: first 64 / after'],
    [row('synthetic', ours), row('Qwen3-30B-A3B, published', QWEN3_30B_A3B_PUBLISHED)],
  );
  return ours;
}

/** One row's settings, for the child process that measures it. */
interface RowJob {
  path: string;
  budget: number;
  regime: Regime;
  prefetch: boolean;
  resolve: 'device' | 'host';
}

const ROW_ENV = 'BENCH_CACHE_ROW';
const ROW_MARK = 'bench-cache-row ';

/**
 * Each row runs in a process of its own: rows measured late in one process ran slower than the same engine alone
 * (on an H100, an all-resident row after three other engines 289 t/s against 315 alone), so a row's figure should
 * not depend on the rows before it.
 */
async function oursInChild(job: RowJob): Promise<Awaited<ReturnType<typeof ours>>> {
  const { stdout, stderr } = await run(process.execPath, [__filename], {
    env: { ...process.env, [ROW_ENV]: JSON.stringify(job) },
    maxBuffer: 16 << 20,
  }).catch((e: Error & { stderr?: string }) => {
    throw new Error(`bench:cache row ${JSON.stringify(job)} failed: ${e.stderr?.trim().split('\n').slice(-5).join('\n') ?? e.message}`);
  });
  process.stderr.write(stderr); // the engine's log of the row
  const line = stdout.split('\n').find((l) => l.startsWith(ROW_MARK));
  if (!line) throw new Error(`bench:cache row ${JSON.stringify(job)} printed no result`);
  return JSON.parse(line.slice(ROW_MARK.length)) as Awaited<ReturnType<typeof ours>>;
}

async function main(): Promise<void> {
  const rowJob = process.env[ROW_ENV];
  if (rowJob) {
    const job = JSON.parse(rowJob) as RowJob;
    console.log(ROW_MARK + JSON.stringify(await ours(job.path, job.budget, job.regime, job.prefetch, job.resolve)));
    return;
  }
  const path = await benchModel(process.env.BENCH_MODEL ?? '30b-a3b');
  const rows: Row[] = [];
  let nLayer = 0;
  let traceLocality: RoutingLocality | undefined;
  for (const regime of regimes) {
    for (const budget of budgets) {
      for (const prefetch of prefetchModes) for (const resolve of resolveModes) {
        const r = await oursInChild({ path, budget, regime, prefetch, resolve });
        nLayer = r.nLayer;
        if (regime === 'realistic' && !traceLocality) traceLocality = printTraceLocality(r.nLayer, r.nExpert, r.nUsed);
        rows.push(r.row);
        console.error(`${r.row.system} ${regime}: tg ${r.row.tg.toFixed(1)} pp ${r.row.pp.toFixed(1)} hit ${(100 * r.row.hitRate!).toFixed(1)}%`);
      }
    }
  }
  const full = withStock ? await llamaBench(path, 0) : undefined;
  if (full) {
    rows.push({ system: 'stock full GPU', regime: 'any', budget: 1, ...full });
    for (const budget of budgets) {
      const ncmoe = Math.round(nLayer * (1 - budget));
      rows.push({ system: `stock -ncmoe ${ncmoe}`, regime: 'any', budget, ...(await llamaBench(path, ncmoe)) });
    }
    rows.push({ system: `stock -ncmoe ${nLayer} (experts on CPU)`, regime: 'any', budget: 0, ...(await llamaBench(path, nLayer)) });
  }

  // the inline bound: full-GPU time per token plus the misses' bytes over the measured link
  const linkGBps = loadAddon().measureLinkBandwidth();
  /** Decode rate of a row's step: full-GPU time plus its copied bytes at `gbps`. */
  const boundAt = (r: Row, gbps: number) => (full && r.mibPerToken !== undefined && gbps > 0 ? 1 / (1 / full.tg + (r.mibPerToken * 1048576) / (gbps * 1e9)) : undefined);
  for (const r of rows) r.bound = boundAt(r, linkGBps);
  console.log(`host->device ${linkGBps.toFixed(1)} GB/s (pinned)`);
  // The device path's op copies misses with a kernel (only the device knows them), and kernels read pinned host
  // memory slower than the copy engine does (bench/cuda/zeroCopyBandwidth.cu measures it; gpu-checks.sh passes it on)
  const kernelGBps = Number(process.env.BENCH_KERNEL_READ_GBPS ?? 0);
  for (const r of rows) if (r.path === 'device') r.kernelBound = boundAt(r, kernelGBps);
  if (kernelGBps > 0) console.log(`kernel reads of pinned host memory ${kernelGBps.toFixed(1)} GB/s (BENCH_KERNEL_READ_GBPS)`);
  const withKernelBound = rows.some((r) => r.kernelBound !== undefined);
  const f = (n: number | undefined, d = 1) => (n === undefined ? '' : n.toFixed(d));
  const pct = (n: number | undefined) => (n === undefined ? '' : `${(100 * n).toFixed(1)}%`);
  printTable(
    ['system', 'path', 'routing', 'expert budget', 'decode t/s', 'inline bound t/s', 'of bound', ...(withKernelBound ? ['kernel-copy bound t/s', 'of it'] : []), 'prefill t/s', 'hit rate', 'MiB copied/token', 'copy ms/token', 'stall ms/token', 'prediction accuracy', 'useful prefetch'],
    rows.map((r) => [
      r.system, r.path ?? '', r.regime, `${Math.round(r.budget * 100)}%`, f(r.tg), f(r.bound), r.bound ? f(r.tg / r.bound, 2) : '',
      ...(withKernelBound ? [f(r.kernelBound), r.kernelBound ? f(r.tg / r.kernelBound, 2) : ''] : []),
      f(r.pp), pct(r.hitRate), f(r.mibPerToken, 2), f(r.copyMsPerToken, 2), f(r.stallMsPerToken, 2), pct(r.predictionAccuracy),
      r.predictionAccuracy !== undefined && r.usefulPrefetch === undefined ? 'no copies' : pct(r.usefulPrefetch),
    ]),
  );
  const series = [
    ...regimes.flatMap((regime) =>
      prefetchModes.flatMap((prefetch) =>
        resolveModes.map((resolve) => ({
          name: `moeflash cache (${regime}${prefetch ? ', prefetch' : ''}${resolveModes.length > 1 ? `, ${resolve}` : ''})`,
          points: rows
            .filter((r) => r.regime === regime && r.system.includes('+ prefetch') === prefetch && (resolveModes.length === 1 || r.system.endsWith(`(${resolve})`)))
            .map((r) => [r.budget, r.tg] as [number, number]),
        })),
      ),
    ),
    ...(full
      ? [
          { name: 'stock -ncmoe (same VRAM)', points: rows.filter((r) => r.system.startsWith('stock -ncmoe')).map((r) => [r.budget, r.tg] as [number, number]) },
          { name: 'stock full GPU', points: [[0, full.tg], [1, full.tg]] as [number, number][] },
        ]
      : []),
  ];
  const svg = plotLinesSvg({ title: `decode t/s vs expert budget (${label})`, xLabel: 'experts in device memory', yLabel: 'decode t/s', series });
  writeResult(`cache-${label}`, { label, backend, hostMemory, threads, ngl, tg: TG, pp: PP, model: path, linkGBps, ...(kernelGBps > 0 ? { kernelReadGBps: kernelGBps } : {}), traceLocality, rows, date: new Date().toISOString() });
  writeFileSync(join(repoRoot(), 'bench', 'results', `cache-${label}.svg`), svg);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
