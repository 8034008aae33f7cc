import { InvalidArgumentError } from '../common/errors';
import { AsyncQueue } from '../common/AsyncQueue';
import type { ExpertEntry, ExpertIndex, FileRange } from './ExpertIndex';
import type { HotExpert } from './HeatMap';
import { PageCache } from './PageCache';

export interface WarmRequestPlan {
  /** Most bytes to read. */
  budgetBytes: number;
  /** Experts to warm, in this order. Empty/absent: `hotOrder`. */
  experts?: readonly { layer: number; expert: number }[];
  /** With experts absent: the hottest N of each layer (0: all). */
  hottestPerLayer?: number;
  /** Skip the non-expert tensors (read first otherwise). */
  skipNonExpert?: boolean;
}

/** What a warm-up reads: non-expert tensors first, then experts, cut to the budget (always a prefix). */
export interface WarmPlan {
  nonExpert: FileRange[];
  experts: ExpertEntry[];
  nonExpertBytes: number;
  bytesTotal: number;
  budgetBytes: number;
}

export interface WarmProgress {
  bytesDone: number;
  bytesTotal: number;
  expertsWarmed: number;
  expertsTotal: number;
  ioMode: string;
  budgetBytes: number;
}

/**
 * Plans a warm-up: every non-expert tensor (by file offset), then the experts asked for, or all experts in heat
 * order (hotOrder: hottest first; with hottestPerLayer, only the top N of each layer), stopping at the first item
 * that would exceed the budget, so what is read is always the hottest prefix.
 */
export function planWarm(index: ExpertIndex, hotOrder: readonly HotExpert[], req: WarmRequestPlan): WarmPlan {
  let left = Math.max(0, req.budgetBytes);
  const nonExpert: FileRange[] = [];
  let nonExpertBytes = 0;
  let full = false;
  if (!req.skipNonExpert) {
    for (const t of index.nonExpert) {
      if (t.length > left) {
        full = true;
        break;
      }
      nonExpert.push({ file: t.file, offset: t.offset, length: t.length });
      nonExpertBytes += t.length;
      left -= t.length;
    }
  }
  let order: { layer: number; expert: number }[];
  if (req.experts && req.experts.length > 0) {
    const violations = req.experts.flatMap((r, i) =>
      index.experts[r.layer]?.[r.expert] ? [] : [{ field: `experts[${i}]`, description: `no expert ${r.expert} in layer ${r.layer} (layers 0..${index.nLayer - 1} with ${index.nExpert} experts; MoE layers ${index.moeLayers.join(',')})` }],
    );
    if (violations.length > 0) throw new InvalidArgumentError(violations);
    order = [...req.experts];
  } else if (req.hottestPerLayer && req.hottestPerLayer > 0) {
    const taken = new Map<number, number>();
    order = hotOrder.filter((h) => {
      const n = taken.get(h.layer) ?? 0;
      if (n >= (req.hottestPerLayer as number)) return false;
      taken.set(h.layer, n + 1);
      return true;
    });
  } else {
    order = [...hotOrder];
  }
  const experts: ExpertEntry[] = [];
  const seen = new Set<number>();
  for (const r of order) {
    if (full) break;
    const key = r.layer * index.nExpert + r.expert;
    const entry = index.experts[r.layer]?.[r.expert];
    if (!entry || seen.has(key)) continue;
    if (entry.bytes > left) break;
    seen.add(key);
    experts.push(entry);
    left -= entry.bytes;
  }
  return {
    nonExpert,
    experts,
    nonExpertBytes,
    bytesTotal: nonExpertBytes + experts.reduce((s, e) => s + e.bytes, 0),
    budgetBytes: req.budgetBytes,
  };
}

/**
 * Reads a plan into the page cache, streaming progress (at most every ~100 ms, and once at the end with
 * bytesDone = bytesTotal). Aborting the signal stops the reads (the iteration then throws CancelledError).
 */
export async function* runWarm(cache: PageCache, plan: WarmPlan, signal?: AbortSignal): AsyncGenerator<WarmProgress> {
  const ranges: FileRange[] = [...plan.nonExpert];
  const groups: number[] = plan.nonExpert.map(() => -1);
  plan.experts.forEach((e, i) => {
    for (const r of e.ranges) {
      ranges.push({ file: r.file, offset: r.offset, length: r.length });
      groups.push(i);
    }
  });
  const base = { bytesTotal: plan.bytesTotal, expertsTotal: plan.experts.length, budgetBytes: plan.budgetBytes };
  const ioMode = cache.options.ioMode === 'fadvise' || !PageCache.ioUringStatus().available ? 'fadvise' : 'uring';
  const queue = new AsyncQueue<WarmProgress | Error>();
  let finished = false;
  cache
    .prefetch(ranges, {
      groups: Int32Array.from(groups),
      signal,
      onProgress: (bytesDone, expertsWarmed) => {
        if (!finished) queue.push({ ...base, bytesDone, expertsWarmed, ioMode });
      },
    })
    .then(
      (result) => {
        finished = true;
        queue.push({ ...base, bytesDone: result.bytes, expertsWarmed: result.groupsDone, ioMode: result.mode });
        queue.end();
      },
      (e: Error) => {
        finished = true;
        queue.push(e);
        queue.end();
      },
    );
  let last: WarmProgress | undefined;
  for await (const item of queue) {
    if (item instanceof Error) throw item;
    if (last && item.bytesDone === last.bytesDone && item.expertsWarmed === last.expertsWarmed && item.ioMode === last.ioMode) continue;
    last = item;
    yield item;
  }
}

