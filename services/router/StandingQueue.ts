/** Arrivals must outpace departures by this much for the queue to count as growing (noise stays below it). */
const GROWTH = 1.25;

/**
 * Tells a burst from sustained overload, the idea of CoDel (Nichols and Jacobson) applied to arrivals. A queue that
 * forms and drains is a burst, and so is a stable queue fed by a client that sends a call each time one ends (a batch
 * job with more calls in flight than there are slots): both may hold up to the long wait bound. A queue that has
 * stayed non-empty for `burstMs` while calls arrived faster than they left it in both halves of that time is
 * standing: demand exceeds capacity and waiting would only grow, so a call then joins only if its expected wait is
 * within the short target and the rest are refused at once. (One half is not enough: the calls of a burst all
 * arrive in one.) Standing holds while calls keep being shed, so a queue held near its target by overload does not
 * flip back to the long bound each time it briefly drains; a client that retries a refused call at once instead of
 * after its RetryInfo keeps it standing.
 */
export class StandingQueue {
  private nonEmptySince: number | undefined;
  private lastShedAt = -Infinity;
  /** Times of calls that found no free slot, and of calls that left the queue for one, within the last burstMs. */
  private readonly arrivals: number[] = [];
  private readonly departures: number[] = [];

  constructor(private readonly burstMs: number) {}

  /** The queue's length changed to `length` at `now`. */
  observe(length: number, now: number): void {
    if (length === 0) this.nonEmptySince = undefined;
    else this.nonEmptySince ??= now;
  }

  /** A call found every slot taken (it queues or is refused). */
  arrived(now: number): void {
    this.arrivals.push(now);
    this.forget(this.arrivals, now);
  }

  /** A queued call got a slot. */
  departed(now: number): void {
    this.departures.push(now);
    this.forget(this.departures, now);
  }

  /** A call was refused because the queue was standing. */
  shed(now: number): void {
    this.lastShedAt = now;
  }

  isStanding(now: number): boolean {
    if (now - this.lastShedAt < this.burstMs) return true;
    if (this.nonEmptySince === undefined || now - this.nonEmptySince < this.burstMs) return false;
    this.forget(this.arrivals, now);
    this.forget(this.departures, now);
    const half = now - this.burstMs / 2;
    const grew = (from: number, to: number) => count(this.arrivals, from, to) > GROWTH * count(this.departures, from, to);
    return grew(now - this.burstMs, half) && grew(half, now + 1);
  }

  private forget(times: number[], now: number): void {
    let old = 0;
    while (old < times.length && now - times[old] >= this.burstMs) old++;
    if (old > 0) times.splice(0, old);
  }
}

/** Times in [from, to). */
function count(times: readonly number[], from: number, to: number): number {
  let n = 0;
  for (const t of times) if (t >= from && t < to) n++;
  return n;
}
