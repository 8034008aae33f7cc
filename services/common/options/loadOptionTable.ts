import type { LoadOptions } from '../../engine/types';
import { byteSize, byteSizeAutoOrOff, countOrAuto, flag, integer, oneOf, type OptionKind } from './optionKinds';

/**
 * One engine option: where it lives in LoadOptions (also its key in a MOEFLASH_MODELS file's `options`), its
 * command-line flag (`moeflash generate`, and `moeflash serve` and the inference service for the default model),
 * its variable (the default model), its type and range, its default and one line of help. Every place that reads,
 * checks or documents an engine option goes through this table (services/common/options/optionTable.ts), in the
 * manner of llama.cpp's common/arg.cpp.
 */
export interface LoadOptionSpec {
  readonly key: LoadOptionKey;
  readonly flag: string;
  readonly env: string;
  readonly kind: OptionKind<unknown>;
  readonly default: string;
  readonly help: string;
}

/** The LoadOptions paths the table covers. */
export type LoadOptionKey =
  | keyof Omit<LoadOptions, 'path' | 'expertCache' | 'tensorOverrides'>
  | `expertCache.${keyof NonNullable<LoadOptions['expertCache']>}`;

export const LOAD_OPTIONS: readonly LoadOptionSpec[] = [
  { key: 'nGpuLayers', flag: 'n-gpu-layers', env: 'MOEFLASH_N_GPU_LAYERS', kind: integer(-1, 100_000), default: '0', help: 'layers offloaded to the GPU backend (-1 or 99: all)' },
  { key: 'nCpuMoe', flag: 'n-cpu-moe', env: 'MOEFLASH_N_CPU_MOE', kind: integer(0, 100_000), default: '0', help: "keep the experts of the first N layers in host memory (llama.cpp's --n-cpu-moe)" },
  { key: 'contextSize', flag: 'ctx-size', env: 'MOEFLASH_CTX_SIZE', kind: integer(16, 1 << 24), default: '4096', help: 'tokens of context per sequence (capped by the model)' },
  { key: 'parallel', flag: 'parallel', env: 'MOEFLASH_PARALLEL', kind: integer(1, 256), default: '4', help: 'sequences decoded together (continuous batching)' },
  { key: 'batchSize', flag: 'batch-size', env: 'MOEFLASH_BATCH_SIZE', kind: integer(1, 1 << 16), default: '512 (2048 with the cache on a GPU)', help: 'tokens per llama_decode' },
  { key: 'threads', flag: 'threads', env: 'MOEFLASH_THREADS', kind: integer(1, 1024), default: 'the cores', help: 'compute threads' },
  { key: 'loadMode', flag: 'load-mode', env: 'MOEFLASH_LOAD_MODE', kind: oneOf('mmap', 'none', 'mlock'), default: 'mmap', help: 'how weights are read: mmap (page cache), none (read into memory), mlock' },
  { key: 'expertRead', flag: 'expert-read', env: 'MOEFLASH_EXPERT_READ', kind: oneOf('auto', 'load', 'demand'), default: 'auto', help: "CPU experts: read with the model (load) or the routed ones when routed (demand: models larger than RAM); auto: demand when the model does not fit in memory" },
  { key: 'expertRam', flag: 'expert-ram', env: 'MOEFLASH_EXPERT_RAM', kind: byteSizeAutoOrOff, default: 'auto', help: "experts read on demand: at most this much of them in memory the engine owns (O_DIRECT reads) instead of the page cache; auto: sized from the memory limit; off: the page cache" },
  { key: 'warmup', flag: 'warmup', env: 'MOEFLASH_WARMUP', kind: flag, default: 'true', help: "run llama.cpp's warmup decode after loading" },
  { key: 'expertCache.slots', flag: 'expert-cache-slots', env: 'MOEFLASH_EXPERT_CACHE_SLOTS', kind: countOrAuto(1, 1 << 20), default: 'off', help: 'GPU expert slot cache: slots per MoE layer, or auto (sized from free device memory)' },
  { key: 'expertCache.memBytes', flag: 'expert-cache-mem', env: 'MOEFLASH_EXPERT_CACHE_MEM', kind: byteSize, default: 'off', help: "GPU expert slot cache: a memory budget for all layers' slots" },
  { key: 'expertCache.policy', flag: 'expert-cache-policy', env: 'MOEFLASH_EXPERT_CACHE_POLICY', kind: oneOf('lru2', 'lru', 'slru'), default: 'lru2', help: 'expert cache eviction policy' },
  { key: 'expertCache.prefetch', flag: 'expert-cache-prefetch', env: 'MOEFLASH_EXPERT_CACHE_PREFETCH', kind: flag, default: 'false', help: "expert cache: copy the next layer's predicted experts ahead" },
  { key: 'expertCache.hostMemory', flag: 'expert-cache-host-memory', env: 'MOEFLASH_EXPERT_CACHE_HOST_MEMORY', kind: oneOf('pinned', 'mmap'), default: 'pinned with GPU layers', help: "expert cache: the experts' host copy, page-locked or the page cache" },
  { key: 'expertCache.resolve', flag: 'expert-cache-resolve', env: 'MOEFLASH_EXPERT_CACHE_RESOLVE', kind: oneOf('device', 'host'), default: 'device where supported', help: 'expert cache: slots chosen on the device or by a host stop per layer' },
];
