import type { RequestSummary } from '../../gen/moeflash/v1/inference';
import type { GenerationFinal } from '../engine/types';
import { toTimingsMessage } from './toTimingsMessage';

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
  return {
    ...who,
    finishedUnixMs,
    finishReason: final.finishReason,
    usage: { promptTokens: final.promptTokens, completionTokens: final.completionTokens },
    timings: toTimingsMessage(final.timings),
    expertsPerLayer: final.expertsPerLayer ?? [],
    expertCache: final.expertCache,
  };
}
