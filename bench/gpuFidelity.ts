/**
 * Fidelity on a GPU backend (run by scripts/device/gpu-checks.sh): greedy bytes of our engine vs stock
 * llama-completion built from the same source, both with all layers offloaded (-ngl 99) and with experts kept on
 * the CPU (-ncmoe); and with the expert slot cache at K (experts per token), N/4, N/2 and N slots (and N/4, N/2 with
 * predictive prefetch) against stock with every layer offloaded, single stream and 4 concurrent streams.
 * Prints a table, writes bench/results/fidelity-<backend>.json, exits 1 on any mismatch.
 * Usage: node dist/bench/gpuFidelity.js MODEL.gguf [MODEL.gguf ...]
 */
import { availableParallelism } from 'node:os';
import { basename } from 'node:path';

import { Engine } from '../services/engine/Engine';
import { collect } from '../test/helpers/collect';
import { stockGreedyCompletion } from '../test/helpers/stockLlama';
import { printTable, writeResult } from './benchTable';

const PROMPTS = ['The quick brown fox', 'Once upon a time, in a land far away,', 'def fibonacci(n):'];
const LONG_PROMPT = Array.from({ length: 12 }, (_, i) => `Paragraph ${i}: the expert cache keeps hot experts resident.`).join(' ');
const CONCURRENT = [...PROMPTS, 'Hello world'];
const N_PREDICT = 48;
const CONTEXT = 1024;

async function main(): Promise<void> {
  const backend = process.env.MOEFLASH_BACKEND ?? 'cpu';
  const threads = availableParallelism();
  const rows: Row[] = [];
  for (const model of process.argv.slice(2)) {
    for (const [placement, nCpuMoe] of [['ngl 99', 0], ['ngl 99, ncmoe 2', 2]] as const) {
      const engine = await Engine.load({ path: model, nGpuLayers: 99, nCpuMoe, contextSize: CONTEXT, threads, parallel: 1 });
      try {
        for (const prompt of PROMPTS) {
          const ours = await collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }));
          const stock = await stockGreedyCompletion({ model, prompt, nPredict: N_PREDICT, contextSize: CONTEXT, threads, nCpuMoe, nGpuLayers: 99 });
          rows.push({ model: basename(model), placement, prompt, equal: engine.tokenBytes(ours.tokens).equals(stock), tokens: ours.tokens.length });
        }
      } finally {
        await engine.close();
      }
    }
  }
  for (const model of process.argv.slice(2)) rows.push(await concurrentWithoutCache(model, threads), ...(await cacheRows(model, threads)));
  console.log(`\nfidelity on ${backend}: our engine vs stock llama-completion, greedy, ${N_PREDICT} tokens\n`);
  printTable(['model', 'placement', 'prompt', 'tokens', 'identical'], rows.map((r) => [r.model, r.placement, r.prompt, r.tokens, r.equal ? 'yes' : 'NO']));
  console.log(`\nwritten ${writeResult(`fidelity-${backend}`, { date: new Date().toISOString(), backend, rows })}`);
  if (rows.some((r) => !r.equal)) process.exitCode = 1;
}

type Row = { model: string; placement: string; prompt: string; equal: boolean; tokens: number };

/** The expert cache at K, N/4, N/2 and N slots against stock with every layer (and expert) on the GPU. */
async function cacheRows(model: string, threads: number): Promise<Row[]> {
  const rows: Row[] = [];
  const stock = new Map<string, Buffer>();
  for (const prompt of new Set([...PROMPTS, LONG_PROMPT, ...CONCURRENT]))
    stock.set(prompt, await stockGreedyCompletion({ model, prompt, nPredict: N_PREDICT, contextSize: CONTEXT, threads, nGpuLayers: 99 }));
  const probe = await Engine.load({ path: model, contextSize: 256, threads, parallel: 1, warmup: false });
  const { nExpert, nExpertUsed } = probe.info;
  await probe.close();
  const configs = [['K', nExpertUsed, false], ['N/4', nExpert / 4, false], ['N/2', nExpert / 2, false], ['N', nExpert, false],
    ['N/4', nExpert / 4, true], ['N/2', nExpert / 2, true]] as const;
  for (const [name, slots, prefetch] of configs) {
    const placement = `ngl 99, cache ${name}=${Math.max(nExpertUsed, slots)}${prefetch ? ' + prefetch' : ''}`;
    const engine = await Engine.load({ path: model, nGpuLayers: 99, contextSize: CONTEXT, threads, parallel: 4, expertCache: { slots: Math.max(nExpertUsed, slots), prefetch } });
    try {
      for (const prompt of [...PROMPTS, LONG_PROMPT]) {
        const ours = await collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }));
        rows.push({ model: basename(model), placement, prompt: prompt.slice(0, 40), equal: engine.tokenBytes(ours.tokens).equals(stock.get(prompt)!), tokens: ours.tokens.length });
      }
      const outs = await Promise.all(CONCURRENT.map((prompt) => collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }))));
      const equal = outs.every((o, i) => engine.tokenBytes(o.tokens).equals(stock.get(CONCURRENT[i])!));
      rows.push({ model: basename(model), placement, prompt: '4 concurrent streams', equal, tokens: sum(outs.map((o) => o.tokens.length)) });
    } finally {
      await engine.close();
    }
  }
  return rows;
}

/** The control for the cache's concurrent rows: 4 concurrent streams with the cache off. */
async function concurrentWithoutCache(model: string, threads: number): Promise<Row> {
  const engine = await Engine.load({ path: model, nGpuLayers: 99, contextSize: CONTEXT, threads, parallel: 4 });
  try {
    const outs = await Promise.all(CONCURRENT.map((prompt) => collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }))));
    const stock = await Promise.all(CONCURRENT.map((prompt) => stockGreedyCompletion({ model, prompt, nPredict: N_PREDICT, contextSize: CONTEXT, threads, nGpuLayers: 99 })));
    const equal = outs.every((o, i) => engine.tokenBytes(o.tokens).equals(stock[i]));
    return { model: basename(model), placement: 'ngl 99 (no cache)', prompt: '4 concurrent streams', equal, tokens: sum(outs.map((o) => o.tokens.length)) };
  } finally {
    await engine.close();
  }
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
