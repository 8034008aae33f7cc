import type { ExpertCacheUse, RequestSummary } from '../../gen/moeflash/v1/inference';
import type { GenerationFinal } from '../engine/types';

/** Who the generation was for: what the final record does not say itself. */
export interface GenerationIdentity {
  requestId: string;
  model: string;
  traceId: string;
}

/**
 * The ring entry for a generation's final record. The engine's per-request expert-cache counters (`expertCache`:
 * hits and misses per layer, bytes copied, copy and stall ms) are optional: engines without a slot cache, and
 * engines older than the field, leave it out, and the summary then has no expert_cache.
 */
export function toRequestSummary(final: GenerationFinal, who: GenerationIdentity, finishedUnixMs = Date.now()): RequestSummary {
  const t = final.timings;
  return {
    ...who,
    finishedUnixMs,
    finishReason: final.finishReason,
    usage: { promptTokens: final.promptTokens, completionTokens: final.completionTokens },
    timings: {
      queueMs: t.queueMs,
      ttftMs: t.ttftMs,
      prefillMs: t.prefillMs,
      decodeMs: t.decodeMs,
      decodeTokensPerSecond: t.decodeTokensPerSecond,
      prefillTokensPerSecond: t.prefillTokensPerSecond,
    },
    expertsPerLayer: final.expertsPerLayer ?? [],
    expertCache: expertCacheOf((final as { expertCache?: unknown }).expertCache),
  };
}

/** Per-layer counts as a plain array (the addon may hand over a typed array); undefined for anything else. */
function countsOf(v: unknown): number[] | undefined {
  const list = ArrayBuffer.isView(v) && !(v instanceof DataView) ? Array.from(v as unknown as ArrayLike<number>) : v;
  return Array.isArray(list) && list.every((n) => typeof n === 'number') ? list : undefined;
}

const numberOr0 = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** The engine's optional `expertCache` record as the wire message; undefined when absent or not of that shape. */
function expertCacheOf(value: unknown): ExpertCacheUse | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const hits = countsOf(v.hits);
  const misses = countsOf(v.misses);
  if (!hits || !misses) return undefined;
  return { hits, misses, bytesCopied: numberOr0(v.bytesCopied), copyMs: numberOr0(v.copyMs), stallMs: numberOr0(v.stallMs) };
}
