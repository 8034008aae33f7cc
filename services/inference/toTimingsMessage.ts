import type { GenerationTimings } from '../engine/types';

/** The engine's timings as the wire message (GenerateResponse.complete and the recent-request summaries). */
export function toTimingsMessage(t: GenerationTimings) {
  return {
    queueMs: t.queueMs,
    ttftMs: t.ttftMs,
    prefillMs: t.prefillMs,
    decodeMs: t.decodeMs,
    decodeTokensPerSecond: t.decodeTokensPerSecond,
    prefillTokensPerSecond: t.prefillTokensPerSecond,
    // The router's to fill in: the engine never sees its queue.
    routerQueueMs: 0,
    routerExpectedQueueMs: 0,
  };
}
