import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { InvalidArgumentError } from '../common/errors';
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

/** The memory this process may fill with page cache: MemAvailable, or its cgroup's limit when lower (v2 or v1). */
export function processMemoryLimit(): number {
  let limit = Infinity;
  try {
    const available = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (available) limit = Number(available[1]) * 1024;
  } catch {
    /* not Linux: no limit known */
  }
  return Math.min(limit, cgroupMemoryLimit());
}

function cgroupMemoryLimit(): number {
  let lines: string[];
  try {
    lines = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n');
  } catch {
    return Infinity;
  }
  for (const line of lines) {
    const [, controllers, path] = line.split(':');
    const file =
      controllers === '' ? join('/sys/fs/cgroup', path, 'memory.max') : controllers.split(',').includes('memory') ? join('/sys/fs/cgroup/memory', path, 'memory.limit_in_bytes') : undefined;
    if (!file) continue;
    try {
      const value = readFileSync(file, 'utf8').trim();
      if (value !== 'max') return Math.min(Number(value), Infinity);
    } catch {
      /* the hierarchy is not mounted where expected */
    }
  }
  return Infinity;
}
