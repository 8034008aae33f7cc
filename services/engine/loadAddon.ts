import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

import type { ExpertCacheOptions, ExpertCacheStats } from './types';

/** The native addon's surface, as seen from TypeScript. Only services/engine talks to it directly. */
export interface NativeAddon {
  AddonModel: new () => NativeModel;
  AddonEngine: new (model: NativeModel, onEvents: (events: NativeEvent[]) => void) => NativeEngine;
  refEngineEvents(engine: NativeEngine, ref: boolean): void;
  readGgufLayout(path: string): Promise<GgufLayout>;
  setLlamaLogVerbose(verbose: boolean): void;
  /** llama_print_system_info(): the backends and the CPU instruction sets this build was compiled with. */
  systemInfo(): string;
  /** GBNF for a JSON Schema (text), by llama.cpp's json-schema-to-grammar; throws 'json_schema: <why>'. */
  jsonSchemaToGrammar(schema: string): string;
  /** Host -> device GB/s of the first GPU from pinned memory (what expert-cache copies use); 0 without a GPU. */
  measureLinkBandwidth(bytes?: number): number;
  /** The synthetic routing trace bench:cache replays, without a model: [tokens][layers][expertsUsed] expert ids. */
  syntheticRoutingTrace(spec: { layers: number; experts: number; expertsUsed: number; tokens: number; seed?: number; reusePrevious?: number; reuseWindow?: number }): Int32Array;
  makeModel(spec: Record<string, unknown>, onProgress?: (done: number, total: number) => void): Promise<{ path: string; bytes: number; tensors: number }>;
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

export interface NativeModel {
  load(path: string, options: { nGpuLayers: number; loadMode: string; overrides: { pattern: string; bufferType: string }[] }): Promise<void>;
  info(): Record<string, unknown>;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  detokenize(tokens: Int32Array): string;
  tokenBytes(tokens: Int32Array): Buffer;
  /** Throws '<field>: <why>' (messages, chat_template). */
  applyChatTemplate(messages: { role: string; content: string }[], template: string, kwargs: Record<string, string>): string;
  dispose(): void;
}

export interface NativeEngine {
  start(options: {
    nCtxPerSeq: number;
    nSeq: number;
    nBatch: number;
    /** Tokens per llama.cpp ubatch (at most nBatch). */
    nUbatch: number;
    nThreads: number;
    warmup: boolean;
    recordRouting: boolean;
    routingLog?: string;
    hintChannel?: string;
    /** routeReplay: the replayRouting file, read and checked (services/engine/readRoutingLog.ts). */
    expertCache?: ExpertCacheOptions & { routeReplay?: { ids: Int32Array; layers: number; used: number } };
  }): Promise<{ contextSize: number; parallel: number; expertCache?: { slots: number; slotBytes: number; stagingBytes: number; allResident: boolean; sizedBy: string; prefetch: boolean; path: 'device' | 'host-stop' | 'all-resident' } }>;
  submit(id: number, prompt: Int32Array, params: NativeSamplingParams): void;
  cancel(id: number): boolean;
  expertUse(): { nExpert: number; counts: Float64Array };
  expertCacheStats(): ExpertCacheStats | null;
  stats(): { activeSequences: number; queuedRequests: number; parallel: number; totalRequests: number; totalPromptTokens: number; totalCompletionTokens: number; steps: number };
  close(): Promise<void>;
}

export interface NativeSamplingParams {
  maxTokens: number;
  stops: string[];
  stopTokenIds: Int32Array;
  ignoreEos: boolean;
  /** -1: none. */
  topLogprobs: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  seed: number;
  grammar: string;
  traceId?: string;
}

export interface NativeEvent {
  id: number;
  final: boolean;
  tokens: Int32Array;
  logprobs?: { token: number; logprob: number; top: { token: number; logprob: number }[] }[];
  text: string;
  finishReason?: string;
  matchedStop?: string;
  error?: string;
  promptTokens?: number;
  completionTokens?: number;
  queueMs?: number;
  prefillMs?: number;
  ttftMs?: number;
  decodeMs?: number;
  expertsPerLayer?: Uint16Array;
  expertCache?: { hits: Uint32Array; misses: Uint32Array; bytesCopied: number; copyMs: number; stallMs: number };
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

let cached: NativeAddon | undefined;

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

/** The addon file for a backend (built by `npm run build:native`). */
export function addonPath(backend = addonBackend()): string {
  return join(addonBuildDir(backend), 'Release', 'moeflash.node');
}

/** Loads the addon once. */
export function loadAddon(): NativeAddon {
  if (!cached) {
    const file = addonPath();
    if (!existsSync(file)) throw new Error(`native addon not built: ${file} is missing (run npm run build:native)`);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require(file) as NativeAddon;
  }
  return cached;
}
