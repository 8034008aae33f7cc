/**
 * npm run bench:prefetch — how fast the expert-store fills the page cache, and what that does to a cold start.
 *
 * 1. Raw reads of the model file from a dropped cache (DONTNEED on the file): pread 1 MiB at a time (QD 1, what a
 *    page-faulting mmap gets at best), io_uring QD 1 and QD 32 (1 MiB reads), posix_fadvise(WILLNEED) in 8 MiB pieces
 *    (timed until the pages are resident), and the expert-store's Warm of every expert (io_uring QD 32).
 * 2. Cold start, stock vs warmed: decode N tokens greedily from a dropped cache with the stock mmap load, and after
 *    the expert-store warmed the model (non-expert tensors first, then experts in heat order); the time until decode
 *    runs at 90% of the warm speed, measured from the start (load or warm), next to the warm speed itself.
 * 3. Stock cold start again with the expert-store attached to the engine's hint channel (prefetch of the experts
 *    each step routed to), with its counters.
 *
 * `--limited` (or `npm run bench:prefetch:limited`): the model larger than a memory-limited cgroup's page cache
 * instead (bench/benchPrefetchLimited.ts; root and cgroup v1 needed).
 *
 * Options (env): BENCH_PREFETCH_MODEL=<gguf> (default: a generated ~1.7 GB q8_0 MoE, 16 layers x 64 experts)
 *   BENCH_TOKENS=64  BENCH_THREADS=<cores>  BENCH_REPS=3
 */
import { availableParallelism, cpus, totalmem } from 'node:os';
import { join } from 'node:path';

import pino from 'pino';

import { Engine } from '../services/engine/Engine';
import { repoRoot } from '../services/engine/loadAddon';
import type { GenerationEvent } from '../services/engine/types';
import { loadExpertIndex, type ExpertIndex, type FileRange } from '../services/expert-store/ExpertIndex';
import { ExpertStore } from '../services/expert-store/ExpertStore';
import { PageCache } from '../services/expert-store/PageCache';
import { shapedBenchModel } from './benchModel';
import { median, printTable, writeResult } from './benchTable';
import { preadAll } from './preadAll';
import { runLimited } from './benchPrefetchLimited';

const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const tokens = Number(process.env.BENCH_TOKENS ?? 64);
const reps = Number(process.env.BENCH_REPS ?? 3);
const GB = 1e9;

function wholeFile(index: ExpertIndex): FileRange[] {
  return index.files.map((f, file) => ({ file, offset: 0, length: f.size }));
}

async function resident(cache: PageCache, ranges: FileRange[]): Promise<number> {
  return (await cache.residency(ranges)).resident.reduce((a, b) => a + b, 0);
}

interface Decode {
  /** ms from the start of the scenario (load or warm) to each token. */
  tokenMs: number[];
  loadMs: number;
  warmMs: number;
  ttftMs: number;
  tokensPerSecond: number;
}

async function decode(path: string, startedAt: number, warmMs: number, hintChannel?: string): Promise<Decode> {
  const t0 = performance.now();
  const engine = await Engine.load({ path, threads, parallel: 1, contextSize: tokens + 64, warmup: false, hintChannel });
  const loadMs = performance.now() - t0;
  const tokenMs: number[] = [];
  let final: Extract<GenerationEvent, { type: 'final' }> | undefined;
  try {
    for await (const e of engine.generate({ promptTokens: [1, 2, 3, 4], maxTokens: tokens, sampling: { temperature: 0 } })) {
      if (e.type === 'chunk') for (let i = 0; i < e.tokenIds.length; i++) tokenMs.push(performance.now() - startedAt);
      else final = e;
    }
  } finally {
    await engine.close();
  }
  if (!final) throw new Error('no final record');
  return { tokenMs, loadMs, warmMs, ttftMs: final.timings.ttftMs, tokensPerSecond: final.timings.decodeTokensPerSecond };
}

