import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

const RELATIVE = path.join('gen', 'descriptor.binpb');

/**
 * The FileDescriptorSet of proto/ that `npm run gen` writes to gen/descriptor.binpb, for server reflection.
 * Found by walking up from this file (it runs from dist/services/common or services/common), or from
 * MOEFLASH_DESCRIPTOR_SET.
 */
export function loadDescriptorSet(explicit = process.env.MOEFLASH_DESCRIPTOR_SET): Uint8Array {
  if (explicit) return readFileSync(explicit);
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, RELATIVE);
    if (existsSync(candidate)) return readFileSync(candidate);
    if (path.dirname(dir) === dir) break;
  }
  throw new Error(`${RELATIVE} not found above ${__dirname}; run \`npm run gen\` (or set MOEFLASH_DESCRIPTOR_SET)`);
}
