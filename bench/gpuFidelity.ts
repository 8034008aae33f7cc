/**
 * Fidelity on a GPU backend (run by scripts/device/gpu-checks.sh): greedy bytes of our engine vs stock
 * llama-completion built from the same source, both with all layers offloaded (-ngl 99) and with experts kept on
 * the CPU (-ncmoe); and with the expert slot cache at K (experts per token), N/4, N/2 and N slots (and N/4, N/2 with
 * predictive prefetch) against stock with every layer offloaded, single stream and 4 concurrent streams.
 * Four concurrent streams are decoded in batches of up to 4 tokens, whose kernels on a GPU need not give the bits of
 * a single stream (the control row, cache off against stock single-stream, shows it); the cache's concurrent rows
 * are therefore compared with the same 4 streams through our engine with the cache off (same batches, stock
 * libllama path), the reference column says which. Both run 512-token batches: with the cache the engine's default
 * ubatch is 2048 tokens, whose worst-case compute buffer lays tensors out differently, and on CUDA tensor addresses
 * decide whether the MoE router of a multi-row ubatch is fused (docs/EXPERT_CACHE.md, patch 0007).
 * Prints a table, writes bench/results/fidelity-<backend>.json, exits 1 on any mismatch but the control's.
 * Usage: node dist/bench/gpuFidelity.js MODEL.gguf [MODEL.gguf ...]
 */
import { availableParallelism } from 'node:os';
import { basename } from 'node:path';

import { Engine } from '../services/engine/Engine';
import { collect } from '../harness/collect';
import { stockGreedyCompletion } from '../harness/stockLlama';
import { printTable, writeResult } from './benchTable';

const PROMPTS = ['The quick brown fox', 'Once upon a time, in a land far away,', 'def fibonacci(n):'];
const LONG_PROMPT = Array.from({ length: 12 }, (_, i) => `Paragraph ${i}: the expert cache keeps hot experts resident.`).join(' ');
const CONCURRENT = [...PROMPTS, 'Hello world'];
const N_PREDICT = 48;
/** The batch of the concurrent rows and their reference: the engine's default without the cache. */
const REFERENCE_BATCH = 512;
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
          rows.push({ model: basename(model), placement, prompt, reference: STOCK, equal: engine.tokenBytes(ours.tokens).equals(stock), tokens: ours.tokens.length });
        }
      } finally {
        await engine.close();
      }
    }
  }
  for (const model of process.argv.slice(2)) {
    const control = await concurrentWithoutCache(model, threads);
    rows.push(control.row, ...(await cacheRows(model, threads, control.outputs)));
  }
  console.log(`\nfidelity on ${backend}: our engine vs stock llama-completion, greedy, ${N_PREDICT} tokens\n`);
  printTable(['model', 'placement', 'prompt', 'reference', 'tokens', 'identical'],
    rows.map((r) => [r.model, r.placement, r.prompt, r.reference, r.tokens, r.equal ? 'yes' : r.control ? 'no (control)' : 'NO']));
  // MOEFLASH_RECORD_ROUTING changes the engine's graphs (the routing becomes a graph output): say which ran
  const recordRouting = process.env.MOEFLASH_RECORD_ROUTING;
  const name = `fidelity-${backend}${recordRouting === '1' ? '-record-routing' : ''}`;
  console.log(`\nwritten ${writeResult(name, { date: new Date().toISOString(), backend, recordRouting, rows })}`);
  if (rows.some((r) => !r.equal && !r.control)) process.exitCode = 1;
}

const STOCK = 'stock llama-completion';
const CACHE_OFF_BATCHED = 'ours, cache off, same 4 streams';

type Row = { model: string; placement: string; prompt: string; reference: string; equal: boolean; tokens: number; control?: boolean };

/** The expert cache at K, N/4, N/2 and N slots against stock with every layer (and expert) on the GPU. */
async function cacheRows(model: string, threads: number, concurrentWithoutCacheOutputs: Buffer[]): Promise<Row[]> {
  const rows: Row[] = [];
  const stock = new Map<string, Buffer>();
  for (const prompt of [...PROMPTS, LONG_PROMPT])
    stock.set(prompt, await stockGreedyCompletion({ model, prompt, nPredict: N_PREDICT, contextSize: CONTEXT, threads, nGpuLayers: 99 }));
  const probe = await Engine.load({ path: model, contextSize: 256, threads, parallel: 1, warmup: false });
  const { nExpert, nExpertUsed } = probe.info;
  await probe.close();
  const configs = [['K', nExpertUsed, false], ['N/4', nExpert / 4, false], ['N/2', nExpert / 2, false], ['N', nExpert, false],
    ['N/4', nExpert / 4, true], ['N/2', nExpert / 2, true]] as const;
  for (const [name, slots, prefetch] of configs) {
    const placement = `ngl 99, cache ${name}=${Math.max(nExpertUsed, slots)}${prefetch ? ' + prefetch' : ''}`;
    const load = (batchSize?: number) => Engine.load({ path: model, nGpuLayers: 99, contextSize: CONTEXT, threads, parallel: 4, batchSize,
      expertCache: { slots: Math.max(nExpertUsed, slots), prefetch } });
    const engine = await load();
    try {
      for (const prompt of [...PROMPTS, LONG_PROMPT]) {
        const ours = await collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }));
        rows.push({ model: basename(model), placement, prompt: prompt.slice(0, 40), reference: STOCK, equal: engine.tokenBytes(ours.tokens).equals(stock.get(prompt)!), tokens: ours.tokens.length });
      }
    } finally {
      await engine.close();
    }
    const batched = await load(REFERENCE_BATCH);
    try {
      const outs = await Promise.all(CONCURRENT.map((prompt) => collect(batched.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }))));
      const equal = outs.every((o, i) => batched.tokenBytes(o.tokens).equals(concurrentWithoutCacheOutputs[i]));
      rows.push({ model: basename(model), placement, prompt: '4 concurrent streams', reference: CACHE_OFF_BATCHED, equal, tokens: sum(outs.map((o) => o.tokens.length)) });
    } finally {
      await batched.close();
    }
  }
  return rows;
}

/** The reference for the cache's concurrent rows: 4 concurrent streams with the cache off (and, as a control row,
 * how they compare with stock single-stream runs). */
async function concurrentWithoutCache(model: string, threads: number): Promise<{ row: Row; outputs: Buffer[] }> {
  const engine = await Engine.load({ path: model, nGpuLayers: 99, contextSize: CONTEXT, threads, parallel: 4, batchSize: REFERENCE_BATCH });
  try {
    const outs = await Promise.all(CONCURRENT.map((prompt) => collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }))));
    const stock = await Promise.all(CONCURRENT.map((prompt) => stockGreedyCompletion({ model, prompt, nPredict: N_PREDICT, contextSize: CONTEXT, threads, nGpuLayers: 99 })));
    const outputs = outs.map((o) => engine.tokenBytes(o.tokens));
    const equal = outputs.every((o, i) => o.equals(stock[i]));
    const row = { model: basename(model), placement: 'ngl 99 (no cache)', prompt: '4 concurrent streams', reference: STOCK, equal, tokens: sum(outs.map((o) => o.tokens.length)), control: true };
    return { row, outputs };
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
