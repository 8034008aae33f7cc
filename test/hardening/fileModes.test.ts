import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Channel as GrpcChannel, credentials } from '@grpc/grpc-js';
import { createChannel, createClient } from 'nice-grpc';
import { ExpertStoreServiceDefinition } from '../../gen/moeflash/v1/expert_store';
import { InferenceServiceDefinition } from '../../gen/moeflash/v1/inference';
import { DefinitionClient } from '../../services/common/DefinitionClient';
import { repoRoot } from '../../services/engine/loadAddon';
import { ExpertStore } from '../../services/expert-store/ExpertStore';
import { hintChannelName } from '../../services/common/hintChannelName';
import { drain, generateRequest } from '../../harness/grpcClients';
import { spawnService, type SpawnedService } from '../../harness/spawnService';
import { testModel } from '../../harness/testModels';
import { copyModel, until } from '../expert-store/writeTestGguf';

const mode = (path: string) => statSync(path).mode & 0o777;
const octal = (m: number) => `0${m.toString(8)}`;

/** Starts a service entry with umask 000, so that only the modes the code asks for protect what it creates. */
function spawnWithOpenUmask(script: string, env: Record<string, string>): Promise<SpawnedService> {
  const previous = process.umask(0o000);
  try {
    return spawnService(join(repoRoot(), 'dist', 'services', script), { MOEFLASH_METRICS_ADDR: 'off', ...env });
  } finally {
    process.umask(previous);
  }
}

describe('hardening: modes of the files the services create', function () {
  this.timeout(120_000);
  let dir: string;
  let segment: string | undefined;
  const running: SpawnedService[] = [];

  before(() => (dir = mkdtempSync(join(tmpdir(), 'moeflash-modes-'))));
  afterEach(async () => {
    for (const s of running.splice(0)) {
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
      await s.exited;
    }
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    // The engine leaves its segment for a restarted expert-store; this one belongs to the test's model copy.
    if (segment) rmSync(segment, { force: true });
  });

  it('the hint channel segment, the state directory and the heat map are private to the owner even with umask 000', async () => {
    // A copy in a fresh directory: its own hint channel name (the name hashes the model's real path).
    const modelPath = copyModel(await testModel('tiny'), join(dir, 'tiny.gguf'));
    const stateDir = join(dir, 'state', 'nested');
    segment = join('/dev/shm', hintChannelName(modelPath));
    const inference = await spawnWithOpenUmask('inference/main.js', { MOEFLASH_MODEL: modelPath, MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0' });
    running.push(inference);
    await inference.waitForLog((l) => l.msg === 'model ready');
    const store = await spawnWithOpenUmask('expert-store/main.js', {
      MOEFLASH_MODEL: modelPath,
      MOEFLASH_EXPERT_STORE_ADDR: '127.0.0.1:0',
      MOEFLASH_EXPERT_STORE_HTTP_ADDR: 'off',
      MOEFLASH_STATE_DIR: stateDir,
      MOEFLASH_WARM_ON_START: 'none',
    });
    running.push(store);
    const storeChannel = createChannel(`127.0.0.1:${store.port}`);
    const backendAddress = `127.0.0.1:${inference.port}`;
    const backendChannel = new GrpcChannel(backendAddress, credentials.createInsecure(), {});
    try {
      const storeClient = createClient(ExpertStoreServiceDefinition, storeChannel);
      await until('the store to attach to the engine hint channel', async () => (await storeClient.stats({})).hintChannelAttached);
      assert.equal(mode(segment), 0o600, `${segment} is ${octal(mode(segment))}`);
      assert.equal(statSync(segment).uid, process.getuid!());

      const backend = new DefinitionClient(InferenceServiceDefinition, backendChannel, backendAddress);
      const { tokens } = await drain(backend.serverStream('generate', generateRequest({ model: 'tiny', prompt: 'modes', maxTokens: 4 })));
      assert.equal(tokens.length, 4);
      await until('the hints in the heat map', async () => (await storeClient.getHeatMap({})).stepsObserved > 0);

      // SIGTERM: the store saves its heat map on the way out.
      store.child.kill('SIGTERM');
      assert.equal(await store.exited, 0);
      const heatMap = ExpertStore.heatMapFile(stateDir, modelPath);
      assert.ok(existsSync(heatMap), `${heatMap} was written`);
      assert.equal(mode(heatMap), 0o600, `heat map ${octal(mode(heatMap))}`);
      assert.equal(mode(stateDir), 0o700, `state dir ${octal(mode(stateDir))}`);
      assert.equal(mode(join(dir, 'state')), 0o700, `created parent ${octal(mode(join(dir, 'state')))}`);
      assert.deepEqual(readdirSync(stateDir), [heatMap.replace(/^.*\//, '')], 'no temporary file left behind');
      // Nothing else the services made, here or in /dev/shm, is readable by others.
      const strays = readdirSync('/dev/shm').filter((f) => f.startsWith(hintChannelName(modelPath)));
      for (const f of strays) assert.equal(mode(join('/dev/shm', f)), 0o600, f);
      inference.child.kill('SIGTERM');
      assert.equal(await inference.exited, 0);
    } finally {
      storeChannel.close();
      backendChannel.close();
    }
  });
});
