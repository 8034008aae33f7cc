/**
 * npm run bench:engine — our embedded engine vs llama.cpp's llama-bench on the same build, model and threads.
 * Prefill: a 512-token prompt (pp512); decode: 128 generated tokens (tg128), greedy; median of the repetitions. Ours also
 * as a steady rate: the cost of 64 more tokens (a 128-token generation against a 64-token one).
 * Third column: node-llama-cpp's prebuilt CPU binary (same pinned version) when scripts/install-bench-peers.sh ran.
 * Options (env): BENCH_MODELS=tiny,small (presets or paths)  BENCH_THREADS=<cores>  BENCH_REPS=3  BENCH_NGL=0 (GPU
 * layers)  BENCH_LABEL=<backend> (names the result file bench/results/engine-<label>.json)
 * BENCH_NATIVE=1: also llama-bench from a -march=native build of the same patched tree (built into
 * build/llama/patched/build-<backend>-native if missing): what the probed CPU build costs against the native one.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';

import { Engine } from '../services/engine/Engine';
import { cpuBuildRecordPath, readCpuBuildRecord } from '../services/engine/cpuBuild/cpuBuildRecord';
import { addonBuildDir, repoRoot } from '../services/engine/loadAddon';
import type { GenerationFinal } from '../services/engine/types';
import { benchModel } from './benchModel';
import { median, printTable, writeResult } from './benchTable';

const run = promisify(execFile);
const backend = process.env.MOEFLASH_BACKEND ?? 'cpu';
const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const reps = Number(process.env.BENCH_REPS ?? 3);
const ngl = Number(process.env.BENCH_NGL ?? 0);
const PP = 512;
const TG = 128;

async function final(stream: AsyncIterable<{ type: string }>): Promise<GenerationFinal> {
  let last: GenerationFinal | undefined;
  for await (const e of stream) if (e.type === 'final') last = e as GenerationFinal;
  if (!last) throw new Error('no final record');
  return last;
}

async function ours(path: string): Promise<{ pp: number; tg: number; tgSteady: number }> {
  const engine = await Engine.load({ path, threads, parallel: 1, contextSize: PP + TG + 16, batchSize: PP, nGpuLayers: ngl });
  try {
    const vocab = engine.info.nVocab;
    const pp: number[] = [];
    const tg: number[] = [];
    const steady: number[] = [];
    const decode = (maxTokens: number) => final(engine.generate({ promptTokens: [1], maxTokens, sampling: { temperature: 0 } }));
    for (let r = 0; r < reps + 1; r++) {
      // random prompt tokens like llama-bench; the first repetition warms up and is not counted
      const prompt = Array.from({ length: PP }, (_, i) => 3 + ((i * 7919 + r * 104729) % (vocab - 3)));
      const p = await final(engine.generate({ promptTokens: prompt, maxTokens: 1, sampling: { temperature: 0 } }));
      const t = await decode(TG);
      // the steady rate: what 64 more tokens cost between a 64- and a 128-token generation, without what a
      // generation's first steps pay once (a backend rebuilding or capturing its decode graph after a prefill)
      const [short, long] = [await decode(TG / 2), await decode(TG)];
      if (r === 0) continue;
      pp.push(p.timings.prefillTokensPerSecond);
      if (t.completionTokens === TG) tg.push(t.timings.decodeTokensPerSecond);
      if (short.completionTokens === TG / 2 && long.completionTokens === TG) {
        steady.push(((TG / 2) * 1000) / (long.timings.decodeMs - short.timings.decodeMs));
      }
    }
    return { pp: median(pp), tg: tg.length ? median(tg) : NaN, tgSteady: steady.length ? median(steady) : NaN };
  } finally {
    await engine.close();
  }
}

/** A -march=native build of the patched tree's llama-bench, beside the probed one (ccache makes it cheap). */
function nativeBuild(): string {
  const dir = join(repoRoot(), 'build', 'llama', 'patched', `build-${backend}-native`);
  if (!existsSync(join(dir, 'bin', 'llama-bench'))) {
    const env = { ...process.env, MOEFLASH_CPU_FLAGS: '-DGGML_NATIVE=ON', MOEFLASH_LLAMA_BUILD_DIR: dir, MOEFLASH_LLAMA_TARGETS: 'llama-bench' };
    const r = spawnSync('bash', [join(repoRoot(), 'scripts', 'build-llama-cpp.sh'), 'patched'], { env, stdio: 'inherit' });
    if (r.status !== 0) throw new Error('the native reference build failed');
  }
  return dir;
}

