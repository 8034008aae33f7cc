/**
 * The child process of probeEngineBuild: loads the engine build, makes the tiny model in each weight type whose
 * CPU kernels differ (q4_0, q8_0, f16: the AMX and AVX-512 paths among them), loads each, decodes a few tokens,
 * and prints one JSON report. If the build uses an instruction the host cannot run, this process dies by a
 * signal and the parent sees which.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Engine } from '../Engine';
import { loadAddon } from '../loadAddon';
import { makeModel } from '../makeModel';
import { TIER_FEATURE } from './probeEngineBuild';

async function main(): Promise<void> {
  const started = Date.now();
  const systemInfo = loadAddon().systemInfo();
  // Test knob: act as a build whose `tier` instructions the host cannot run.
  const fault = process.env.MOEFLASH_CPU_PROBE_FAULT;
  if (fault && TIER_FEATURE[fault] && new RegExp(`\\b${TIER_FEATURE[fault]} = 1\\b`).test(systemInfo)) {
    process.kill(process.pid, 'SIGILL');
  }
  const dir = mkdtempSync(join(tmpdir(), 'moeflash-probe-'));
  let tokens = 0;
  try {
    for (const type of ['q4_0', 'q8_0', 'f16'] as const) {
      const path = join(dir, `probe-${type}.gguf`);
      await makeModel(path, { preset: 'tiny', type, seed: 1 });
      const engine = await Engine.load({ path, nGpuLayers: 0, threads: 1, contextSize: 128, parallel: 1, hintChannel: undefined });
      try {
        for await (const event of engine.generate({ prompt: 'the probe decodes', maxTokens: 4, sampling: { temperature: 0 } })) {
          if (event.type === 'chunk') tokens += event.tokenIds.length;
        }
      } finally {
        await engine.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify({ systemInfo, tokens, ms: Date.now() - started }) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
