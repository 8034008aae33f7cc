/**
 * The expert-store process (dist/services/expert-store/main.js): it attaches to the engine's hint channel, dies by
 * kill -9 without the writer noticing, re-attaches when restarted, saves its heat map on SIGTERM and warms from it
 * on the next start.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Status } from 'nice-grpc';

import { loadAddon, type NativeHintWriter } from '../../services/engine/loadAddon';
import { failure } from '../../harness/grpcClients';
import { testModel } from '../../harness/testModels';
import { spawnExpertStore, type SpawnedExpertStore } from './spawnExpertStore';
import { copyModel, until } from './writeTestGguf';

describe('expert-store: process', function () {
  let dir: string;
  let modelPath: string;
  let writer: NativeHintWriter;
  const hintChannel = `moeflash-test-proc-${process.pid}`;
  const running: SpawnedExpertStore[] = [];

  async function start(env: Record<string, string> = {}) {
    const store = await spawnExpertStore(modelPath, join(dir, 'state'), hintChannel, { MOEFLASH_WARM_ON_START: 'heat', ...env });
    running.push(store);
    return store;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-proc-'));
    modelPath = copyModel(await testModel('tiny'), join(dir, 'tiny.gguf'));
    writer = new (loadAddon().HintWriter)(hintChannel);
  });
  afterEach(async () => {
    for (const { service, channel } of running.splice(0)) {
      channel.close();
      if (service.child.exitCode === null && service.child.signalCode === null) {
        service.child.kill('SIGKILL');
        await service.exited;
      }
    }
  });
  after(() => {
    writer?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('kill -9 mid-stream: the writer keeps publishing; a restarted store re-attaches; SIGTERM saves the heat map', async () => {
    let { service, client } = await start();
    await until('the store to attach', async () => (await client.stats({})).hintChannelAttached);
    writer.publish(0, [1, 2]);
    await until('the first hint', async () => (await client.stats({})).hintsReceived === 1);

    service.child.kill('SIGKILL');
    assert.equal(await service.exited, 'SIGKILL');
    // The engine side never notices: publishing goes on (records are overwritten, nobody waits).
    const before = writer.published();
    for (let i = 0; i < 10_000; i++) writer.publish(i % 4, [i % 8]);
    assert.equal(writer.published(), before + 10_000);

    ({ service, client } = await start());
    await until('the restarted store to attach', async () => (await client.stats({})).hintChannelAttached);
    writer.publish(0, [3]);
    writer.publish(1, [5, 6]);
    await until('hints in the new process', async () => (await client.stats({})).hintsReceived === 2);
    await until('the uses in its heat map', async () => (await client.getHeatMap({})).layers[1].counts[6] === 1);

    service.child.kill('SIGTERM');
    assert.equal(await service.exited, 0);
    const saved = readdirSync(join(dir, 'state')).filter((f) => f.startsWith('heatmap-') && f.endsWith('.json'));
    assert.equal(saved.length, 1);
    assert.equal(statSync(join(dir, 'state', saved[0])).mode & 0o777, 0o600);

    // The next start loads the map and warms the experts it has seen used (non-expert tensors first).
    ({ service, client } = await start());
    await service.waitForLog((l) => l.msg === 'heat map loaded');
    const warmed = await service.waitForLog((l) => l.msg === 'startup warm done');
    assert.equal(warmed.experts, 3);
    const heat = await client.getHeatMap({});
    assert.equal(heat.layers[0].counts[3], 1);
  });

  it("runs on the I/O addon alone: llama.cpp's engine library is never mapped into the process", async () => {
    const { service, client } = await start();
    // Attached to the hint channel, index read, prefetch ready: everything the store loads is loaded.
    await until('the store to attach', async () => (await client.stats({})).hintChannelAttached);
    const maps = readFileSync(`/proc/${service.child.pid}/maps`, 'utf8');
    assert.match(maps, /moeflash_io\.node/);
    assert.doesNotMatch(maps, /libllama\.so|moeflash\.node|libggml-cpu/);
  });

  it('without a model it serves health and Stats, and UNAVAILABLE for the rest', async () => {
    const { client } = await start({ MOEFLASH_MODEL: '' });
    assert.equal((await client.stats({})).bytesWarmed, 0);
    const evict = await failure((o) => client.evict({}, o));
    assert.equal(evict.code, Status.UNAVAILABLE);
    assert.match(evict.details, /no model/);
  });

  it('a truncated model fails the start with a clear error', async () => {
    const { truncateSync, copyFileSync } = await import('node:fs');
    const bad = join(dir, 'truncated.gguf');
    copyFileSync(modelPath, bad);
    truncateSync(bad, Math.floor(statSync(bad).size / 2));
    await assert.rejects(start({ MOEFLASH_MODEL: bad }), /exited \(1\) before listening.*truncated/s);
  });
});
