/** Where a queued entry stands: higher priority first, then by its fair-share tag, then by arrival. */
interface Placement {
  priority: number;
  tag: number;
  seq: number;
}

interface Entry<T> extends Placement {
  item: T;
}

/** a before b */
function precedes(a: Placement, b: Placement): boolean {
  if (a.priority !== b.priority) return a.priority > b.priority;
  if (a.tag !== b.tag) return a.tag < b.tag;
  return a.seq < b.seq;
}

/**
 * The order in which queued calls leave: strict priority between levels; within a level, start-time fair queueing
 * between callers with every call costing one unit. A caller's next call is tagged one after its previous one or
 * after the tag of the last call served, whichever is later, so backlogged callers alternate call for call and a
 * caller who was idle starts at the current round instead of cashing in credit for the time it sent nothing.
 * Within one caller, calls keep their arrival order. Kept as one sorted array: the queue is bounded (hundreds to a
 * few thousand entries) and insertion by binary search plus splice is cheap at that size.
 */
export class FairQueue<T> {
  private readonly entries: Entry<T>[] = [];
  /** Per priority level, the round the last call taken out started in (its tag - 1). */
  private readonly served = new Map<number, number>();
  /** Per priority level and caller, the tag of its last queued call. */
  private readonly lastTag = new Map<string, number>();
  private seq = 0;

  get size(): number {
    return this.entries.length;
  }

  /** Where a call from `caller` at `priority` would be placed now, without placing it. */
  placementOf(caller: string, priority: number): Placement {
    const round = this.served.get(priority) ?? 0;
    const last = this.lastTag.get(tagKey(priority, caller)) ?? -Infinity;
    return { priority, tag: Math.max(round, last) + 1, seq: this.seq };
  }

  /** Entries that would leave before a call placed at `placement`, in order. */
  *ahead(placement: Placement): Generator<T> {
    for (const e of this.entries) {
      if (!precedes(e, placement)) return;
      yield e.item;
    }
  }

  /** Queues `item` at `placement` (from placementOf, with nothing queued in between). */
  push(item: T, placement: Placement, caller: string): void {
    const entry: Entry<T> = { ...placement, seq: this.seq++, item };
    this.lastTag.set(tagKey(placement.priority, caller), placement.tag);
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (precedes(this.entries[mid], entry)) lo = mid + 1;
      else hi = mid;
    }
    this.entries.splice(lo, 0, entry);
  }

  /** Entries in leaving order. */
  *[Symbol.iterator](): Generator<T> {
    for (const e of this.entries) yield e.item;
  }

  /**
   * Takes `item` out because it is served: the round of its level becomes the round this call started in, so a
   * caller arriving while it runs is placed level with the call after it, as in start-time fair queueing.
   */
  take(item: T): void {
    const i = this.entries.findIndex((e) => e.item === item);
    if (i < 0) return;
    const [e] = this.entries.splice(i, 1);
    this.served.set(e.priority, Math.max(this.served.get(e.priority) ?? 0, e.tag - 1));
    this.forgetIdleCallers();
  }

  /** Takes `item` out without serving it (cancelled, refused, timed out). */
  remove(item: T): boolean {
    const i = this.entries.findIndex((e) => e.item === item);
    if (i < 0) return false;
    this.entries.splice(i, 1);
    this.forgetIdleCallers();
    return true;
  }

  /**
   * A caller's last tag only matters while it is ahead of the round; dropping the others keeps the map as small as
   * the set of callers with calls queued, however many distinct callers came and went.
   */
  private forgetIdleCallers(): void {
    if (this.entries.length === 0) {
      this.lastTag.clear();
      this.served.clear();
      return;
    }
    if (this.lastTag.size <= 2 * this.entries.length) return;
    for (const [key, tag] of this.lastTag) {
      const priority = Number(key.slice(0, key.indexOf('|')));
      if (tag <= (this.served.get(priority) ?? 0)) this.lastTag.delete(key);
    }
  }
}

function tagKey(priority: number, caller: string): string {
  return `${priority}|${caller}`;
}
