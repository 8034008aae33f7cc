/** The expert cache's stderr lines of `moeflash generate` (its flags are entries of the engine option table). */
import type { ExpertCacheCounters, RequestExpertCache } from '../services/engine/types';

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
