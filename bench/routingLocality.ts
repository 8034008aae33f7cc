/**
 * Locality of a routing trace ([tokens][layers][used] expert ids), measured the way published studies of real MoE
 * routing report it, so that a synthetic trace can be checked against them: per-layer LRU hit rates at a few slot
 * counts (distinct experts of a token step, as the expert cache counts), the share of a layer's picks that the
 * previous token also picked, or one of the previous 8, and the LRU miss rate over the first 64 tokens and after.
 */
export interface RoutingLocality {
  /** slots per layer -> LRU hit rate */
  lruHitRate: Record<number, number>;
  reuseNextToken: number;
  reuseWithin8: number;
  /** LRU at `missSlots` slots: miss rate over the first 64 tokens, and after them */
  missSlots: number;
  missFirst64: number;
  missAfter64: number;
}

/** Qwen3-30B-A3B at batch 1 (128 experts, top-8), as published (shared/REFERENCE.md §3). */
export const QWEN3_30B_A3B_PUBLISHED: RoutingLocality = {
  lruHitRate: { 8: 0.424, 16: 0.647, 32: 0.81, 64: 0.918 },
  reuseNextToken: 0.45,
  reuseWithin8: 0.8,
  missSlots: 64,
  missFirst64: 0.138,
  missAfter64: 0.053,
};

function lru(trace: Int32Array, tokens: number, layers: number, used: number, slots: number, from = 0, to = tokens): { hits: number; lookups: number } {
  let hits = 0;
  let lookups = 0;
  for (let il = 0; il < layers; il++) {
    const lastUse = new Map<number, number>(); // resident expert -> last token it was used
    for (let t = 0; t < to; t++) {
      const picks = new Set(trace.subarray((t * layers + il) * used, (t * layers + il + 1) * used));
      for (const e of picks) {
        const hit = lastUse.has(e);
        if (t >= from) {
          hits += hit ? 1 : 0;
          lookups++;
        }
        if (!hit && lastUse.size >= slots) {
          let victim = -1;
          let oldest = Infinity;
          for (const [r, when] of lastUse) if (when < oldest && !picks.has(r)) [victim, oldest] = [r, when];
          lastUse.delete(victim);
        }
        lastUse.set(e, t);
      }
    }
  }
  return { hits, lookups };
}

export function routingLocality(trace: Int32Array, layers: number, used: number, slotCounts = [8, 16, 32, 64], missSlots = 64): RoutingLocality {
  const tokens = trace.length / (layers * used);
  const lruHitRate: Record<number, number> = {};
  for (const slots of slotCounts) {
    const { hits, lookups } = lru(trace, tokens, layers, used, slots);
    lruHitRate[slots] = hits / lookups;
  }
  let next = 0;
  let within8 = 0;
  let picks = 0;
  for (let il = 0; il < layers; il++) {
    for (let t = 1; t < tokens; t++) {
      const row = trace.subarray((t * layers + il) * used, (t * layers + il + 1) * used);
      for (const e of row) {
        const seenAt = (back: number) => t - back >= 0 && trace.subarray(((t - back) * layers + il) * used, ((t - back) * layers + il + 1) * used).includes(e);
        picks++;
        if (seenAt(1)) next++;
        for (let back = 1; back <= 8; back++) if (seenAt(back)) { within8++; break; }
      }
    }
  }
  const first = lru(trace, tokens, layers, used, missSlots, 0, Math.min(64, tokens));
  const after = lru(trace, tokens, layers, used, missSlots, Math.min(64, tokens), tokens);
  return {
    lruHitRate,
    reuseNextToken: next / picks,
    reuseWithin8: within8 / picks,
    missSlots,
    missFirst64: 1 - first.hits / first.lookups,
    missAfter64: after.lookups ? 1 - after.hits / after.lookups : NaN,
  };
}
