/**
 * npm run bench:cache:policy — hit rate of the expert cache's eviction policies (LRU, LRU-2, SLRU) on the same routing:
 * the synthetic trace with realistic locality (native/src/SyntheticRouting.h) replayed on a generated model, for
 * several slot budgets. Hit rates do not depend on the backend, so this runs on the CPU build.
 * Options (env): BENCH_MODEL=small (preset or path)  BENCH_TOKENS=256  BENCH_BUDGETS=0.125,0.25,0.5,0.75
 */
import { Engine } from '../services/engine/Engine';
import type { GenerationFinal } from '../services/engine/types';
import { benchModel } from './benchModel';
import { printTable, writeResult } from './benchTable';

const tokens = Number(process.env.BENCH_TOKENS ?? 256);
const budgets = (process.env.BENCH_BUDGETS ?? '0.125,0.25,0.5,0.75').split(',').map(Number);

async function hitRate(path: string, slots: number, policy: 'lru' | 'lru2' | 'slru'): Promise<number> {
  const engine = await Engine.load({ path, threads: 2, parallel: 1, contextSize: tokens + 16, expertCache: { slots, policy, syntheticRouting: { seed: 7 } } });
  try {
    let final: GenerationFinal | undefined;
    for await (const e of engine.generate({ promptTokens: [1], maxTokens: tokens, sampling: { temperature: 0 } })) if (e.type === 'final') final = e;
    const c = final!.expertCache!;
    const hits = c.hits.reduce((a, b) => a + b, 0);
    const misses = c.misses.reduce((a, b) => a + b, 0);
    return hits / (hits + misses);
  } finally {
    await engine.close();
  }
}

async function main(): Promise<void> {
  const path = await benchModel(process.env.BENCH_MODEL ?? 'small');
  const probe = await Engine.load({ path, threads: 1, parallel: 1, contextSize: 64, warmup: false });
  const { nExpert, nExpertUsed } = probe.info;
  await probe.close();
  const rows = [];
  for (const budget of budgets) {
    const slots = Math.max(nExpertUsed, Math.round(budget * nExpert));
    rows.push({
      budget, slots, lru: await hitRate(path, slots, 'lru'), lru2: await hitRate(path, slots, 'lru2'), slru: await hitRate(path, slots, 'slru'),
    });
  }
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  printTable(['budget', 'slots', 'LRU hit rate', 'LRU-2 hit rate', 'SLRU hit rate'],
    rows.map((r) => [`${r.budget * 100}%`, r.slots, pct(r.lru), pct(r.lru2), pct(r.slru)]));
  writeResult('cache-policy', { model: path, tokens, nExpert, nExpertUsed, rows, date: new Date().toISOString() });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
