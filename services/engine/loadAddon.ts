import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { addonBackend, addonBuildDir, type NativeIoAddon } from '../common/native/ioAddon';
import type { ExpertCacheOptions, ExpertCacheStats, ExpertPagingStats, RequestExpertPaging } from './types';

// What the engine side imports from here, defined with the I/O addon.
export {
  addonBackend,
  addonBuildDir,
  repoRoot,
  type GgufLayout,
  type GgufTensorInfo,
  type NativeHintChannelInfo,
  type NativeHintConsumer,
  type NativeHintConsumerOptions,
  type NativeHintConsumerStats,
  type NativeHintWriter,
  type NativeHintWriterOptions,
  type NativeIoMode,
  type NativePrefetchOptions,
  type NativePrefetchResult,
} from '../common/native/ioAddon';

/**
 * The engine addon's surface, as seen from TypeScript: the engine, the model maker and, for the engine's own use,
 * the I/O functions the expert-store gets from the I/O addon. Only services/engine talks to it directly.
 */
export interface NativeAddon extends NativeIoAddon {
  AddonModel: new () => NativeModel;
  AddonEngine: new (model: NativeModel, onEvents: (events: NativeEvent[]) => void) => NativeEngine;
  refEngineEvents(engine: NativeEngine, ref: boolean): void;
  setLlamaLogVerbose(verbose: boolean): void;
  /** llama_print_system_info(): the backends and the CPU instruction sets this build was compiled with. */
  systemInfo(): string;
  /** The token greedy decoding picks from one step's logits (the scheduler's argmax): the first highest. */
  argmaxOfLogits(logits: Float32Array): number;
  /** GBNF for a JSON Schema (text), by llama.cpp's json-schema-to-grammar; throws 'json_schema: <why>'. */
  jsonSchemaToGrammar(schema: string): string;
  /** Host -> device GB/s of the first GPU from pinned memory (what expert-cache copies use); 0 without a GPU. */
  measureLinkBandwidth(bytes?: number): number;
  /** The synthetic routing trace bench:cache replays, without a model: [tokens][layers][expertsUsed] expert ids. */
  syntheticRoutingTrace(spec: { layers: number; experts: number; expertsUsed: number; tokens: number; seed?: number; reusePrevious?: number; reuseWindow?: number }): Int32Array;
  makeModel(spec: Record<string, unknown>, onProgress?: (done: number, total: number) => void): Promise<{ path: string; bytes: number; tensors: number }>;
}

export interface NativeModel {
  load(path: string, options: { nGpuLayers: number; loadMode: string; expertRead: 'load' | 'demand'; overrides: { pattern: string; bufferType: string }[] }): Promise<void>;
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
    /** Experts read on demand into memory of the engine's own, at most this many bytes (0: the page cache). */
    expertRamBytes?: number;
    /** routeReplay: the replayRouting file, read and checked (services/engine/readRoutingLog.ts). */
    expertCache?: ExpertCacheOptions & { routeReplay?: { ids: Int32Array; layers: number; used: number } };
  }): Promise<{ contextSize: number; parallel: number; hintChannelError?: string; expertRam?: boolean; expertCache?: { slots: number; slotBytes: number; stagingBytes: number; allResident: boolean; sizedBy: string; prefetch: boolean; path: 'device' | 'host-stop' | 'all-resident' } }>;
  submit(id: number, prompt: Int32Array, params: NativeSamplingParams): void;
  cancel(id: number): boolean;
  expertUse(): { nExpert: number; counts: Float64Array };
  expertCacheStats(): ExpertCacheStats | null;
  expertPagingStats(): ExpertPagingStats | null;
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
  sampledInGraph?: boolean;
  expertCache?: { hits: Uint32Array; misses: Uint32Array; bytesCopied: number; copyMs: number; stallMs: number };
  expertPaging?: RequestExpertPaging;
}

let cached: NativeAddon | undefined;

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
