import { InvalidArgumentError } from '../common/errors';
import { processMemoryLimit } from '../common/memoryLimits';
import type { GgufLayout } from './loadAddon';
import type { LoadOptions } from './types';

/** What the budget is cut from: the model's experts (one layer's, all of them), the rest of it, the context's KV cache. */
export interface ExpertRamModel {
  layerExpertBytes: number;
  expertBytes: number;
  nonExpertBytes: number;
  contextBytes: number;
}

export interface ExpertRamSize {
  bytes: number;
  sizedBy: 'option' | 'memory limit';
}

const MIN_HEADROOM = 128 * 1024 ** 2;

/** The KV cache a context of `cells` tokens (all sequences) allocates: K and V in f16 for every layer. */
export function kvCacheBytes(layout: GgufLayout, nLayer: number, cells: number): number {
  const arch = String(layout.metadata['general.architecture'] ?? '');
  const num = (key: string) => {
    const v = layout.metadata[`${arch}.${key}`];
    return typeof v === 'number' ? v : undefined;
  };
  const nHead = num('attention.head_count') ?? 1;
  const nHeadKv = num('attention.head_count_kv') ?? nHead;
  const nEmbd = num('embedding_length') ?? 0;
  const keyLength = num('attention.key_length') ?? nEmbd / nHead;
  const valueLength = num('attention.value_length') ?? nEmbd / nHead;
  return nLayer * cells * nHeadKv * (keyLength + valueLength) * 2;
}

/**
 * How much memory of its own the engine holds experts read on demand in (LoadOptions.expertRam), or undefined for the
 * page cache. The memory is anonymous and cannot be reclaimed without swap, so 'auto' leaves room: the memory limit
 * (MemAvailable or the cgroup's) less the non-expert weights (they stay in the page cache), what the process holds
 * now, the context's KV cache (allocated after this, filled as tokens come), one layer's experts (a prefill ubatch may
 * need all of a layer's experts at once, above the budget for a moment) and a headroom of max(128 MiB, 5 % of the
 * limit) for buffers, and never more than all the experts. Below one layer's experts the page cache serves instead.
 */
export function sizeExpertRam(
  options: LoadOptions,
  expertRead: 'load' | 'demand',
  model: ExpertRamModel,
  memoryLimit: () => number = processMemoryLimit,
  residentBytes: () => number = () => process.memoryUsage().rss,
): ExpertRamSize | undefined {
  const requested: number | 'off' | 'auto' = options.expertRam ?? 'auto';
  const { layerExpertBytes, expertBytes, nonExpertBytes, contextBytes } = model;
  // on demand, the expert cache (hostMemory mmap, host path) reads its misses through the pager too
  const applies = expertRead === 'demand' && layerExpertBytes > 0;
  if (requested === 'off') return undefined;
  if (requested === 'auto') {
    if (!applies) return undefined;
    const limit = memoryLimit();
    if (!Number.isFinite(limit)) return undefined;
    const left = limit - nonExpertBytes - residentBytes() - contextBytes - layerExpertBytes - Math.max(MIN_HEADROOM, 0.05 * limit);
    const bytes = Math.floor(Math.min(left, expertBytes));
    return bytes >= layerExpertBytes ? { bytes, sizedBy: 'memory limit' } : undefined;
  }
  if (!applies)
    throw InvalidArgumentError.field('expertRam', 'needs experts read on demand (expertRead demand)');
  if (requested < layerExpertBytes)
    throw InvalidArgumentError.field('expertRam', `must hold at least one layer's experts (${layerExpertBytes} bytes), got ${requested}`);
  return { bytes: requested, sizedBy: 'option' };
}
