import type { RequestSummary } from '../../gen/moeflash/v1/inference';

/** How many finished requests an inference process remembers by default. */
export const RECENT_REQUESTS_CAPACITY = 64;

/**
 * The summaries of the last `capacity` finished generations, by request id: what `moeflash trace-summary` reads
 * after the fact. Bounded so a busy process keeps constant memory; a request id seen again replaces its entry
 * (and counts as newest).
 */
export class RecentRequests {
  /** Insertion-ordered: the first key is the oldest entry. */
  private readonly byId = new Map<string, RequestSummary>();

  constructor(readonly capacity = RECENT_REQUESTS_CAPACITY) {
    if (!(Number.isInteger(capacity) && capacity > 0)) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
  }

  add(summary: RequestSummary): void {
    this.byId.delete(summary.requestId);
    this.byId.set(summary.requestId, summary);
    if (this.byId.size > this.capacity) this.byId.delete(this.byId.keys().next().value as string);
  }

  get(requestId: string): RequestSummary | undefined {
    return this.byId.get(requestId);
  }

  /** Newest first; at most `limit` (default: all kept). */
  newest(limit = this.capacity): RequestSummary[] {
    return [...this.byId.values()].reverse().slice(0, Math.max(0, limit));
  }
}
