import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The native addon's surface, as seen from TypeScript. Only services/engine talks to it directly. */
export interface NativeAddon {
  AddonModel: new () => NativeModel;
  AddonEngine: new (model: NativeModel, onEvents: (events: NativeEvent[]) => void) => NativeEngine;
  refEngineEvents(engine: NativeEngine, ref: boolean): void;
  readGgufLayout(path: string): Promise<GgufLayout>;
  setLlamaLogVerbose(verbose: boolean): void;
  makeModel(spec: Record<string, unknown>, onProgress?: (done: number, total: number) => void): Promise<{ path: string; bytes: number; tensors: number }>;
}

export interface NativeModel {
  load(path: string, options: { nGpuLayers: number; loadMode: string; overrides: { pattern: string; bufferType: string }[] }): Promise<void>;
  info(): Record<string, unknown>;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  detokenize(tokens: Int32Array): string;
  tokenBytes(tokens: Int32Array): Buffer;
  dispose(): void;
}

export interface NativeEngine {
  start(options: { nCtxPerSeq: number; nSeq: number; nBatch: number; nThreads: number; warmup: boolean }): Promise<{ contextSize: number; parallel: number }>;
  submit(id: number, prompt: Int32Array, params: NativeSamplingParams): void;
  cancel(id: number): boolean;
  stats(): { activeSequences: number; queuedRequests: number; parallel: number; totalRequests: number; totalPromptTokens: number; totalCompletionTokens: number; steps: number };
  close(): Promise<void>;
}

export interface NativeSamplingParams {
  maxTokens: number;
  stops: string[];
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  seed: number;
  grammar: string;
}

export interface NativeEvent {
  id: number;
  final: boolean;
  tokens: Int32Array;
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

/** The addon file for a backend (built by `npm run build:native`). */
export function addonPath(backend = addonBackend()): string {
  return join(repoRoot(), 'native', 'build', backend, 'Release', 'moeflash.node');
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
