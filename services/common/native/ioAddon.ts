import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * The I/O addon (native/io/IoAddon.cpp, moeflash_io.node): the expert-store's native face. GGUF layout, expert byte
 * ranges through io_uring or posix_fadvise, page-cache residency and the hint channel, without llama.cpp's engine.
 * The engine addon exports the same functions for the engine's own use (services/engine/loadAddon.ts).
 */
export interface NativeIoAddon {
  readGgufLayout(path: string): Promise<GgufLayout>;
  // Expert I/O (native/src/ExpertIo.cpp). `ranges`: Float64Array of (file index, offset, length) triples.
  ioUringStatus(): { available: boolean; reason: string | null; residencyMethod: 'cachestat' | 'mincore' };
  prefetchRanges(
    files: string[],
    ranges: Float64Array,
    options?: NativePrefetchOptions,
    onProgress?: (bytesDone: number, groupsDone: number) => void,
  ): Promise<NativePrefetchResult>;
  residency(files: string[], ranges: Float64Array): Promise<{ method: 'cachestat' | 'mincore'; resident: Float64Array }>;
  /** DONTNEED advice over the ranges (widened to pages), or over the whole files when ranges is null. */
  evict(files: string[], ranges: Float64Array | null): Promise<{ bytes: number }>;
  // Hint channel (native/src/HintChannel.cpp).
  HintWriter: new (name: string, options?: NativeHintWriterOptions) => NativeHintWriter;
  HintConsumer: new (options: NativeHintConsumerOptions) => NativeHintConsumer;
  /** The header of a hint channel; throws with the reason a consumer would refuse it. */
  inspectHintChannel(name: string, expect?: { nLayer?: number; nExpert?: number }): NativeHintChannelInfo;
}

export type NativeIoMode = 'auto' | 'uring' | 'fadvise';

export interface NativePrefetchOptions {
  mode?: NativeIoMode;
  /** Reads in flight (io_uring), default 32. */
  queueDepth?: number;
  /** Bytes per read, a multiple of 4096 (default 1 MiB). */
  chunkBytes?: number;
  /** Read in file order instead of the given order. */
  sort?: boolean;
  /** Group of each range (-1: none): progress counts groups whose ranges are all read. */
  groups?: Int32Array;
  /** Set element 0 to non-zero (Atomics.store) to stop issuing reads; an Int32Array over a SharedArrayBuffer. */
  cancel?: Int32Array;
}

export interface NativePrefetchResult {
  mode: 'uring' | 'fadvise';
  /** Why io_uring was not used in mode auto, else null. */
  fallbackReason: string | null;
  bytes: number;
  spans: number;
  requests: number;
  ms: number;
  groupsDone: number;
  cancelled: boolean;
}

export interface NativeHintWriterOptions {
  capacity?: number;
  nLayer?: number;
  nExpert?: number;
  model?: string;
  unlinkOnClose?: boolean;
}

export interface NativeHintWriter {
  /** Publishes one step's expert ids at a layer (+ predicted ids for layer + 1, + trace id); returns records written. */
  publish(layer: number, ids: Int32Array | number[], predicted?: Int32Array | number[] | null, traceId?: Buffer | string): number;
  published(): number;
  readonly path: string | null;
  close(): void;
}

export interface NativeHintConsumerOptions {
  name: string;
  files: string[];
  nLayer: number;
  nExpert: number;
  /** Float64Array of (layer, expert, file index, offset, length) tuples. */
  ranges: Float64Array;
  mode?: NativeIoMode;
  queueDepth?: number;
  chunkBytes?: number;
  recentMs?: number;
  skipResident?: boolean;
  predictedMaxInFlight?: number;
  attachRetryMs?: number;
  checkMs?: number;
  pollMaxUs?: number;
}

export interface NativeHintConsumerStats {
  attached: boolean;
  path: string;
  producerPid: number;
  writeIndex: number;
  readIndex: number;
  attaches: number;
  records: number;
  hints: number;
  steps: number;
  dropped: number;
  malformed: number;
  demandIds: number;
  predictedIds: number;
  prefetchedExperts: number;
  prefetchedBytes: number;
  alreadyResident: number;
  deduplicated: number;
  useful: number;
  late: number;
  /** The engine holds its experts in its own memory (expertRam): hints feed the heat map, nothing is read ahead. */
  heatOnly: boolean;
  ioErrors: number;
  inFlight: number;
  queued: number;
  mode: 'uring' | 'fadvise';
  fallbackReason: string | null;
  lastTraceId: string | null;
  lastError: string | null;
}

export interface NativeHintConsumer {
  start(): void;
  /** Joins the thread and releases the files; the object cannot be used afterwards. */
  stop(): void;
  stats(): NativeHintConsumerStats;
  forget(): void;
  /** Demand uses per (layer, expert), index layer * nExpert + expert, since the last call. */
  takeCounts(): Float64Array;
}

export interface NativeHintChannelInfo {
  path: string;
  version: number;
  capacity: number;
  nLayer: number;
  nExpert: number;
  producerPid: number;
  writeIndex: number;
  createdNs: number;
  writerOpens: number;
  model: string;
  recordSize: number;
  headerSize: number;
}

export interface GgufTensorInfo {
  name: string;
  /** ggml type name, e.g. q4_0, f16, iq2_xs. */
  type: string;
  ne: number[];
  /** Absolute offset of the tensor's data in the file. */
  offset: number;
  nbytes: number;
}

export interface GgufLayout {
  path: string;
  version: number;
  fileSize: number;
  alignment: number;
  dataOffset: number;
  /** Scalar metadata by key; arrays appear as { arrayLength }. */
  metadata: Record<string, string | number | boolean | { arrayLength: number }>;
  tensors: GgufTensorInfo[];
}

/** The repository root: the nearest folder above this file with a package.json (works from dist/ too). */
export function repoRoot(): string {
  let dir = __dirname;
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${__dirname}`);
    dir = parent;
  }
  return dir;
}

/** The ggml backend whose addon to load: MOEFLASH_BACKEND, else the one built last, else cpu. */
export function addonBackend(): string {
  if (process.env.MOEFLASH_BACKEND) return process.env.MOEFLASH_BACKEND;
  const marker = join(repoRoot(), 'native', 'build', 'BACKEND');
  return existsSync(marker) ? readFileSync(marker, 'utf8').trim() : 'cpu';
}

/** The addon's build folder for a backend: MOEFLASH_ADDON_BUILD_DIR (a second build, as the CPU fallback test makes), else native/build/<backend>. */
export function addonBuildDir(backend = addonBackend()): string {
  return process.env.MOEFLASH_ADDON_BUILD_DIR ?? join(repoRoot(), 'native', 'build', backend);
}

let cached: NativeIoAddon | undefined;

/** Loads the I/O addon once (built with the engine addon by `npm run build:native`). */
export function loadIoAddon(): NativeIoAddon {
  if (!cached) {
    const file = join(addonBuildDir(), 'Release', 'moeflash_io.node');
    if (!existsSync(file)) throw new Error(`native I/O addon not built: ${file} is missing (run npm run build:native)`);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require(file) as NativeIoAddon;
  }
  return cached;
}
