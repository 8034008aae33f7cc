import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A memory cgroup for benchmarks that need a model larger than the memory a process may fill (page cache read inside
 * it is charged to it): cgroup v1 (`/sys/fs/cgroup/memory`, this dev VM) or v2 (the unified hierarchy). Needs root.
 */
export interface MemoryCgroup {
  path: string;
  remove(): void;
}

const V1_ROOT = '/sys/fs/cgroup/memory';
const V2_ROOT = '/sys/fs/cgroup';

export function createMemoryCgroup(name: string, limitBytes: number): MemoryCgroup {
  let path: string;
  if (existsSync(join(V1_ROOT, 'cgroup.procs'))) {
    path = join(V1_ROOT, name);
    mkdirSync(path);
    writeFileSync(join(path, 'memory.limit_in_bytes'), String(limitBytes));
  } else if (existsSync(join(V2_ROOT, 'cgroup.controllers'))) {
    if (!readFileSync(join(V2_ROOT, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('memory'))
      throw new Error(`the cgroup v2 hierarchy at ${V2_ROOT} has no memory controller`);
    // children get the memory controller only once the parent delegates it
    if (!readFileSync(join(V2_ROOT, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('memory')) writeFileSync(join(V2_ROOT, 'cgroup.subtree_control'), '+memory');
    path = join(V2_ROOT, name);
    mkdirSync(path);
    writeFileSync(join(path, 'memory.max'), String(limitBytes));
    if (existsSync(join(path, 'memory.swap.max'))) writeFileSync(join(path, 'memory.swap.max'), '0');
  } else {
    throw new Error(`no memory cgroup: neither ${V1_ROOT} (v1) nor ${V2_ROOT}/cgroup.controllers (v2)`);
  }
  return {
    path,
    remove() {
      try {
        rmdirSync(path);
      } catch (e) {
        console.error(`could not remove ${path}: ${(e as Error).message}`);
      }
    },
  };
}

/** Moves the calling process into the cgroup (its threads and the io-wq workers it starts follow). */
export function joinMemoryCgroup(path: string): void {
  writeFileSync(join(path, 'cgroup.procs'), String(process.pid));
}

/** Page cache, anonymous and mapped bytes, the peak and how often the limit was hit, under either version's names. */
export function memoryCgroupStat(path: string): Record<string, number> {
  const stat = Object.fromEntries(
    readFileSync(join(path, 'memory.stat'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' '))
      .map(([k, v]) => [k, Number(v)]),
  );
  const number = (file: string) => (existsSync(join(path, file)) ? Number(readFileSync(join(path, file), 'utf8').trim()) : NaN);
  if (path.startsWith(V1_ROOT))
    return { cache: stat.cache, rss: stat.rss, mapped_file: stat.mapped_file, maxUsage: number('memory.max_usage_in_bytes'), failcnt: number('memory.failcnt') };
  const events = existsSync(join(path, 'memory.events')) ? readFileSync(join(path, 'memory.events'), 'utf8') : '';
  return { cache: stat.file, rss: stat.anon, mapped_file: stat.file_mapped, maxUsage: number('memory.peak'), failcnt: Number(/^max (\d+)/m.exec(events)?.[1] ?? NaN) };
}
