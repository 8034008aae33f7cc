import { InvalidArgumentError } from '../common/errors';
import { processMemoryLimit } from '../common/memoryLimits';
import type { LoadOptions } from './types';

/**
 * Whether the experts are read at load or on demand (LoadOptions.expertRead). Demand needs the experts read from the
 * mapping where the engine sees the routing on the host (native/src/ExpertPager.h): MoE layers computed on the CPU,
 * or an expert cache copying its misses from the page cache (hostMemory mmap, host path). An offloaded or pinned
 * expert is copied whole at load anyway.
 */
export function chooseExpertRead(options: LoadOptions, modelBytes: number, loadMode: string, memoryLimit = processMemoryLimit): 'load' | 'demand' {
  const requested = options.expertRead ?? 'auto';
  if (requested === 'load') return 'load';
  const cache = options.expertCache;
  const cacheFromPageCache = cache !== undefined && (cache.hostMemory ?? ((options.nGpuLayers ?? 0) !== 0 ? 'pinned' : 'mmap')) === 'mmap';
  const mapped = loadMode !== 'none' && (cache === undefined ? (options.nGpuLayers ?? 0) === 0 : cacheFromPageCache);
  if (requested === 'demand') {
    if (!mapped)
      throw InvalidArgumentError.field(
        'expertRead',
        "'demand' needs the experts read from the mapping: MoE layers on the CPU (nGpuLayers 0) or an expert cache with hostMemory mmap, and loadMode mmap or mlock",
      );
    return 'demand';
  }
  return mapped && modelBytes > 0.9 * memoryLimit() ? 'demand' : 'load';
}