/** First time (ms from the start) when the rate over the last `window` tokens reaches `fraction` of `warm` t/s. */
function timeTo(fractionOfWarm: number, warm: number, tokenMs: number[], window = 8): number {
  for (let i = window; i < tokenMs.length; i++) {
    const rate = (window * 1000) / (tokenMs[i] - tokenMs[i - window]);
    if (rate >= fractionOfWarm * warm) return tokenMs[i];
  }
  return NaN;
}

async function main(): Promise<void> {
  const path = await shapedBenchModel('prefetch-l16-e64-seed1', { preset: 'small', seed: 1, layers: 16, experts: 64, expertsUsed: 4, embd: 1024, expertFf: 512 });
  const index = await loadExpertIndex(path);
  const cache = new PageCache(index.files, { ioMode: 'uring', queueDepth: 32 });
  const whole = wholeFile(index);
  const size = index.files.reduce((s, f) => s + f.size, 0);
  const uring = PageCache.ioUringStatus();
  if (size > totalmem() * 0.8) console.log('note: the model is larger than 80% of memory; warm scenarios are cut to the budget');

  // 1. raw reads from a dropped cache
  const raw: Record<string, number[]> = { pread: [], uringQd1: [], uringQd32: [], fadvise: [], warmExperts: [], warmExpertsFadvise: [] };
  for (let r = 0; r < reps; r++) {
    await cache.evict(null);
    let t = performance.now();
    const n = preadAll(index.files);
    raw.pread.push(n / GB / ((performance.now() - t) / 1000));
    if (uring.available) {
      for (const [key, qd] of [['uringQd1', 1], ['uringQd32', 32]] as const) {
        await cache.evict(null);
        const res = await new PageCache(index.files, { ioMode: 'uring', queueDepth: qd }).prefetch(whole);
        raw[key].push(res.bytes / GB / (res.ms / 1000));
      }
    }
    await cache.evict(null);
    t = performance.now();
    await new PageCache(index.files, { ioMode: 'fadvise' }).prefetch(whole);
    while ((await resident(cache, whole)) < size) await new Promise((r) => setTimeout(r, 2));
    raw.fadvise.push(size / GB / ((performance.now() - t) / 1000));
  }
  const log = pino({ level: 'silent' });
  let hints: ReturnType<ExpertStore['hintStats']>;
  const store = await ExpertStore.open({ modelPath: path, stateDir: join(repoRoot(), 'build', 'bench-state'), log, hintChannel: false, ioMode: 'auto' });
  try {
    for (let r = 0; r < reps; r++) {
      await cache.evict(null);
      const t = performance.now();
      let bytes = 0;
      for await (const p of store.warm({ skipNonExpert: true, budgetBytes: Number.MAX_SAFE_INTEGER })) bytes = p.bytesDone;
      raw.warmExperts.push(bytes / GB / ((performance.now() - t) / 1000));
    }
    const fadviseStore = await ExpertStore.open({ modelPath: path, stateDir: join(repoRoot(), 'build', 'bench-state'), log, hintChannel: false, ioMode: 'fadvise' });
    try {
      const experts = index.experts.flat().flatMap((e) => e.ranges);
      for (let r = 0; r < reps; r++) {
        await cache.evict(null);
        const t = performance.now();
        for await (const _ of fadviseStore.warm({ skipNonExpert: true, budgetBytes: Number.MAX_SAFE_INTEGER }));
        while ((await resident(cache, experts)) < index.expertBytes) await new Promise((res) => setTimeout(res, 2));
        raw.warmExpertsFadvise.push(index.expertBytes / GB / ((performance.now() - t) / 1000));
      }
    } finally {
      await fadviseStore.close();
    }

    // 2. cold start: warm speed first (everything cached), then stock cold and warmed cold
    const warmRuns: number[] = [];
    for (let r = 0; r < reps; r++) warmRuns.push((await decode(path, performance.now(), 0)).tokensPerSecond);
    const warm = median(warmRuns);
    const scenarios: { name: string; runs: Decode[] }[] = [
      { name: 'stock mmap, cold', runs: [] },
      { name: 'expert-store Warm, then mmap', runs: [] },
      { name: 'stock mmap + hint prefetch, cold', runs: [] },
    ];
    const hintChannel = `moeflash-bench-${process.pid}`;
    const hintStore = await ExpertStore.open({ modelPath: path, stateDir: join(repoRoot(), 'build', 'bench-state'), log, hintChannel, ioMode: 'auto' });
    try {
      for (let r = 0; r < reps; r++) {
        await cache.evict(null);
        scenarios[0].runs.push(await decode(path, performance.now(), 0));
        await cache.evict(null);
        const started = performance.now();
        for await (const _ of store.warm({ budgetBytes: store.defaultBudget() }));
        scenarios[1].runs.push(await decode(path, started, performance.now() - started));
        await cache.evict(null);
        await hintStore.evict([]);
        scenarios[2].runs.push(await decode(path, performance.now(), 0, hintChannel));
      }
      hints = hintStore.hintStats();
    } finally {
      await hintStore.close();
    }
    const rows = scenarios.map((s) => {
      const to90 = median(s.runs.map((d) => timeTo(0.9, warm, d.tokenMs)));
      return {
        scenario: s.name,
        warmMs: median(s.runs.map((d) => d.warmMs)),
        loadMs: median(s.runs.map((d) => d.loadMs)),
        ttftMs: median(s.runs.map((d) => d.ttftMs)),
        tokensPerSecond: median(s.runs.map((d) => d.tokensPerSecond)),
        msTo90PctWarm: to90,
      };
    });

    const cpu = cpus()[0]?.model ?? 'cpu';
    console.log(`\nbench:prefetch — ${path} (${(size / GB).toFixed(2)} GB, ${index.nLayer} layers x ${index.nExpert} experts), ${threads} threads, median of ${reps} (${cpu})\n`);
    const med = (k: string) => (raw[k].length ? median(raw[k]) : NaN);
    printTable(
      ['read path (dropped cache)', 'GB/s', 'vs io_uring QD32'],
      [
        ['pread 1 MiB, QD 1', med('pread'), med('pread') / med('uringQd32')],
        ['io_uring 1 MiB, QD 1', med('uringQd1'), med('uringQd1') / med('uringQd32')],
        ['io_uring 1 MiB, QD 32', med('uringQd32'), 1],
        ['fadvise WILLNEED 8 MiB', med('fadvise'), med('fadvise') / med('uringQd32')],
        ['Warm (all experts, io_uring QD 32)', med('warmExperts'), med('warmExperts') / med('uringQd32')],
        ['Warm (all experts, fadvise, until resident)', med('warmExpertsFadvise'), med('warmExpertsFadvise') / med('uringQd32')],
      ],
    );
    console.log('');
    printTable(
      ['cold start', 'warm ms', 'load ms', 'ttft ms', 'decode t/s', 'ms to 90% of warm t/s'],
      [...rows.map((r) => [r.scenario, r.warmMs, r.loadMs, r.ttftMs, r.tokensPerSecond, r.msTo90PctWarm]), ['warm cache (reference)', 0, 0, 0, warm, 0]],
    );
    console.log(
      `\nhint prefetch (all runs): ${hints?.hints ?? 0} hints, ${hints?.prefetchedExperts ?? 0} experts read, ` +
        `${hints?.alreadyResident ?? 0} already resident, ${hints?.useful ?? 0} useful, ${hints?.late ?? 0} late, ${hints?.dropped ?? 0} dropped`,
    );
    const out = writeResult('prefetch', {
      date: new Date().toISOString(),
      model: { path, bytes: size, layers: index.nLayer, experts: index.nExpert, expertBytes: index.expertBytes },
      threads,
      tokens,
      reps,
      cpu,
      ioUring: uring,
      rawGBps: Object.fromEntries(Object.keys(raw).map((k) => [k, { median: med(k), runs: raw[k] }])),
      warmTokensPerSecond: warm,
      coldStart: rows,
      hintPrefetch: hints,
    });
    console.log(`written ${out}`);
  } finally {
    await store.close();
  }
}

(process.argv.includes('--limited') ? runLimited() : main()).catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
