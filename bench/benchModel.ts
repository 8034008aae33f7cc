import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { MADE_MODEL_FORMAT, makeModel } from '../services/engine/makeModel';
import { repoRoot } from '../services/engine/loadAddon';

/** A benchmark's model: an existing GGUF path as is, or a preset name generated once under build/bench-models. */
export async function benchModel(presetOrPath: string): Promise<string> {
  if (existsSync(presetOrPath)) return presetOrPath;
  const dir = join(repoRoot(), 'build', 'bench-models', MADE_MODEL_FORMAT);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${presetOrPath}-seed1.gguf`);
  if (!existsSync(path)) await makeModel(path, { preset: presetOrPath, seed: 1 });
  return path;
}

/** A named, shaped benchmark model generated once under build/bench-models (BENCH_PREFETCH_MODEL overrides). */
export async function shapedBenchModel(name: string, spec: Parameters<typeof makeModel>[1]): Promise<string> {
  if (process.env.BENCH_PREFETCH_MODEL) return process.env.BENCH_PREFETCH_MODEL;
  const dir = join(repoRoot(), 'build', 'bench-models', MADE_MODEL_FORMAT);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.gguf`);
  if (!existsSync(path)) {
    console.log(`generating ${path} ...`);
    await makeModel(path, spec);
  }
  return path;
}
