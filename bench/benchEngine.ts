/**
 * npm run bench:engine — our embedded engine vs llama.cpp's llama-bench on the same build, model and threads.
 * Prefill: a 512-token prompt (pp512); decode: 128 generated tokens (tg128), greedy; median of the repetitions.
 * Third column: node-llama-cpp's prebuilt CPU binary (same pinned version) when scripts/install-bench-peers.sh ran.
 * Options (env): BENCH_MODELS=tiny,small (presets or paths)  BENCH_THREADS=<cores>  BENCH_REPS=3  BENCH_NGL=0 (GPU
 * layers)  BENCH_LABEL=<backend> (names the result file bench/results/engine-<label>.json)
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';

import { Engine } from '../services/engine/Engine';
import { repoRoot } from '../services/engine/loadAddon';
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

async function ours(path: string): Promise<{ pp: number; tg: number }> {
  const engine = await Engine.load({ path, threads, parallel: 1, contextSize: PP + TG + 16, batchSize: PP, nGpuLayers: ngl });
  try {
    const vocab = engine.info.nVocab;
    const pp: number[] = [];
    const tg: number[] = [];
    for (let r = 0; r < reps + 1; r++) {
      // random prompt tokens like llama-bench; the first repetition warms up and is not counted
      const prompt = Array.from({ length: PP }, (_, i) => 3 + ((i * 7919 + r * 104729) % (vocab - 3)));
      const p = await final(engine.generate({ promptTokens: prompt, maxTokens: 1, sampling: { temperature: 0 } }));
      const t = await final(engine.generate({ promptTokens: [1], maxTokens: TG, sampling: { temperature: 0, grammar: undefined } }));
      if (r === 0) continue;
      pp.push(p.timings.prefillTokensPerSecond);
      if (t.completionTokens === TG) tg.push(t.timings.decodeTokensPerSecond);
    }
    return { pp: median(pp), tg: tg.length ? median(tg) : NaN };
  } finally {
    await engine.close();
  }
}

async function llamaBench(path: string): Promise<{ pp: number; tg: number }> {
  const bin = join(repoRoot(), 'build', 'llama', 'patched', `build-${backend}`, 'bin', 'llama-bench');
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
  const results = [];
  for (const preset of presets) {
    const path = await benchModel(preset);
    const stock = await llamaBench(path);
    const mine = await ours(path);
    const peer = await nodeLlamaCpp(path);
    results.push({ nodeLlamaCpp: peer, model: basename(preset, '.gguf'), path, stock, ours: mine, ratio: { pp: mine.pp / stock.pp, tg: mine.tg / stock.tg } });
  }
  console.log(`\nbench:engine — backend ${backend}, ${threads} threads, ngl ${ngl}, pp${PP} / tg${TG}, median of ${reps} (${cpus()[0]?.model ?? 'cpu'})\n`);
  printTable(
    ['model', 'llama-bench pp t/s', 'moeflash pp t/s', 'pp ratio', 'llama-bench tg t/s', 'moeflash tg t/s', 'tg ratio', 'node-llama-cpp pp / tg t/s'],
    results.map((r) => [r.model, r.stock.pp, r.ours.pp, r.ratio.pp, r.stock.tg, r.ours.tg, r.ratio.tg, peerCell(r.nodeLlamaCpp)]),
  );
  const out = writeResult(`engine-${process.env.BENCH_LABEL ?? backend}`, { date: new Date().toISOString(), backend, threads, ngl, reps, cpu: cpus()[0]?.model, results });
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
