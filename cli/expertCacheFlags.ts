/** The expert cache flags shared by `generate` and `serve`-side model options: slots, memory budget, policy, prefetch. */
import { InvalidArgumentError } from '../services/common/errors';
import type { ExpertCacheCounters, ExpertCacheOptions, RequestExpertCache } from '../services/engine/types';
import { parseByteSize } from '../services/common/parseByteSize';
import { parseNumber } from './parseNumber';

export const EXPERT_CACHE_FLAGS = {
  'expert-cache-slots': { type: 'string' },
  'expert-cache-mem': { type: 'string' },
  'expert-cache-policy': { type: 'string' },
  'expert-cache-prefetch': { type: 'boolean' },
} as const;

/** undefined when no expert cache flag is given; `--expert-cache-slots auto` sizes from free device memory. */
export function parseExpertCacheFlags(values: {
  'expert-cache-slots'?: string;
  'expert-cache-mem'?: string;
  'expert-cache-policy'?: string;
  'expert-cache-prefetch'?: boolean;
}): ExpertCacheOptions | undefined {
  const slots = values['expert-cache-slots'];
  const mem = values['expert-cache-mem'];
  const policy = values['expert-cache-policy'];
  const prefetch = values['expert-cache-prefetch'];
  if (slots === undefined && mem === undefined) {
    if (policy !== undefined) throw InvalidArgumentError.field('--expert-cache-policy', 'needs --expert-cache-slots or --expert-cache-mem');
    if (prefetch) throw InvalidArgumentError.field('--expert-cache-prefetch', 'needs --expert-cache-slots or --expert-cache-mem');
    return undefined;
  }
  if (policy !== undefined && policy !== 'lru' && policy !== 'lru2')
    throw InvalidArgumentError.field('--expert-cache-policy', `expected lru or lru2, got '${policy}'`);
  return {
    slots: slots === undefined || slots === 'auto' ? undefined : parseNumber('expert-cache-slots', slots, true),
    memBytes: mem === undefined ? undefined : parseByteSize('--expert-cache-mem', mem),
    policy,
    prefetch: prefetch || undefined,
  };
}

/** One stderr line: hit rate, bytes copied per generated token, copy and stall time. */
export function formatExpertCacheLine(cache: RequestExpertCache, completionTokens: number): string {
  const hits = cache.hits.reduce((a, b) => a + b, 0);
  const misses = cache.misses.reduce((a, b) => a + b, 0);
  const rate = hits + misses > 0 ? (100 * hits) / (hits + misses) : 0;
  const perToken = completionTokens > 0 ? cache.bytesCopied / completionTokens : 0;
  return (
    `expert_cache hit_rate=${rate.toFixed(1)}% hits=${hits} misses=${misses} ` +
    `mib_copied_per_token=${(perToken / 1048576).toFixed(2)} copy_ms=${cache.copyMs.toFixed(1)} stall_ms=${cache.stallMs.toFixed(1)}`
  );
}

/** One stderr line for predictive prefetch: prediction accuracy, speculative copies that were used, wasted bytes. */
export function formatPrefetchLine(total: ExpertCacheCounters): string {
  const pct = (part: number, whole: number) => (whole > 0 ? ((100 * part) / whole).toFixed(1) : '0.0');
  const wasted = total.prefetched > 0 ? (total.bytesPrefetched * (total.prefetched - total.prefetchedUsed)) / total.prefetched : 0;
  return (
    `expert_prefetch accuracy=${pct(total.predictedUsed, total.predicted)}% predicted=${total.predicted} ` +
    `prefetched=${total.prefetched} useful=${pct(total.prefetchedUsed, total.prefetched)}% ` +
    `mib_prefetched=${(total.bytesPrefetched / 1048576).toFixed(1)} mib_wasted=${(wasted / 1048576).toFixed(1)}`
  );
}
