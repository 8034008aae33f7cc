import { CancelledError } from '../common/errors';
import { loadIoAddon, type NativeIoMode, type NativePrefetchResult } from '../common/native/ioAddon';
import { rangeTriples, type FileRange } from './ExpertIndex';

export interface PageCacheOptions {
  /** auto (io_uring, else fadvise), uring (fail without it) or fadvise. Default auto. */
  ioMode?: NativeIoMode;
  /** io_uring reads in flight; default 32. */
  queueDepth?: number;
  /** Bytes per read; default 1 MiB. */
  chunkBytes?: number;
}

export interface PrefetchOptions {
  /** Group of each range (-1: none); onProgress counts groups whose ranges are all read. */
  groups?: Int32Array;
  /** Read in file order (default: the order given). */
  sort?: boolean;
  signal?: AbortSignal;
  onProgress?: (bytesDone: number, groupsDone: number) => void;
}

/**
 * The page cache as the expert-store sees it, over the files of one model: fill it (io_uring reads, or fadvise),
 * measure it (cachestat, or mincore) and drop from it (DONTNEED). All calls run on native threads.
 */
export class PageCache {
  private readonly paths: string[];

  constructor(
    files: readonly { path: string }[],
    readonly options: PageCacheOptions = {},
  ) {
    this.paths = files.map((f) => f.path);
  }

  /** Reads the ranges into the page cache. Aborting the signal stops issuing reads and rejects with CancelledError. */
  async prefetch(ranges: readonly FileRange[], options: PrefetchOptions = {}): Promise<NativePrefetchResult> {
    const cancel = new Int32Array(new SharedArrayBuffer(4));
    const onAbort = () => Atomics.store(cancel, 0, 1);
    options.signal?.throwIfAborted();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const result = await loadIoAddon().prefetchRanges(
        this.paths,
        rangeTriples(ranges),
        {
          mode: this.options.ioMode ?? 'auto',
          queueDepth: this.options.queueDepth,
          chunkBytes: this.options.chunkBytes,
          sort: options.sort,
          groups: options.groups,
          cancel,
        },
        options.onProgress,
      );
      if (result.cancelled) throw new CancelledError('prefetch cancelled');
      return result;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Resident bytes of each range, and how they were measured. */
  async residency(ranges: readonly FileRange[]): Promise<{ method: string; resident: Float64Array }> {
    return loadIoAddon().residency(this.paths, rangeTriples(ranges));
  }

  /** Drops the ranges (widened to whole pages) from the page cache, or the whole files when ranges is null. */
  async evict(ranges: readonly FileRange[] | null): Promise<number> {
    return (await loadIoAddon().evict(this.paths, ranges ? rangeTriples(ranges) : null)).bytes;
  }

  /** Whether io_uring can be used here, and why not. */
  static ioUringStatus(): { available: boolean; reason: string | null } {
    const s = loadIoAddon().ioUringStatus();
    return { available: s.available, reason: s.reason };
  }
}
