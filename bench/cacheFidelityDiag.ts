/**
 * Device diagnosis of the CUDA fidelity gap of the expert cache: which configuration makes a single stream
 * differ from stock llama-completion -ngl 99 — the cache, or the engine's 4 sequences (KV streams) around it.
 * Usage: node dist/bench/cacheFidelityDiag.js MODEL.gguf
 */
import { availableParallelism } from 'node:os';

import { Engine } from '../services/engine/Engine';
import { collect } from '../test/helpers/collect';
import { stockGreedyCompletion } from '../test/helpers/stockLlama';
import { printTable } from './benchTable';

const PROMPTS = ['The quick brown fox', 'Once upon a time, in a land far away,', 'def fibonacci(n):',
  Array.from({ length: 12 }, (_, i) => `Paragraph ${i}: the expert cache keeps hot experts resident.`).join(' ')];
const N_PREDICT = 48;
const CONTEXT = 1024;

async function main(): Promise<void> {
  const model = process.argv[2];
  const threads = availableParallelism();
  // DIAG_NO_WARMUP=1: neither engine runs its warm-up decode before the prompts
  const noWarmup = process.env.DIAG_NO_WARMUP === '1';
  const stock = await Promise.all(PROMPTS.map((prompt) =>
    stockGreedyCompletion({ model, prompt, nPredict: N_PREDICT, contextSize: CONTEXT, threads, nGpuLayers: 99, noWarmup })));
  const probe = await Engine.load({ path: model, contextSize: 256, threads, parallel: 1, warmup: false });
  const { nExpert } = probe.info;
  await probe.close();
  const rows: (string | number)[][] = [];
  const configs: [number, number, 'pinned' | 'mmap' | undefined, 'none' | undefined][] = [
    [1, 0, undefined, undefined], [1, 0, undefined, 'none'], [4, 0, undefined, undefined],
    [1, nExpert, undefined, undefined], [1, nExpert, 'mmap', undefined], [1, nExpert / 2, 'mmap', undefined], [1, nExpert / 2, undefined, undefined]];
  // DIAG_QUICK=1: cache off and one slot count (DIAG_SLOTS, default a slot for every expert) only, so that several
  // settings fit one device call
  if (process.env.DIAG_QUICK === '1') {
    configs.splice(0, configs.length, [1, 0, undefined, undefined], [1, Number(process.env.DIAG_SLOTS ?? nExpert), undefined, undefined]);
  }
  for (const [parallel, slots, hostMemory, loadMode] of configs) {
    const engine = await Engine.load({ path: model, nGpuLayers: 99, contextSize: CONTEXT, threads, parallel, loadMode, warmup: !noWarmup,
      expertCache: slots ? { slots, hostMemory } : undefined });
    try {
      const same: string[] = [];
      for (const [i, prompt] of PROMPTS.entries()) {
        const ours = engine.tokenBytes((await collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }))).tokens);
        const at = firstDifference(ours, stock[i]);
        same.push(at < 0 ? 'same' : `differs@${at}`);
      }
      rows.push([parallel, slots || 'off', hostMemory ?? '', loadMode ?? '', ...same]);
    } finally {
      await engine.close();
    }
  }
  printTable(['parallel', 'cache slots', 'experts', 'load', ...PROMPTS.map((p) => p.slice(0, 14))], rows);
}

function firstDifference(a: Buffer, b: Buffer): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : Math.min(a.length, b.length);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
