import { realpathSync } from 'node:fs';
import { basename, resolve } from 'node:path';

import { modelShardPaths } from './modelShardPaths';

/** FNV-1a, 32 bits, as 8 hex digits. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(text)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/**
 * The default hint channel of a model: `moeflash-<file name>-<hash of its real path>`, a file under /dev/shm. The
 * engine (writer, in the inference service) and the expert-store (reader) derive the same name from the model path
 * with no coordination, so either can start first and either can restart: the one definition both services import. A split model is named after its first shard.
 */
export function hintChannelName(modelPath: string): string {
  const first = modelShardPaths(resolve(modelPath))[0];
  let real = first;
  try {
    real = realpathSync(first);
  } catch {
    // not there (yet): the resolved path still names it
  }
  const stem = basename(real).replace(/\.gguf$/i, '').replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^\.+/, '').slice(0, 48);
  return `moeflash-${stem || 'model'}-${fnv1a(real)}`;
}
