/**
 * npm run bench:prefetch:limited (or `npm run bench:prefetch -- --limited`) — decode with a model larger than the
 * page cache the process may use.
 *
 * Needs root and a memory cgroup controller (v1 at /sys/fs/cgroup/memory, or v2: bench/memoryCgroup.ts). The parent
 * (not limited) makes or reuses a generated qwen3moe model under build/bench-models (default ~3.3 GB q8_0: 24 layers x
 * 64 experts, top-4, embd 1024, expert ff 640), creates the cgroup moeflash-bench-<pid> limited to BENCH_LIMIT_BYTES
 * (default 1.5 GiB), and runs every scenario as a child process that moves
 * itself into the cgroup first (engine, expert-store and their io-wq workers then share the limit: page cache read
 * by them is charged to it). Before each child the page cache is dropped (sync; echo 3 > drop_caches).
 *
 * Scenarios (each a fresh process, dropped cache):
 *   raw        io_uring 1 MiB QD 32 and pread 1 MiB QD 1 over the whole file (GB/s; the cgroup reclaims as it goes)
 *   stock      Engine.load (mmap, no hint channel), decode N tokens (cold), then N more (steady state)
 *   hints      ExpertStore in-process on hintChannelName(model) + Engine.load({hintChannel}); the store's heat map
 *              (recorded here, saved under build/bench-state-limited on close) is what `heat` warms from
 *   heat       the same, but first ExpertStore.warm() from that heat map (non-expert tensors, then hottest experts)
 *              with a budget of the limit minus BENCH_WARM_HEADROOM_BYTES (default 384 MiB)
 *   heatStock  heat-map Warm, then the stock engine without hints
 *   heatAfterLoad  Engine.load with hints first, then the heat-map Warm (the loader reads the whole file and would
 *              push out what was warmed before it), then decode
 *   demand     Engine.load({expertRead: 'demand'}): experts mapped without read-around or populate; the engine reads
 *              each layer's routed experts once routed and the next layer's predicted ones (native/src/ExpertPager.h),
 *              on the CPU into memory of its own sized from the cgroup (expertRam, native/src/ExpertRam.h)
 *   demandPageCache  the same through the page cache (expertRam 'off')
 *   demandHints  the same with the in-process ExpertStore on the hint channel: the engine reads the routed experts,
 *              the store reads the predicted ones
 *   demandHeat  demandHints, with the store's heat-map Warm running from the start, beside the load and the decode
 *              (a node scaled up from zero: the store warms while the engine serves)
 * plus `cached`: stock, no limit, page cache warm (the all-in-memory reference).
 * Disk reads: /proc/self/io read_bytes deltas (the process, its io-wq workers included) and /sys/block/<dev>/stat
 * sector deltas (the whole disk; another user's reads would show here).
 * Cold start: ms from the scenario's start (Warm or load) until the rate over 8 tokens reaches 90% of the stock
 * steady-state speed under the same limit.
 *
 * GPU machine: BENCH_GPU_LAYERS=99 (stock: -ncmoe keeping BENCH_CACHE_BUDGET=0.25 of the layers' experts on the
 *   GPU; on demand: the GPU slot cache with that share of each layer's experts, hostMemory mmap), and
 *   BENCH_PREFETCH_MODEL=<gguf> (e.g. the 30b-a3b preset bench:cache generates) with BENCH_BLOCK_DEV=<nvme device>.
 *   There the engine publishes hints only with MOEFLASH_RECORD_ROUTING=1 (routed experts, after each step) and
 *   BENCH_CACHE_PREFETCH=1 (the cache's predictions, during the step); both are off by default on a GPU build.
 * Options (env): BENCH_PREFETCH_MODEL=<gguf>  BENCH_LIMIT_BYTES  BENCH_TOKENS=64  BENCH_THREADS=2  BENCH_REPS=1  BENCH_TEMPERATURE=0
 *   BENCH_PLOT_SECONDS=20 (the cold-start plot, <name>.svg; `--plot <result.json>` redraws a saved result)
 *   BENCH_RESULT=prefetch-limited (bench/results/<name>.json)  BENCH_BLOCK_DEV=vda  BENCH_IO_MODE=auto (the expert-store's: auto, uring, fadvise)  BENCH_SCENARIOS=raw,stock,hints,heat,heatStock,cached
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';

import pino from 'pino';

import { Engine } from '../services/engine/Engine';
import { repoRoot } from '../services/engine/loadAddon';
import type { ExpertPagingStats, GenerationEvent, LoadOptions } from '../services/engine/types';
import { loadExpertIndex } from '../services/expert-store/ExpertIndex';
import { ExpertStore } from '../services/expert-store/ExpertStore';
import { hintChannelName } from '../services/common/hintChannelName';
import { PageCache } from '../services/expert-store/PageCache';
import { shapedBenchModel } from './benchModel';
import { median, printTable, writeResult } from './benchTable';
import { preadAll } from './preadAll';
import { createMemoryCgroup, joinMemoryCgroup, memoryCgroupStat } from './memoryCgroup';
import { plotLinesSvg } from './plotSvg';

const GB = 1e9;
const GiB = 1024 ** 3;
const threads = Number(process.env.BENCH_THREADS ?? 2);
// greedy repeats tokens on a random-weight model, and so experts: sampling (same seed in every scenario, same tokens)
// routes more widely, which makes decode wait on the disk
const temperature = Number(process.env.BENCH_TEMPERATURE ?? 0);
const tokens = Number(process.env.BENCH_TOKENS ?? 64);
const reps = Number(process.env.BENCH_REPS ?? 1);
const limitBytes = Number(process.env.BENCH_LIMIT_BYTES ?? 1.5 * GiB);
const warmHeadroom = Number(process.env.BENCH_WARM_HEADROOM_BYTES ?? 384 * 1024 ** 2);
const blockDev = process.env.BENCH_BLOCK_DEV ?? 'vda';
// the GPU machine's placement (below): layers on the GPU, the slot cache's share of each layer's experts, and
// whether the cache predicts the next layer's experts (and copies them ahead), which gives the expert-store
// predictions to read from disk while the step runs; without it only the routed experts are known
const gpuLayers = Number(process.env.BENCH_GPU_LAYERS ?? 0);
const cacheBudget = Number(process.env.BENCH_CACHE_BUDGET ?? 0.25);
const cachePrefetch = process.env.BENCH_CACHE_PREFETCH === '1';
const stateDir = join(repoRoot(), 'build', 'bench-state-limited');

type ScenarioName = 'raw' | 'stock' | 'hints' | 'heat' | 'heatStock' | 'heatAfterLoad' | 'demand' | 'demandPageCache' | 'demandHints' | 'demandHeat' | 'cached';

// ---------------------------------------------------------------------------------------------------------------
// child side

interface IoSample {
  procReadBytes: number;
  diskReadBytes: number;
  t: number;
}

function ioSample(): IoSample {
  const io = readFileSync('/proc/self/io', 'utf8');
  const procReadBytes = Number(/^read_bytes:\s*(\d+)/m.exec(io)?.[1] ?? NaN);
  let diskReadBytes = NaN;
  try {
    diskReadBytes = Number(readFileSync(`/sys/block/${blockDev}/stat`, 'utf8').trim().split(/\s+/)[2]) * 512;
  } catch {
    /* no such device */
  }
  return { procReadBytes, diskReadBytes, t: performance.now() };
}

