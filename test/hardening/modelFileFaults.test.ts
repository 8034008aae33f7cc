/**
 * Model files that vanish or cannot be read: the inference process (run unprivileged, so permissions apply) fails
 * those models' loads with an error naming the file and the reason, keeps running, and serves the model that
 * loaded; a model file deleted while it is served changes nothing (the mapping keeps the file's pages).
 */
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Status } from 'nice-grpc';

import { drain, failure, generateRequest, generationClient } from '../../harness/grpcClients';
import { spawnService, type SpawnedService } from '../../harness/spawnService';
import { routerReady, startRouter, type RouterInstance } from '../../harness/startStack';
import { testModel } from '../../harness/testModels';

const UNPRIVILEGED_INFERENCE_MAIN = path.resolve(__dirname, 'unprivilegedInferenceMain.js');

describe('inference: vanished and unreadable model files', function () {
  let dir: string;
  let inference: SpawnedService | undefined;
  let router: RouterInstance | undefined;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'moeflash-model-faults-'));
    chmodSync(dir, 0o755); // the unprivileged service must reach the files
  });
  after(async () => {
    await router?.stop();
    inference?.child.kill('SIGKILL');
    await inference?.exited;
    rmSync(dir, { recursive: true, force: true });
  });

  it('each bad file fails its own model naming the file; the good model serves, even once its file is deleted', async () => {
    const tiny = await testModel('tiny');
    const file = (name: string) => {
      const p = path.join(dir, `${name}.gguf`);
      copyFileSync(tiny, p);
      chmodSync(p, 0o644);
      return p;
    };
    const vanished = file('vanished');
    const unreadable = file('unreadable');
    const good = file('good');
    const options = { threads: 1, parallel: 2, contextSize: 256 };
    const modelsFile = path.join(dir, 'models.json');
    writeFileSync(modelsFile, JSON.stringify({ vanished: { path: vanished, options }, unreadable: { path: unreadable, options }, good: { path: good, options } }));
    chmodSync(modelsFile, 0o644);
    // Configured, then gone before the load; and present but not readable by the service's user.
    unlinkSync(vanished);
    chmodSync(unreadable, 0o000);

    inference = await spawnService(UNPRIVILEGED_INFERENCE_MAIN, {
      MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0',
      MOEFLASH_MODELS: modelsFile,
      MOEFLASH_HINTS: '0',
      MOEFLASH_METRICS_ADDR: 'off',
    });
    await inference.waitForLog((l) => l.msg === 'model ready' && l.model === 'good');
    const failed = (model: string) => inference!.logs.find((l) => l.msg === 'model failed to load' && l.model === model) as { err?: { message?: string } } | undefined;
    assert.equal(failed('vanished')?.err?.message, `cannot load model '${vanished}': no such file`);
    assert.equal(failed('unreadable')?.err?.message, `cannot load model '${unreadable}': permission denied`);

    router = await startRouter([`127.0.0.1:${inference.port}`]);
    await routerReady(router.router, 'good');
    const { client, channel } = generationClient(router.address);
    try {
      const request = generateRequest({ model: 'good', prompt: 'The quick brown fox', maxTokens: 24, sampling: { temperature: 0 } });
      const reference = await drain(client.generate(request));
      assert.equal(reference.tokens.length, 24);
      for (const model of ['vanished', 'unreadable']) {
        const f = await failure((o) => drain(client.generate({ ...request, model }, o)));
        assert.equal(f.code, Status.UNAVAILABLE, model);
      }

      unlinkSync(good);
      assert.deepEqual((await drain(client.generate(request))).tokens, reference.tokens);
      assert.equal(inference.child.exitCode, null, 'the service keeps running');
    } finally {
      channel.close();
    }
  });
});
