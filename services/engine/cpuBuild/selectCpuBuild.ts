import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import { addonBackend, addonBuildDir, repoRoot } from '../loadAddon';
import { cpuBuildLadder, type CpuBuildLevel } from './cpuBuildLadder';
import { cpuBuildRecordPath, readCpuBuildRecord, recordCoversHost, writeCpuBuildRecord, type CpuBuildRecord } from './cpuBuildRecord';
import { hostCpu } from './hostCpu';
import { probeEngineBuild } from './probeEngineBuild';

/** Where the ladder starts: at a passing record's level for this host; with MOEFLASH_PORTABLE=1 at AVX2 at most. */
function startIndex(ladder: CpuBuildLevel[], previous: CpuBuildRecord | undefined, portable: boolean): number {
  const recorded = previous ? Math.max(0, ladder.findIndex((l) => l.name === previous.level)) : 0;
  // x86-64-v3 (AVX2, FMA, F16C, BMI2): what binaries that travel to other machines can assume
  const portableAt = portable ? ladder.findIndex((l) => !l.tiers.some((t) => t === 'avx512' || t === 'amx' || t === 'avx_vnni')) : 0;
  return Math.max(recorded, portableAt);
}

function run(script: string, args: string[], env: NodeJS.ProcessEnv): void {
  const r = spawnSync('bash', [join(repoRoot(), 'scripts', script), ...args], { env, stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`scripts/${script} failed (${r.signal ?? `exit ${r.status}`})`);
}

/**
 * Builds llama.cpp and the addon at the best CPU level this host runs, proven by a probe: build, probe a tiny
 * decode in a child, and on a death by signal go one instruction-set tier down, saying in one line what was left
 * out and why. Writes the record next to the addon (the stock peer's build and the inference service read it).
 * Returns the record; throws when no level passes, or the probe fails for a reason other than a signal on a CPU
 * build (a GPU build whose device is absent here is recorded as unprobed instead).
 */
export async function selectCpuBuild(log: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<CpuBuildRecord> {
  const backend = addonBackend();
  const host = hostCpu();
  const ladder = cpuBuildLadder(host);
  const recordPath = cpuBuildRecordPath(addonBuildDir(backend));
  const previous = readCpuBuildRecord(recordPath);
  const trusted = recordCoversHost(previous, host) && previous?.backend === backend ? previous : undefined;
  const start = startIndex(ladder, trusted, process.env.MOEFLASH_PORTABLE === '1');
  // what the levels above the start left out: the record's reasons, else the portable build's
  const leftOut: CpuBuildRecord['leftOut'] = ladder.slice(1, start + 1).flatMap((l) => {
    if (!l.dropped) return [];
    const known = trusted?.leftOut.find((x) => x.tier === l.dropped!.tier);
    return [known ?? { ...l.dropped, reason: 'MOEFLASH_PORTABLE=1' }];
  });

  for (const level of ladder.slice(start)) {
    log(`build-native: CPU build '${level.name}' (${level.tiers.join(' ') || 'x86-64 baseline'}) on ${host.model}`);
    const env = { ...process.env, MOEFLASH_BACKEND: backend, MOEFLASH_CPU_FLAGS: level.cmakeFlags.join(' ') };
    run('build-llama-cpp.sh', ['patched'], env);
    run('build-addon.sh', [], env);
    const probe = await probeEngineBuild({ env });
    const record: CpuBuildRecord = {
      backend,
      level: level.name,
      tiers: level.tiers,
      cmakeFlags: level.cmakeFlags,
      leftOut,
      host: { model: host.model, fingerprint: host.fingerprint },
      probe: { ok: probe.ok, reason: probe.reason, systemInfo: probe.systemInfo, tokens: probe.tokens, ms: probe.ms },
      probedAt: new Date().toISOString(),
    };
    if (probe.ok) {
      writeCpuBuildRecord(recordPath, record);
      const without = leftOut.length ? `; left out: ${leftOut.map((l) => `${l.label} (${l.reason})`).join(', ')}` : '';
      log(`build-native: CPU build '${level.name}' chosen: the probe ${probe.reason} in ${probe.ms} ms${without}`);
      return record;
    }
    if (!probe.signal) {
      if (backend !== 'cpu') {
        // e.g. a CUDA build made on a machine without the driver: it cannot be probed here, only where it runs (the
        // record says probe.ok false, so the inference service probes it there)
        writeCpuBuildRecord(recordPath, record);
        log(`build-native: ${backend} build not probed here (${probe.reason}); the inference service probes it where it runs`);
        return record;
      }
      throw new Error(`the CPU build '${level.name}' does not run: ${probe.reason}`);
    }
    const next = ladder[ladder.indexOf(level) + 1];
    if (!next?.dropped) throw new Error(`no CPU build runs on this host: the last one, '${level.name}', ${probe.reason}`);
    leftOut.push({ ...next.dropped, reason: `${probe.signal} in the probe of the '${level.name}' build` });
    log(
      `build-native: ${probe.reason} with the '${level.name}' build; building again without ${next.dropped.label}` +
        ` (${next.dropped.flags.join(' ')}), which this host reports but does not run`,
    );
  }
  throw new Error('no CPU build level to try');
}
