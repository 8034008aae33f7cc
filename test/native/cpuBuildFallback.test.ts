import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';

import { cpuBuildLadder } from '../../services/engine/cpuBuild/cpuBuildLadder';
import { cpuBuildRecordPath, readCpuBuildRecord } from '../../services/engine/cpuBuild/cpuBuildRecord';
import { hostCpu } from '../../services/engine/cpuBuild/hostCpu';
import { TIER_FEATURE } from '../../services/engine/cpuBuild/probeEngineBuild';
import { repoRoot } from '../../services/engine/loadAddon';
import { testModel } from '../../harness/testModels';

function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | string; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: repoRoot(), env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('exit', (code, signal) => resolve({ code: code ?? signal ?? -1, output }));
  });
}

/**
 * The install's CPU probe, end to end: a second llama.cpp + addon build (beside the installed one, sharing its
 * ccache) whose first level is made to die by SIGILL in the probe, as AMX did on an Intel VM. The install must
 * name what it leaves out, rebuild one tier down, probe again and record a build that decodes.
 */
describe('CPU build fallback (install probe)', function () {
  this.timeout(30 * 60_000);
  const root = repoRoot();
  const llamaDir = path.join(root, 'build', 'llama', 'patched', 'build-cpu-fallback-test'); // same depth as build-cpu: ccache hits
  const addonDir = path.join(root, 'native', 'build', 'cpu-fallback-test');
  const ladder = cpuBuildLadder(hostCpu());
  const top = ladder[0];
  const faultTier = top.tiers.at(-1);

  it('a probe that dies by a signal moves the build one instruction-set tier down, says so, and ends in a working engine', async function () {
    if (ladder.length < 2 || !faultTier || !TIER_FEATURE[faultTier]) this.skip(); // nothing above the baseline here
    rmSync(cpuBuildRecordPath(addonDir), { force: true });
    const env = {
      ...process.env,
      MOEFLASH_BACKEND: 'cpu',
      MOEFLASH_LLAMA_BUILD_DIR: llamaDir,
      MOEFLASH_ADDON_BUILD_DIR: addonDir,
      MOEFLASH_LLAMA_TARGETS: 'llama ggml llama-common',
      MOEFLASH_CPU_PROBE_FAULT: faultTier,
    };
    const build = await run('bash', ['scripts/build-native.sh'], env);
    assert.equal(build.code, 0, build.output.slice(-3000));
    const next = ladder[1];
    assert.ok(
      build.output.includes(`died with SIGILL during a tiny decode with the '${top.name}' build; building again without ${next.dropped!.label}`),
      build.output.slice(-3000),
    );
    assert.match(build.output, new RegExp(`CPU build '${next.name}' chosen: .*left out: ${next.dropped!.label} \\(SIGILL`));

    const record = readCpuBuildRecord(cpuBuildRecordPath(addonDir));
    assert.equal(record?.level, next.name);
    assert.deepEqual(record?.cmakeFlags, next.cmakeFlags);
    assert.equal(record?.leftOut[0]?.tier, faultTier);
    assert.equal(record?.probe.ok, true);
    assert.ok(!record?.probe.systemInfo?.includes(`${TIER_FEATURE[faultTier]} = 1`), 'the chosen build has the tier compiled out');

    // the engine of that build generates through the CLI, the knob still set (it no longer applies)
    const generated = await run(process.execPath, ['bin/moeflash.js', 'generate', '--model', await testModel('tiny'), '--prompt', 'Hello', '--max-tokens', '8', '--temperature', '0', '--json'], env);
    assert.equal(generated.code, 0, generated.output);
    const tokens = generated.output.split('\n').filter((l) => l.startsWith('{')).flatMap((l) => (JSON.parse(l) as { tokens?: number[] }).tokens ?? []);
    assert.ok(tokens.length > 0, generated.output);
  });
});