function ioDelta(a: IoSample, b: IoSample) {
  const s = (b.t - a.t) / 1000;
  return {
    seconds: s,
    procReadGB: (b.procReadBytes - a.procReadBytes) / GB,
    diskReadGB: (b.diskReadBytes - a.diskReadBytes) / GB,
    procGBps: (b.procReadBytes - a.procReadBytes) / GB / s,
    diskGBps: (b.diskReadBytes - a.diskReadBytes) / GB / s,
  };
}

interface Gen {
  tokenMs: number[];
  tokensPerSecond: number;
  ttftMs: number;
  io: ReturnType<typeof ioDelta>;
  /** expertRead demand: the pager's counters over this generation */
  paging?: ExpertPagingStats;
  /** with an expert-store on the hint channel: its reads ahead that a later hint used, over this generation */
  storeUsefulExperts?: number;
  /** this process's CPU time and page faults per token (the engine's threads and the store's, kernel work included) */
  perToken: { userMs: number; systemMs: number; minorFaults: number; majorFaults: number };
}

function cpuPerToken(a: NodeJS.ResourceUsage, b: NodeJS.ResourceUsage, n: number): Gen['perToken'] {
  return {
    userMs: (b.userCPUTime - a.userCPUTime) / 1000 / n,
    systemMs: (b.systemCPUTime - a.systemCPUTime) / 1000 / n,
    minorFaults: (b.minorPageFault - a.minorPageFault) / n,
    majorFaults: (b.majorPageFault - a.majorPageFault) / n,
  };
}

