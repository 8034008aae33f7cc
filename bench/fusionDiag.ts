/** Device diagnosis (scripts/device/fusion-diag.sh): 3 greedy tokens with the expert cache off or on, for a GGML_CUDA_DEBUG build
 * whose fusion log the script compares. */
import { Engine } from '../services/engine/Engine';
import { collect } from '../test/helpers/collect';

async function main(): Promise<void> {
  const [model, prompt, slots] = process.argv.slice(2);
  const e = await Engine.load({ path: model, nGpuLayers: 99, contextSize: 256, threads: 4, parallel: 1, warmup: false, expertCache: slots ? { slots: Number(slots) } : undefined });
  process.stderr.write('=== GENERATE START\n');
  const o = await collect(e.generate({ prompt, maxTokens: 3, sampling: { temperature: 0 } }));
  process.stderr.write(`=== GENERATE END tokens ${o.tokens.join(',')}\n`);
  await e.close();
}
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
