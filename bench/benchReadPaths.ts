/**
 * npm run bench:readpaths — what one byte of an expert read from disk costs the CPU, by the path it takes into memory,
 * under the memory limit of bench:prefetch:limited (root: cgroup, drop_caches).
 *
 * bench/io/expertReadPaths.c (built here with gcc and liburing) reads BENCH_READ_BYTES (2 GB) of the bench model in
 * expert-sized ranges at random offsets, BENCH_READ_BATCH (4: one layer's routed experts) at a time, the same ranges
 * in every mode, each run a fresh process in a cgroup of BENCH_LIMIT_BYTES (0.75 GiB) after dropping the page cache:
 *   willneed  the engine's on-demand path today (native/src/ExpertPager): the file mapped MADV_RANDOM, MADV_WILLNEED
 *             on each range, then every page touched, as the matmuls do; the page cache reclaims to make room
 *   direct    an engine-owned RAM tier: O_DIRECT io_uring reads (QD 32, 1 MiB pieces) into slots of an anonymous
 *             buffer of BENCH_READ_RAM_BYTES (512 MiB) allocated once; no page cache
 * Prints GB/s and user / system CPU seconds per GB (median of BENCH_REPS=3, modes alternating) and writes
 * bench/results/<BENCH_RESULT=read-paths>.json.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';

import { repoRoot } from '../services/engine/loadAddon';
import { loadExpertIndex } from '../services/expert-store/ExpertIndex';
import { shapedBenchModel } from './benchModel';
import { median, printTable, writeResult } from './benchTable';
import { createMemoryCgroup } from './memoryCgroup';

const GiB = 1024 ** 3;
const limitBytes = Number(process.env.BENCH_LIMIT_BYTES ?? 0.75 * GiB);
const readBytes = Number(process.env.BENCH_READ_BYTES ?? 2e9);
const batch = Number(process.env.BENCH_READ_BATCH ?? 4);
const ramBytes = Number(process.env.BENCH_READ_RAM_BYTES ?? 512 * 1024 ** 2);
const reps = Number(process.env.BENCH_REPS ?? 3);
const modes = ['willneed', 'direct'] as const;

interface Run {
  mode: (typeof modes)[number];
  GBps: number;
  userSecondsPerGB: number;
  systemSecondsPerGB: number;
  minorFaults: number;
  checksum: number;
}

function build(): string {
  const out = join(repoRoot(), 'build', 'bench-bin');
  mkdirSync(out, { recursive: true });
  const bin = join(out, 'expertReadPaths');
  execFileSync('gcc', ['-O2', '-Wall', '-o', bin, join(repoRoot(), 'bench', 'io', 'expertReadPaths.c'), '-luring'], { stdio: 'inherit' });
  return bin;
}

function dropCaches(): void {
  spawnSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:readpaths needs root (cgroup, drop_caches)');
  const bin = build();
  const path =
    process.env.BENCH_PREFETCH_MODEL ??
    (await shapedBenchModel('prefetch-limited-l24-e64-ff640-seed1', { preset: 'small', seed: 1, layers: 24, experts: 64, expertsUsed: 4, embd: 1024, expertFf: 640 }));
  const index = await loadExpertIndex(path);
  const expertBytes = Math.round(index.expertBytes / (index.nLayer * index.nExpert));
  const cgroup = createMemoryCgroup(`moeflash-readpaths-${process.pid}`, limitBytes);
  const runs: Run[] = [];
  try {
    for (let r = 0; r < reps; r++) {
      for (const mode of modes) {
        dropCaches();
        const args = [path, mode, String(readBytes), String(expertBytes), String(batch), String(ramBytes)];
        // the shell joins the cgroup, then becomes the reader: everything it reads is charged there
        const res = spawnSync('sh', ['-c', `echo $$ > "${cgroup.path}/cgroup.procs" && exec "$0" "$@"`, bin, ...args], { encoding: 'utf8' });
        if (res.status !== 0) throw new Error(`${mode}: ${res.stderr}`);
        const run = JSON.parse(res.stdout.trim()) as Run;
        runs.push(run);
        console.log(`rep ${r + 1} ${mode}: ${run.GBps.toFixed(2)} GB/s, system ${run.systemSecondsPerGB.toFixed(3)} s/GB`);
      }
    }
  } finally {
    dropCaches();
    cgroup.remove();
  }
  if (new Set(runs.map((r) => r.checksum)).size !== 1) throw new Error('the modes read different bytes');
  const rows = modes.map((mode) => {
    const of = runs.filter((r) => r.mode === mode);
    return {
      mode,
      GBps: median(of.map((r) => r.GBps)),
      userSecondsPerGB: median(of.map((r) => r.userSecondsPerGB)),
      systemSecondsPerGB: median(of.map((r) => r.systemSecondsPerGB)),
      minorFaultsPerGB: median(of.map((r) => r.minorFaults / (readBytes / 1e9))),
    };
  });
  const [paged, direct] = rows;
  console.log(
    `\nbench:readpaths — ${(readBytes / 1e9).toFixed(1)} GB in ${(expertBytes / 1e6).toFixed(2)} MB ranges, ${batch} at a time, cgroup ${(limitBytes / GiB).toFixed(2)} GiB, median of ${reps} (${cpus()[0]?.model ?? 'cpu'})\n`,
  );
  printTable(
    ['path into memory', 'GB/s', 'user CPU s/GB', 'system CPU s/GB', 'minor faults/GB'],
    rows.map((r) => [r.mode, r.GBps, r.userSecondsPerGB, r.systemSecondsPerGB, r.minorFaultsPerGB]),
  );
  console.log(
    `\ndirect against willneed: ${(direct.GBps / paged.GBps).toFixed(2)}x the rate, ${((paged.userSecondsPerGB + paged.systemSecondsPerGB) / (direct.userSecondsPerGB + direct.systemSecondsPerGB)).toFixed(1)}x less CPU per byte`,
  );
  const out = writeResult(process.env.BENCH_RESULT ?? 'read-paths', {
    date: new Date().toISOString(),
    model: { path, expertBytes },
    limitBytes,
    readBytes,
    batch,
    ramBytes,
    reps,
    cpu: cpus()[0]?.model,
    rows,
    runs,
  });
  console.log(`written ${out}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
