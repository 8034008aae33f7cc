import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { MADE_MODEL_FORMAT, makeModel } from '../services/engine/makeModel';
import { repoRoot } from '../services/engine/loadAddon';

export type TestPreset = 'tiny' | 'small';

/**
 * A generated model for tests, made once and kept under build/test-models (deterministic for the seed, so a
 * cached file is the same file a fresh run would write).
 */
export async function testModel(preset: TestPreset = 'tiny', seed = 1): Promise<string> {
  const dir = join(repoRoot(), 'build', 'test-models', MADE_MODEL_FORMAT);
  const path = join(dir, `${preset}-seed${seed}.gguf`);
  if (!existsSync(path)) {
    mkdirSync(dir, { recursive: true });
    await makeModel(path, { preset, seed });
  }
  return path;
}