function pagingDelta(a: ExpertPagingStats | undefined, b: ExpertPagingStats | undefined): ExpertPagingStats | undefined {
  if (!a || !b) return undefined;
  const out = { ...b };
  for (const k of Object.keys(b) as (keyof ExpertPagingStats)[]) if (typeof b[k] === 'number') (out as any)[k] = (b[k] as number) - (a[k] as number);
  return out;
}

async function generate(engine: Engine, startedAt: number, prompt: number[], store?: ExpertStore): Promise<Gen> {
  const paging0 = engine.expertPagingStats();
  const storeUseful0 = store?.hintStats()?.useful;
  const usage0 = process.resourceUsage();
  const a = ioSample();
  const tokenMs: number[] = [];
  let final: Extract<GenerationEvent, { type: 'final' }> | undefined;
  for await (const e of engine.generate({ promptTokens: prompt, maxTokens: tokens, sampling: { temperature, seed: 1 } })) {
    if (e.type === 'chunk') for (let i = 0; i < e.tokenIds.length; i++) tokenMs.push(performance.now() - startedAt);
    else final = e;
  }
  if (!final) throw new Error('no final record');
  return {
    tokenMs,
    tokensPerSecond: final.timings.decodeTokensPerSecond,
    ttftMs: final.timings.ttftMs,
    io: ioDelta(a, ioSample()),
    paging: pagingDelta(paging0, engine.expertPagingStats()),
    perToken: cpuPerToken(usage0, process.resourceUsage(), tokenMs.length),
    storeUsefulExperts: storeUseful0 === undefined ? undefined : (store?.hintStats()?.useful ?? storeUseful0) - storeUseful0,
  };
}

function cgroupStat(cg: string | undefined): Record<string, number> | undefined {
  return cg ? memoryCgroupStat(cg) : undefined;
}

/**
 * The engine's placement in a scenario. On the GPU machine (BENCH_GPU_LAYERS > 0) stock keeps the experts of all but
 * BENCH_CACHE_BUDGET of the layers on the CPU (-ncmoe at the VRAM the cache gets), and the on-demand scenarios run
 * the GPU slot cache with BENCH_CACHE_BUDGET of each layer's experts, copied from the page cache (NVMe -> RAM -> VRAM).
 */
function placement(scenario: ScenarioName, nLayer: number, nExpert: number): Partial<LoadOptions> {
  if (gpuLayers === 0) return {};
  if (scenario.startsWith('demand')) return { nGpuLayers: gpuLayers, expertCache: { slots: Math.max(1, Math.round(nExpert * cacheBudget)), hostMemory: 'mmap', prefetch: cachePrefetch } };
  return { nGpuLayers: gpuLayers, nCpuMoe: Math.round(nLayer * (1 - cacheBudget)) };
}

