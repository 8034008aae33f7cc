/**
 * `moeflash cpu-build select|probe|show`: the CPU build of the engine on this host.
 *   select  build llama.cpp + the addon at the best instruction-set level that survives a probe (build-native runs it)
 *   probe   run the probe against the current build now (a tiny decode in a child process); exit 1 if it dies
 *   show    print the build record (level, left-out instruction sets, host) as JSON
 */
import { addonBuildDir } from '../../services/engine/loadAddon';
import { cpuBuildRecordPath, readCpuBuildRecord, recordCoversHost } from '../../services/engine/cpuBuild/cpuBuildRecord';
import { hostCpu } from '../../services/engine/cpuBuild/hostCpu';
import { probeEngineBuild } from '../../services/engine/cpuBuild/probeEngineBuild';
import { selectCpuBuild } from '../../services/engine/cpuBuild/selectCpuBuild';

export async function cpuBuildCommand(argv: string[]): Promise<number> {
  const [sub] = argv;
  if (sub === 'select') {
    await selectCpuBuild();
    return 0;
  }
  if (sub === 'probe') {
    const result = await probeEngineBuild();
    process.stdout.write(`${result.ok ? 'ok' : 'FAILED'}: ${result.reason}\n`);
    return result.ok ? 0 : 1;
  }
  if (sub === 'show') {
    const path = cpuBuildRecordPath(addonBuildDir());
    const record = readCpuBuildRecord(path);
    if (!record) {
      process.stderr.write(`moeflash cpu-build: no record at ${path} (run npm run build:native)\n`);
      return 1;
    }
    process.stdout.write(JSON.stringify({ ...record, coversThisHost: recordCoversHost(record, hostCpu()) }, null, 2) + '\n');
    return 0;
  }
  process.stderr.write('usage: moeflash cpu-build select|probe|show\n');
  return 2;
}
