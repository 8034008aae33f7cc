/**
 * Fidelity on a GPU backend (run by scripts/device/gpu-checks.sh): greedy bytes of our engine vs stock
 * llama-completion built from the same source, both with all layers offloaded (-ngl 99) and with experts kept on
 * the CPU (-ncmoe). Prints a table, writes bench/results/fidelity-<backend>.json, exits 1 on any mismatch.
 * Usage: node dist/bench/gpuFidelity.js MODEL.gguf [MODEL.gguf ...]
 */
import { availableParallelism } from 'node:os';
import { basename } from 'node:path';

import { Engine } from '../services/engine/Engine';
import { collect } from '../test/helpers/collect';
import { stockGreedyCompletion } from '../test/helpers/stockLlama';
import { printTable, writeResult } from './benchTable';

const PROMPTS = ['The quick brown fox', 'Once upon a time, in a land far away,', 'def fibonacci(n):'];
const N_PREDICT = 48;
const CONTEXT = 1024;

async function main(): Promise<void> {
  const backend = process.env.MOEFLASH_BACKEND ?? 'cpu';
  const threads = availableParallelism();
  const rows: { model: string; placement: string; prompt: string; equal: boolean; tokens: number }[] = [];
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
  console.log(`\nfidelity on ${backend}: our engine vs stock llama-completion, greedy, ${N_PREDICT} tokens\n`);
  printTable(['model', 'placement', 'prompt', 'tokens', 'identical'], rows.map((r) => [r.model, r.placement, r.prompt, r.tokens, r.equal ? 'yes' : 'NO']));
  console.log(`\nwritten ${writeResult(`fidelity-${backend}`, { date: new Date().toISOString(), backend, rows })}`);
  if (rows.some((r) => !r.equal)) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