async function child(scenario: ScenarioName, path: string): Promise<unknown> {
  const cg = process.env.BENCH_CGROUP || undefined;
  if (cg) joinMemoryCgroup(cg);
  const index = await loadExpertIndex(path);
  const size = index.files.reduce((s, f) => s + f.size, 0);
  const whole = index.files.map((f, file) => ({ file, offset: 0, length: f.size }));

  if (scenario === 'raw') {
    const out: Record<string, number> = {};
    const res = await new PageCache(index.files, { ioMode: 'uring', queueDepth: 32 }).prefetch(whole);
    out.uringQd32GBps = res.bytes / GB / (res.ms / 1000);
    await new PageCache(index.files, {}).evict(null);
    const t = performance.now();
    const bytes = preadAll(index.files);
    out.preadQd1GBps = bytes / GB / ((performance.now() - t) / 1000);
    return { ...out, cgroup: cgroupStat(cg) };
  }

  const log = pino({ level: 'silent' });
  const withStore = !['stock', 'cached', 'demand', 'demandPageCache'].includes(scenario);
  const hintChannel = ['hints', 'heat', 'heatAfterLoad', 'demandHints', 'demandHeat'].includes(scenario) ? hintChannelName(path) : undefined;
  const expertRead = scenario.startsWith('demand') ? 'demand' : 'load';
  const startedAt = performance.now();
  const io0 = ioSample();
  const ioMode = (process.env.BENCH_IO_MODE ?? 'auto') as 'auto' | 'uring' | 'fadvise';
  const store = withStore ? await ExpertStore.open({ modelPath: path, stateDir, log, hintChannel: hintChannel ?? false, ioMode }) : undefined;
  try {
    let warm: { ms: number; bytes: number; experts: number } | undefined;
    const heatWarm = async (s: ExpertStore) => {
      const t = performance.now();
      let last = { bytesDone: 0, expertsWarmed: 0 };
      const budget = Math.max(0, (cg ? limitBytes : size) - warmHeadroom);
      for await (const p of s.warm({ budgetBytes: budget, onlyUsed: true })) last = p;
      warm = { ms: performance.now() - t, bytes: last.bytesDone, experts: last.expertsWarmed };
    };
    if (store && (scenario === 'heat' || scenario === 'heatStock')) await heatWarm(store);
    const warming = store && scenario === 'demandHeat' ? heatWarm(store) : undefined;
    const t = performance.now();
    const engine = await Engine.load({
      path, threads, parallel: 1, contextSize: 2 * tokens + 64, warmup: false, hintChannel, expertRead,
      // demand: the engine's own expert memory where it applies (CPU layers, sized from the cgroup), else the page cache
      ...(scenario === 'demandPageCache' ? { expertRam: 'off' as const } : {}),
      ...placement(scenario, index.nLayer, index.nExpert),
    });
    const expertRam = engine.info.expertRam;
    const loadMs = performance.now() - t;
    if (store && scenario === 'heatAfterLoad') await heatWarm(store);
    const ioLoad = ioDelta(io0, ioSample());
    let cold: Gen;
    let steady: Gen;
    try {
      cold = await generate(engine, startedAt, [1, 2, 3, 4], store);
      steady = await generate(engine, startedAt, [5, 6, 7, 8], store);
    } finally {
      await engine.close();
      await warming;
    }
    const hints = store?.hintStats();
    const bytesPerExpert = index.expertBytes / (index.nLayer * index.nExpert);
    return { scenario, warm, loadMs, ioLoad, cold, steady, hints, bytesPerExpert, expertRam, cgroup: cgroupStat(cg) };
  } finally {
    await store?.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// parent side

function dropCaches(): void {
  spawnSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

function runChild(scenario: ScenarioName, path: string, cg: string | undefined): any {
  const r = spawnSync(process.execPath, [__filename, '--child', scenario, path], {
    env: { ...process.env, BENCH_CGROUP: cg ?? '' },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 << 20,
  });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (r.status !== 0 || !line) throw new Error(`scenario ${scenario} failed (status ${r.status}, signal ${r.signal}): ${r.stdout.slice(-2000)}`);
  return JSON.parse(line.slice(7));
}

/** First time (ms from the start) when the rate over the last `window` tokens reaches `target` t/s. */
function timeTo(target: number, tokenMs: number[], window = 8): number {
  for (let i = window; i < tokenMs.length; i++) {
    if ((window * 1000) / (tokenMs[i] - tokenMs[i - window]) >= target) return tokenMs[i];
  }
  return NaN;
}

function blockQueueSettings(dev: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of ['scheduler', 'nr_requests', 'read_ahead_kb', 'rotational']) {
    try {
      out[key] = readFileSync(`/sys/block/${dev}/queue/${key}`, 'utf8').trim();
    } catch {
      // not every device has every setting
    }
  }
  return out;
}

/** Disk bytes a scenario's steady decode used: needed experts read on demand, and reads ahead that were then needed. */
function usefulBytes(x: any): number {
  const p: ExpertPagingStats = x.steady.paging;
  return p.bytesMissing + p.bytesReadAheadUsed + (x.steady.storeUsefulExperts ?? 0) * (x.bytesPerExpert ?? 0);
}

export async function runLimited(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:prefetch:limited needs root (cgroup, drop_caches)');
  const path =
    process.env.BENCH_PREFETCH_MODEL ??
    (await shapedBenchModel('prefetch-limited-l24-e64-ff640-seed1', { preset: 'small', seed: 1, layers: 24, experts: 64, expertsUsed: 4, embd: 1024, expertFf: 640 }));
  const index = await loadExpertIndex(path);
  const size = index.files.reduce((s, f) => s + f.size, 0);
  const wanted = (process.env.BENCH_SCENARIOS ?? 'raw,stock,hints,heat,heatStock,cached').split(',') as ScenarioName[];
  // the heat map must come from this run's `hints` scenario (kept when that is not run)
  if (wanted.includes('hints')) rmSync(stateDir, { recursive: true, force: true });

  const cgroup = createMemoryCgroup(`moeflash-bench-${process.pid}`, limitBytes);
  const cg = cgroup.path;
  const cleanup = () => cgroup.remove();
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  const results: Record<string, any[]> = {};
  try {
    console.log(`model ${path}: ${(size / GiB).toFixed(2)} GiB; cgroup ${cg} limit ${(limitBytes / GiB).toFixed(2)} GiB; ${tokens} tokens x2, ${threads} threads, ${reps} rep(s)`);
    for (let r = 0; r < reps; r++) {
      for (const s of wanted) {
        if (s === 'cached') continue;
        dropCaches();
        const res = runChild(s, path, cg);
        (results[s] ??= []).push(res);
        const brief = res.steady
          ? `load ${res.loadMs.toFixed(0)} ms, cold ${res.cold.tokensPerSecond.toFixed(2)} t/s, steady ${res.steady.tokensPerSecond.toFixed(2)} t/s, decode disk ${res.steady.io.diskGBps.toFixed(2)} GB/s`
          : JSON.stringify(res);
        console.log(`rep ${r + 1} ${s}: ${brief}`);
      }
    }
    if (wanted.includes('cached')) {
      dropCaches();
      spawnSync('cat', [path], { stdio: ['ignore', 'ignore', 'inherit'] });
      results.cached = [runChild('cached', path, undefined)];
    }
  } finally {
    dropCaches(); // uncharge the cgroup's page cache so it can be removed
    cleanup();
  }

  const med = (s: string, f: (x: any) => number) => (results[s]?.length ? median(results[s].map(f)) : NaN);
  const uring = med('raw', (x) => x.uringQd32GBps);
  const stockSteady = med('stock', (x) => x.steady.tokensPerSecond);
  const labels: Record<string, string> = {
    stock: 'stock mmap (no hints)',
    hints: 'expert-store prefetch on hints',
    heat: 'heat-map Warm + hint prefetch',
    heatStock: 'heat-map Warm, then stock',
    heatAfterLoad: 'load, then heat-map Warm + hints',
    // on the GPU the cache's misses are what the engine reads, and predictions exist only with the cache's prefetch
    demand: gpuLayers > 0 && !cachePrefetch
      ? 'experts on demand (engine reads the cache misses)'
      : 'experts on demand (engine memory, O_DIRECT)',
    demandPageCache: 'experts on demand (page cache)',
    demandHints: 'experts on demand + expert-store lookahead',
    demandHeat: 'on demand + lookahead + heat Warm beside',
    cached: 'reference: no limit, all cached',
  };
  const rows = Object.keys(labels)
    .filter((s) => results[s])
    .map((s) => ({
      scenario: labels[s],
      key: s,
      warmMs: med(s, (x) => x.warm?.ms ?? 0),
      loadMs: med(s, (x) => x.loadMs),
      coldTps: med(s, (x) => x.cold.tokensPerSecond),
      steadyTps: med(s, (x) => x.steady.tokensPerSecond),
      steadyVsStock: med(s, (x) => x.steady.tokensPerSecond) / stockSteady,
      decodeDiskGBps: med(s, (x) => x.steady.io.diskGBps),
      decodeProcGBps: med(s, (x) => x.steady.io.procGBps),
      vsUring: med(s, (x) => x.steady.io.diskGBps) / uring,
      readPerTokenMB: med(s, (x) => (x.steady.io.procReadGB * 1000) / tokens),
      // over both generations (token times from the scenario's start); NaN: not within 2 x N tokens
      msTo90: med(s, (x) => timeTo(0.9 * stockSteady, [...x.cold.tokenMs, ...x.steady.tokenMs])),
      msTo90Own: med(s, (x) => timeTo(0.9 * x.steady.tokensPerSecond, [...x.cold.tokenMs, ...x.steady.tokenMs])),
      // experts on demand, per second of steady decode: the disk bytes decoding used, i.e. the routed (or missed)
      // experts' bytes not in the page cache when needed, plus the reads ahead of experts then needed (the engine's,
      // and the expert-store's on hints)
      usefulGBps: med(s, (x) => (x.steady.paging ? usefulBytes(x) / GB / x.steady.io.seconds : NaN)),
      userMsPerToken: med(s, (x) => x.steady.perToken.userMs),
      systemMsPerToken: med(s, (x) => x.steady.perToken.systemMs),
      minorFaultsPerToken: med(s, (x) => x.steady.perToken.minorFaults),
      readAheadUsedShare: med(s, (x) => (x.steady.paging ? x.steady.paging.bytesReadAheadUsed / x.steady.paging.bytesReadAhead : NaN)),
      ramHitRate: med(s, (x) => (x.steady.paging ? x.steady.paging.pageCacheHits / x.steady.paging.experts : NaN)),
      predictionAccuracy: med(s, (x) => (x.steady.paging ? x.steady.paging.predictedUsed / x.steady.paging.predicted : NaN)),
    }));

  console.log(`block device ${blockDev}: ${JSON.stringify(blockQueueSettings(blockDev))}`);
  console.log(`\nbench:prefetch --limited — ${path} (${(size / GB).toFixed(2)} GB, ${index.nLayer} layers x ${index.nExpert} experts), cgroup limit ${(limitBytes / GiB).toFixed(2)} GiB, ${tokens} tokens, ${threads} threads, median of ${reps} (${cpus()[0]?.model ?? 'cpu'})\n`);
  printTable(
    ['read path (dropped cache, in the cgroup)', 'GB/s'],
    [
      ['io_uring 1 MiB, QD 32', uring],
      ['pread 1 MiB, QD 1', med('raw', (x) => x.preadQd1GBps)],
    ],
  );
  console.log('');
  printTable(
    ['scenario', 'warm ms', 'load ms', 'cold t/s', 'steady t/s', 'x stock', 'disk GB/s', 'proc GB/s', 'vs uring', 'MB/token', 'ms to 90%', 'ms to 90% own'],
    rows.map((r) => [r.scenario, r.warmMs, r.loadMs, r.coldTps, r.steadyTps, r.steadyVsStock, r.decodeDiskGBps, r.decodeProcGBps, r.vsUring, r.readPerTokenMB, r.msTo90, r.msTo90Own]),
  );
  const paged = rows.filter((r) => Number.isFinite(r.ramHitRate));
  if (paged.length > 0) {
    console.log('');
    printTable(
      ['experts on demand (steady)', 'RAM hit rate', 'useful GB/s', 'useful vs uring', 'prediction accuracy', 'read-ahead bytes used'],
      paged.map((r) => [r.scenario, r.ramHitRate, r.usefulGBps, r.usefulGBps / uring, r.predictionAccuracy, r.readAheadUsedShare]),
    );
  }
  console.log('');
  printTable(
    ['steady decode, per token', 'user CPU ms', 'system CPU ms', 'minor faults'],
    rows.map((r) => [r.scenario, r.userMsPerToken, r.systemMsPerToken, r.minorFaultsPerToken]),
  );
  for (const s of ['hints', 'heat', 'demandHints']) {
    const h = results[s]?.at(-1)?.hints;
    if (h) console.log(`${s} counters: ${JSON.stringify(h)}`);
  }
  const out = writeResult(process.env.BENCH_RESULT ?? 'prefetch-limited', {
    date: new Date().toISOString(),
    model: { path, bytes: size, layers: index.nLayer, experts: index.nExpert, expertBytes: index.expertBytes },
    limitBytes,
    warmHeadroomBytes: warmHeadroom,
    expertStoreIoMode: process.env.BENCH_IO_MODE ?? 'auto',
    tokens,
    threads,
    temperature,
    reps,
    cpu: cpus()[0]?.model,
    blockDev,
    // whether the disk can favour demand reads over reads ahead (I/O priority classes need a scheduler that honours
    // them and requests waiting in it)
    blockQueue: blockQueueSettings(blockDev),
    gpu: gpuLayers > 0 ? { layers: gpuLayers, cacheBudget, cachePrefetch } : undefined,
    recordRouting: process.env.MOEFLASH_RECORD_ROUTING,
    ms90Reference: { what: '90% of stock steady-state t/s under the same limit', tokensPerSecond: 0.9 * stockSteady },
    rows,
    runs: results,
  });
  console.log(`written ${out}`);

  const svgPath = out.replace(/\.json$/, '.svg');
  writeFileSync(svgPath, coldStartSvg(JSON.parse(readFileSync(out, 'utf8'))));
  console.log(`written ${svgPath}`);
}

/**
 * The cold start as a picture: decode rate over the last 8 tokens against seconds since the scenario started, the
 * first run of each scenario of a written result (`--plot <result.json>` redraws a saved one).
 */
function coldStartSvg(result: { limitBytes: number; model: { bytes: number }; rows: { key: string }[]; runs: Record<string, any[]> }): string {
  const curve = (tokenMs: number[]): [number, number][] =>
    tokenMs.flatMap((t, i) => (i >= 8 ? [[t / 1000, 8000 / (t - tokenMs[i - 8])] as [number, number]] : []));
  return plotLinesSvg({
    title: `decode after a cold start, ${(result.limitBytes / GiB).toFixed(2)} GiB limit, ${(result.model.bytes / GB).toFixed(2)} GB model`,
    xLabel: 'seconds since the scenario started (load or Warm)',
    yLabel: 'tokens/s over the last 8',
    xMax: Number(process.env.BENCH_PLOT_SECONDS ?? 20),
    series: result.rows
      .filter((r) => r.key !== 'cached')
      .map((r) => {
        const run = result.runs[r.key][0];
        return { name: r.key, points: curve([...run.cold.tokenMs, ...run.steady.tokenMs]) };
      }),
  });
}

if (require.main === module) {
  if (process.argv[2] === '--child') {
    child(process.argv[3] as ScenarioName, process.argv[4]).then(
      (r) => {
        process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);
      },
      (e) => {
        console.error(e);
        process.exitCode = 1;
      },
    );
  } else if (process.argv[2] === '--plot') {
    const json = process.argv[3];
    writeFileSync(json.replace(/\.json$/, '.svg'), coldStartSvg(JSON.parse(readFileSync(json, 'utf8'))));
  } else {
    runLimited().catch((e) => {
      console.error(e);
      process.exitCode = 1;
    });
  }
}
