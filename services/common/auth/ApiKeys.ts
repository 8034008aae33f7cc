import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from '../errors';

/** Shortest key accepted: shorter ones are guessable. */
export const MIN_API_KEY_LENGTH = 16;

export interface ApiKeySources {
  /** A file of keys, one a line; blank lines and lines starting with '#' are skipped (MOEFLASH_API_KEYS_FILE). */
  file?: string;
  /** Keys given directly (MOEFLASH_API_KEYS, comma-separated). */
  keys?: readonly string[];
}

/**
 * The bearer tokens a server accepts. Only SHA-256 digests are kept; a presented token is hashed and compared with
 * every digest by crypto.timingSafeEqual, without stopping at a match, so the time taken says nothing about which
 * key (or how much of one) matched.
 */
export class ApiKeys {
  private readonly digests: Buffer[];

  private constructor(keys: readonly string[]) {
    this.digests = keys.map(digest);
  }

  get size(): number {
    return this.digests.length;
  }

  /** Keys from a file and/or a list; undefined when neither source is configured (authentication off). */
  static load(sources: ApiKeySources): ApiKeys | undefined {
    if (sources.file === undefined && sources.keys === undefined) return undefined;
    const keys: string[] = [...(sources.keys ?? [])];
    if (sources.file !== undefined) {
      let text: string;
      try {
        text = readFileSync(sources.file, 'utf8');
      } catch (err) {
        throw InvalidArgumentError.field('MOEFLASH_API_KEYS_FILE', `cannot read ${sources.file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      keys.push(...text.split('\n').map((l) => l.trim()).filter((l) => l.length > 0 && !l.startsWith('#')));
    }
    return ApiKeys.of(keys);
  }

  /** Validated keys: at least one, each at least MIN_API_KEY_LENGTH printable ASCII characters. */
  static of(keys: readonly string[]): ApiKeys {
    if (keys.length === 0) throw InvalidArgumentError.field('MOEFLASH_API_KEYS', 'authentication is configured but lists no key');
    keys.forEach((k, i) => {
      if (k.length < MIN_API_KEY_LENGTH || !/^[\x21-\x7e]+$/.test(k))
        throw InvalidArgumentError.field('MOEFLASH_API_KEYS', `key ${i + 1} must be at least ${MIN_API_KEY_LENGTH} printable ASCII characters without spaces`);
    });
    return new ApiKeys(keys);
  }

  /** Whether `token` is one of the keys; constant time in the token's content and the matching key's position. */
  accepts(token: string): boolean {
    const presented = digest(token);
    let match = false;
    for (const d of this.digests) match = timingSafeEqual(presented, d) || match;
    return match;
  }
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest();
}