async function llamaBench(path: string, buildDir = join(repoRoot(), 'build', 'llama', 'patched', `build-${backend}`)): Promise<{ pp: number; tg: number }> {
  const bin = join(buildDir, 'bin', 'llama-bench');
  const { stdout } = await run(bin, ['-m', path, '-p', String(PP), '-n', String(TG), '-t', String(threads), '-r', String(reps), '-ngl', String(ngl), '-o', 'json'], { maxBuffer: 16 << 20 });
  const rows = JSON.parse(stdout) as { n_prompt: number; n_gen: number; avg_ts: number }[];
  return { pp: rows.find((r) => r.n_prompt > 0)!.avg_ts, tg: rows.find((r) => r.n_gen > 0)!.avg_ts };
}

/** node-llama-cpp's prebuilt binary on the same model, when scripts/install-bench-peers.sh has installed it. */
async function nodeLlamaCpp(path: string): Promise<{ pp: number; tg: number } | { error: string } | undefined> {
  const peers = join(repoRoot(), 'build', 'bench-peers');
  if (backend !== 'cpu' || !existsSync(join(peers, 'node_modules', 'node-llama-cpp'))) return undefined;
  const script = join(repoRoot(), 'bench', 'peers', 'nodeLlamaCpp.mjs');
  const { stdout } = await run(process.execPath, [script, peers, path, String(threads), String(PP), String(TG), String(reps)], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

async function main(): Promise<void> {
  const presets = (process.env.BENCH_MODELS ?? 'tiny,small').split(',');
  const nativeDir = process.env.BENCH_NATIVE === '1' ? nativeBuild() : undefined;
  const record = readCpuBuildRecord(cpuBuildRecordPath(addonBuildDir()));
  const results = [];
  for (const preset of presets) {
    const path = await benchModel(preset);
    const stock = await llamaBench(path);
    const native = nativeDir ? await llamaBench(path, nativeDir) : undefined;
    const mine = await ours(path);
    const peer = await nodeLlamaCpp(path);
    const vsNative = native && { pp: stock.pp / native.pp, tg: stock.tg / native.tg };
    results.push({ nodeLlamaCpp: peer, model: basename(preset, '.gguf'), path, stock, native, vsNative, ours: mine, ratio: { pp: mine.pp / stock.pp, tg: mine.tg / stock.tg, tgSteady: mine.tgSteady / stock.tg } });
  }
  console.log(`\nbench:engine — backend ${backend}, ${threads} threads, ngl ${ngl}, pp${PP} / tg${TG}, median of ${reps} (${cpus()[0]?.model ?? 'cpu'})`);
  console.log(`CPU build '${record?.level ?? 'unrecorded'}'${record?.leftOut.length ? ` (left out: ${record.leftOut.map((l) => l.label).join(', ')})` : ''}\n`);
  printTable(
    ['model', 'llama-bench pp t/s', 'moeflash pp t/s', 'pp ratio', 'llama-bench tg t/s', 'moeflash tg t/s', 'tg ratio', 'moeflash tg steady', 'ratio', 'node-llama-cpp pp / tg t/s'],
    results.map((r) => [r.model, r.stock.pp, r.ours.pp, r.ratio.pp, r.stock.tg, r.ours.tg, r.ratio.tg, r.ours.tgSteady, r.ratio.tgSteady, peerCell(r.nodeLlamaCpp)]),
  );
  if (nativeDir) {
    console.log('\nthe probed CPU build against -march=native (llama-bench of each, same tree, same run)\n');
    printTable(
      ['model', 'native pp t/s', `'${record?.level}' pp t/s`, 'pp ratio', 'native tg t/s', `'${record?.level}' tg t/s`, 'tg ratio'],
      results.map((r) => [r.model, r.native!.pp, r.stock.pp, r.vsNative!.pp, r.native!.tg, r.stock.tg, r.vsNative!.tg]),
    );
  }
  const cpuBuild = record && { level: record.level, leftOut: record.leftOut.map((l) => l.tier), cmakeFlags: record.cmakeFlags };
  const out = writeResult(`engine-${process.env.BENCH_LABEL ?? backend}`, { date: new Date().toISOString(), backend, threads, ngl, reps, cpu: cpus()[0]?.model, cpuBuild, results });
  console.log(`\nwritten ${out}`);
}

function peerCell(peer: { pp: number; tg: number } | { error: string } | undefined): string {
  if (!peer) return 'not installed (scripts/install-bench-peers.sh)';
  if ('error' in peer) return `does not load: ${peer.error}`;
  return `${peer.pp.toFixed(1)} / ${peer.tg.toFixed(1)}`;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
