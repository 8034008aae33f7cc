import type { Logger } from 'pino';

import { cpuBuildRecordPath, readCpuBuildRecord, recordCoversHost } from '../engine/cpuBuild/cpuBuildRecord';
import { hostCpu } from '../engine/cpuBuild/hostCpu';
import { probeEngineBuild } from '../engine/cpuBuild/probeEngineBuild';
import { addonBuildDir } from '../engine/loadAddon';

/** Whether the engine build runs on this CPU, and the build's identity (for FirstDecodeGuard). */
export type EngineBuildCheck = { ok: true; build: string } | { ok: false; build: string; reason: string };

/**
 * Before any model is loaded in-process: is the engine build safe on this CPU? The install's probe record answers
 * when it was made on a CPU reporting the same features; otherwise (a build copied from another machine, an image
 * built elsewhere, a host whose CPU changed) the same probe runs now in a child process, so a build that dies by an
 * unsupported instruction takes the child down, not this service.
 */
export async function checkEngineBuild(log: Logger): Promise<EngineBuildCheck> {
  const recordPath = cpuBuildRecordPath(addonBuildDir());
  const record = readCpuBuildRecord(recordPath);
  const host = hostCpu();
  const build = record ? `${record.level}@${record.probedAt}` : 'unrecorded';
  if (recordCoversHost(record, host)) {
    log.info({ level: record!.level, leftOut: record!.leftOut.map((l) => l.tier) }, 'engine CPU build probed at install on this CPU');
    return { ok: true, build };
  }
  const started = Date.now();
  const probe = await probeEngineBuild();
  const why = record ? 'its install probe ran on another CPU' : 'it has no install probe record';
  if (probe.ok) {
    log.info({ level: record?.level, probeMs: Date.now() - started, why }, 'engine CPU build probed at start');
    return { ok: true, build };
  }
  const reason =
    `the engine build${record ? ` (CPU level '${record.level}')` : ''} does not run on this host's CPU (${host.model}): ` +
    `${probe.reason}. Rebuild it here with npm run build:native, which probes the CPU and leaves out what it cannot run`;
  log.error({ probe, why }, 'engine CPU build failed its probe');
  return { ok: false, build, reason };
}
