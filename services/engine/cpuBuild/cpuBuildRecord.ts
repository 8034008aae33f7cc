import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

import type { HostCpu } from './hostCpu';

/**
 * What the install chose and proved, kept beside the addon's build folder (native/build/<backend>-cpu-build.json,
 * outside it: cmake-js empties that folder when it reconfigures): the CPU build
 * level, its cmake options (the stock peer is built with the same ones), what was left out and why, and the host the
 * probe passed on. The inference service trusts a passing record only on a host with the same fingerprint.
 */
export interface CpuBuildRecord {
  backend: string;
  level: string;
  tiers: string[];
  cmakeFlags: string[];
  leftOut: { tier: string; label: string; flags: string[]; reason: string }[];
  host: { model: string; fingerprint: string };
  probe: { ok: boolean; reason: string; systemInfo?: string; tokens?: number; ms?: number };
  probedAt: string;
}

/** The record of the addon built in `addonBuildDir`. */
export function cpuBuildRecordPath(addonBuildDir: string): string {
  return `${addonBuildDir}-cpu-build.json`;
}

/** The record at `path`, or undefined when there is none (a build from before the probe existed) or it is unreadable. */
export function readCpuBuildRecord(path: string): CpuBuildRecord | undefined {
  try {
    const record = JSON.parse(readFileSync(path, 'utf8')) as CpuBuildRecord;
    return typeof record.level === 'string' && Array.isArray(record.cmakeFlags) ? record : undefined;
  } catch {
    return undefined;
  }
}

/** Writes the record whole or not at all (temporary file + rename). */
export function writeCpuBuildRecord(path: string, record: CpuBuildRecord): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(record, null, 2) + '\n');
  renameSync(tmp, path);
}

/** Whether a record proves this build runs on `host`: the probe passed, on a CPU that reports the same features. */
export function recordCoversHost(record: CpuBuildRecord | undefined, host: HostCpu): boolean {
  return record !== undefined && record.probe.ok && record.host.fingerprint === host.fingerprint;
}
