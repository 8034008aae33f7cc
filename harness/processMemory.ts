import { readFileSync } from 'node:fs';

/** Resident memory of a process from /proc/<pid>/status, in bytes: now (VmRSS) and its peak so far (VmHWM). */
export interface ProcessMemory {
  rss: number;
  peakRss: number;
}

export function processMemory(pid: number): ProcessMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!m) throw new Error(`/proc/${pid}/status has no ${field}`);
    return Number(m[1]) * 1024;
  };
  return { rss: kib('VmRSS'), peakRss: kib('VmHWM') };
}

/**
 * Samples the RSS of `pids` every `intervalMs` until stopped; the highest seen per pid. VmHWM alone would include
 * whatever happened before (model load), so a phase's peak is sampled.
 */
export function sampleRss(pids: readonly number[], intervalMs = 100): { stop(): number[] } {
  const peaks = pids.map((pid) => processMemory(pid).rss);
  const timer = setInterval(() => pids.forEach((pid, i) => (peaks[i] = Math.max(peaks[i], processMemory(pid).rss))), intervalMs);
  return {
    stop() {
      clearInterval(timer);
      pids.forEach((pid, i) => (peaks[i] = Math.max(peaks[i], processMemory(pid).rss)));
      return peaks;
    },
  };
}
