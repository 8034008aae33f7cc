import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** MemAvailable from /proc/meminfo, in bytes (the kernel's estimate of what can be used without swapping). */
export function availableMemoryBytes(meminfo = '/proc/meminfo'): number {
  const m = /^MemAvailable:\s+(\d+)\s+kB/m.exec(readFileSync(meminfo, 'utf8'));
  if (!m) throw new Error(`${meminfo} has no MemAvailable line`);
  return Number(m[1]) * 1024;
}

/** The memory this process may fill with page cache: MemAvailable, or its cgroup's limit when lower (v2 or v1). */
export function processMemoryLimit(): number {
  let available = Infinity;
  try {
    available = availableMemoryBytes();
  } catch {
    /* not Linux: no limit known */
  }
  return Math.min(available, cgroupMemoryLimit());
}

/** The memory limit of this process's cgroup (v2 memory.max or v1 memory.limit_in_bytes); Infinity when none. */
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
      if (value !== 'max') return Number(value);
    } catch {
      /* the hierarchy is not mounted where expected */
    }
  }
  return Infinity;
}
