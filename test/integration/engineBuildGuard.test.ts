import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { Status, createChannel, createClient } from 'nice-grpc';

import { InferenceServiceDefinition, ModelState } from '../../gen/moeflash/v1/inference';
import { cpuBuildRecordPath, readCpuBuildRecord } from '../../services/engine/cpuBuild/cpuBuildRecord';
import { TIER_FEATURE } from '../../services/engine/cpuBuild/probeEngineBuild';
import { addonBuildDir } from '../../services/engine/loadAddon';
import { drain, failure, generateRequest, generationClient } from '../../harness/grpcClients';
import { spawnService } from '../../harness/spawnService';
import { testModel } from '../../harness/testModels';
import { spawnServe } from './spawnServe';

const INFERENCE_MAIN = path.resolve(__dirname, '..', '..', 'services', 'inference', 'main.js');

/** A tier the installed build compiled in (so the fault knob can make its probe die), if any. */
function compiledTier(): string | undefined {
  const info = readCpuBuildRecord(cpuBuildRecordPath(addonBuildDir()))?.probe.systemInfo ?? '';
  return Object.keys(TIER_FEATURE).find((tier) => info.includes(`${TIER_FEATURE[tier]} = 1`));
}

/**
 * The installed addon seen from another host: the same Release folder, but a build record whose probe ran on a
 * CPU with other features, so the inference service must probe the build itself before loading anything.
 */
function buildFromAnotherHost(dir: string): string {
  const own = addonBuildDir();
  const buildDir = path.join(dir, 'addon-build');
  mkdirSync(buildDir);
  symlinkSync(path.join(own, 'Release'), path.join(buildDir, 'Release'));
  const record = JSON.parse(readFileSync(cpuBuildRecordPath(own), 'utf8'));
  record.host = { model: 'another CPU', fingerprint: '0000000000000000' };
  writeFileSync(cpuBuildRecordPath(buildDir), JSON.stringify(record));
  return buildDir;
}

async function modelLoad(address: string, model: string) {
  const channel = createChannel(address);
  try {
    const { models } = await createClient(InferenceServiceDefinition, channel).getLoad({});
    return models.find((m) => m.model === model);
  } finally {
    channel.close();
  }
}

describe('engine build guard (inference service)', () => {
  let dir: string;
  let model: string;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'moeflash-guard-'));
    model = path.join(dir, 'tiny.gguf');
    copyFileSync(await testModel('tiny'), model);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a build probed on another CPU is probed again at start; one that dies there fails its models with the reason and stays up', async function () {
    const tier = compiledTier();
    if (!tier) this.skip(); // a baseline build: nothing the knob can fault
    const env = { MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0', MOEFLASH_MODEL: model, MOEFLASH_STATE_DIR: path.join(dir, 'state'), MOEFLASH_ADDON_BUILD_DIR: buildFromAnotherHost(dir) };
    const faulty = await spawnService(INFERENCE_MAIN, { ...env, MOEFLASH_CPU_PROBE_FAULT: tier! });
    try {
      await faulty.waitForLog((l) => l.msg === 'engine CPU build failed its probe');
      const load = await modelLoad(`127.0.0.1:${faulty.port}`, 'tiny');
      assert.equal(load?.state, ModelState.MODEL_STATE_FAILED);
      assert.match(load!.error, /died with SIGILL/);
      assert.match(load!.error, /npm run build:native/);
      // still up (no exit, so no restart loop), answering with the reason
      const channel = createChannel(`127.0.0.1:${faulty.port}`);
      try {
        const client = createClient(InferenceServiceDefinition, channel);
        const err = await failure((o) => drain(client.generate(generateRequest({ model: 'tiny', prompt: 'a', maxTokens: 2 }), o)));
        assert.equal(err.code, Status.UNAVAILABLE);
        assert.match(err.details, /failed to load: the engine build .* does not run on this host's CPU/);
      } finally {
        channel.close();
      }
      assert.equal(faulty.child.exitCode, null);
    } finally {
      faulty.child.kill('SIGTERM');
      await faulty.exited;
    }

    const healthy = await spawnService(INFERENCE_MAIN, env);
    try {
      await healthy.waitForLog((l) => l.msg === 'model ready');
      assert.ok(healthy.logs.some((l) => l.msg === 'engine CPU build probed at start'));
    } finally {
      healthy.child.kill('SIGTERM');
      await healthy.exited;
    }
  });

  it('a model that crashed the process in its first decode is reported failed after the restart, not reloaded in a loop', async () => {
    const stateDir = path.join(dir, 'serve-state');
    const serve = await spawnServe(model, stateDir, { MOEFLASH_FAILPOINT: 'first-decode:tiny', MOEFLASH_ROUTER_LOAD_POLL_MS: '100' });
    try {
      const first = await serve.listening('inference');
      await serve.waitForLine((l) => typeof l.msg === 'string' && /inference exited \(SIGILL\); restarting/.test(l.msg));
      const second = await serve.listening('inference', serve.lines.findIndex((l) => l.name === 'inference' && l.pid === first) + 1);
      assert.notEqual(second, first);
      const refused = await serve.waitForLine((l) => l.msg === 'model not loaded: it crashed the engine before');
      assert.match(String(refused.reason), /died during this model's first decode .*\(it ended with SIGILL\)/);
      // the router passes the reason on once its load poll (every MOEFLASH_ROUTER_LOAD_POLL_MS) has seen it
      const { client, channel } = generationClient(serve.addresses.router);
      try {
        const deadline = Date.now() + 30_000;
        for (;;) {
          const err = await failure((o) => drain(client.generate(generateRequest({ model: 'tiny', prompt: 'a', maxTokens: 2 }), o)));
          assert.equal(err.code, Status.UNAVAILABLE);
          if (/first decode/.test(err.details)) break;
          assert.ok(Date.now() < deadline, `the router never named the reason: ${err.details}`);
          await new Promise((r) => setTimeout(r, 100)); // polling a condition across processes, not a timing assumption
        }
      } finally {
        channel.close();
      }
      const load = await modelLoad(serve.addresses.inference, 'tiny');
      assert.equal(load?.state, ModelState.MODEL_STATE_FAILED);
      assert.equal(serve.lines.filter((l) => typeof l.msg === 'string' && /inference exited/.test(l.msg)).length, 1);
    } finally {
      serve.child.kill('SIGTERM');
      await serve.exited;
    }
  });
});
