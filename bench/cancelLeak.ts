import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../services/engine/loadAddon';
import { runCancelLeak } from '../harness/cancelLeak';

/**
 * The long cancel-leak run: `node dist/bench/cancelLeak.js [cancels=1000] [warmup=200] [callsPerSecond=30, 0: unpaced]`. Mid-stream cancels
 * through a real router + inference on the tiny model (real engine, parallel 4, threads 2), loopback only; prints
 * the result and writes bench/results/cancel-leak.json. Exits 1 if a sequence leaked or RSS grew 5% or more.
 */
async function main(): Promise<void> {
  const cancels = Number(process.argv[2] ?? 1000);
  const warmup = Number(process.argv[3] ?? 200);
  const maxCallsPerSecond = process.argv[4] === undefined ? 30 : Number(process.argv[4]) || undefined;
  const r = await runCancelLeak({ cancels, warmup, concurrency: 6, cancelAfterChunks: 3, settleTimeoutMs: 30_000, maxCallsPerSecond });
  const ok = r.activeSequencesAfter === 0 && r.queuedRequestsAfter === 0 && r.rssGrowthPercent < 5;
  console.log(JSON.stringify({ ...r, ok }, null, 2));
  const dir = join(repoRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'cancel-leak.json'), JSON.stringify({ date: new Date().toISOString(), maxCallsPerSecond, ...r, ok }, null, 2) + '\n');
  process.exitCode = ok ? 0 : 1;
}

void main();
