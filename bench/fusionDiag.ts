/** Device diagnosis (scripts/device/fusion-diag.sh, cuda-cache-diag.sh): greedy tokens (default 3) with the expert cache
 * off or on, for a build whose debug output (fusion log, router dump) the script compares.
 * Usage: node dist/bench/fusionDiag.js MODEL PROMPT [SLOTS] [TOKENS]
 * DIAG_FIDELITY_SETUP=1 loads the engine as bench/cacheFidelityDiag.ts does (context 1024, every core, warm-up). */
import { availableParallelism } from 'node:os';

import { Engine } from '../services/engine/Engine';
import { collect } from '../test/helpers/collect';

async function main(): Promise<void> {
  const [model, prompt, slots, tokens] = process.argv.slice(2);
  const asFidelity = process.env.DIAG_FIDELITY_SETUP === '1';
  const e = await Engine.load({
    path: model, nGpuLayers: 99, parallel: 1, expertCache: slots ? { slots: Number(slots) } : undefined,
    ...(asFidelity ? { contextSize: 1024, threads: availableParallelism() } : { contextSize: 256, threads: 4, warmup: false }),
  });
  process.stderr.write('=== GENERATE START\n');
  const o = await collect(e.generate({ prompt, maxTokens: Number(tokens ?? 3), sampling: { temperature: 0 } }));
  process.stderr.write(`=== GENERATE END tokens ${o.tokens.join(',')}\n`);
  await e.close();
}
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
