/**
 * A child process that checks the expert slot cache on whatever backend its addon was built for (the addon is
 * chosen per process by MOEFLASH_BACKEND): greedy bytes of our engine with the cache at each slot count, every layer
 * offloaded, against stock llama-completion with every layer offloaded on the same ggml libraries
 * (MOEFLASH_STOCK_GGML_DIR). Prints one JSON object on stdout. Used by the Vulkan (lavapipe) test.
 * Usage: node dist/harness/expertCacheFidelityChild.js '{"model": ..., "slots": [2, 4], "prompts": [...]}'
 */
import { Engine } from '../services/engine/Engine';
import { collect } from './collect';
import { stockGreedyCompletion } from './stockLlama';

export interface CacheFidelityRequest {
  model: string;
  slots: number[];
  prompts: string[];
  nPredict: number;
  contextSize: number;
  threads: number;
}

export interface CacheFidelityRow {
  slots: number;
  /** ModelInfo.expertCache.path: how the cache resolves slots on this backend. */
  path: string;
  prompt: string;
  equal: boolean;
  hits: number;
  misses: number;
}

async function main(): Promise<void> {
  const request = JSON.parse(process.argv[2]) as CacheFidelityRequest;
  const { model, nPredict, contextSize, threads } = request;
  const stock = new Map<string, Buffer>();
  for (const prompt of request.prompts)
    stock.set(prompt, await stockGreedyCompletion({ model, prompt, nPredict, contextSize, threads, nGpuLayers: 99 }));
  const rows: CacheFidelityRow[] = [];
  for (const slots of request.slots) {
    const engine = await Engine.load({ path: model, nGpuLayers: 99, contextSize, threads, parallel: 1, expertCache: { slots } });
    try {
      for (const prompt of request.prompts) {
        const ours = await collect(engine.generate({ prompt, maxTokens: nPredict, sampling: { temperature: 0 } }));
        const counters = ours.final?.expertCache;
        rows.push({
          slots, path: engine.info.expertCache?.path ?? 'off', prompt,
          equal: engine.tokenBytes(ours.tokens).equals(stock.get(prompt)!),
          hits: counters ? counters.hits.reduce((a, b) => a + b, 0) : 0,
          misses: counters ? counters.misses.reduce((a, b) => a + b, 0) : 0,
        });
      }
    } finally {
      await engine.close();
    }
  }
  process.stdout.write(`${JSON.stringify({ rows })}\n`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
