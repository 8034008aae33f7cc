/**
 * Disk full while the expert-store persists its heat map: the state directory is a 64 KiB tmpfs, filled up. The
 * save fails with ENOSPC, the previous file stays byte-identical, no temporary file is left, the store keeps
 * serving and keeps its in-memory map, and the next save after space is freed succeeds. Needs permission to
 * mount (root in CI); skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createChannel, createClient } from 'nice-grpc';
import pino from 'pino';

import { ExpertStoreServiceDefinition } from '../../gen/moeflash/v1/expert_store';
import { ExpertStore } from '../../services/expert-store/ExpertStore';
import { createExpertStoreServer } from '../../services/expert-store/createExpertStoreServer';
import { HeatMap } from '../../services/expert-store/HeatMap';
import { copyModel, until } from '../expert-store/writeTestGguf';
import { testModel } from '../../harness/testModels';

const MODEL = { path: '/models/m.gguf', size: 1234, name: 'm' };
const HOUR = 3_600_000;

/** Writes a filler file until the file system refuses with ENOSPC; returns its path. */
function fillUp(dir: string): string {
  const path = join(dir, 'filler');
  const fd = openSync(path, 'w');
  try {
    const block = Buffer.alloc(4096, 1);
    for (;;) writeSync(fd, block);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
  return path;
}

describe('expert-store: disk full while saving the heat map', function () {
  let dir: string;
  let stateDir: string;
  let mounted = false;

  before(function () {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-disk-full-'));
    stateDir = join(dir, 'state');
    mkdirSync(stateDir);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', stateDir], { stdio: 'pipe' });
      mounted = true;
    } catch (e) {
      const reason = String((e as { stderr?: Buffer }).stderr ?? e).trim();
      process.stderr.write(`      skipped: cannot mount a small tmpfs to fill up (${reason})\n`);
      this.skip();
    }
  });
  afterEach(() => {
    if (mounted) rmSync(join(stateDir, 'filler'), { force: true });
  });
  after(() => {
    if (mounted) execFileSync('umount', [stateDir]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('HeatMap.save on a full disk: ENOSPC, the old file byte-identical, no temporary file left', () => {
    const path = join(stateDir, 'heat.json');
    const h = new HeatMap(2, 3, HOUR, 0);
    h.observe([1, 2, 3, 4, 5, 6], 0);
    h.save(path, MODEL, 0);
    const before = readFileSync(path);
    const filler = fillUp(stateDir);

    h.observe([9, 9, 9, 9, 9, 9], 0);
    assert.throws(() => h.save(path, MODEL, 0), /ENOSPC/);
    assert.deepEqual(readFileSync(path), before);
    assert.equal(existsSync(`${path}.tmp`), false, 'the partial temporary file is removed');
    assert.equal(h.dirty, true, 'still to be saved');

    unlinkSync(filler);
    h.save(path, MODEL, 0);
    assert.deepEqual(Array.from(HeatMap.load(path, MODEL, 2, 3, HOUR)!.counts), [10, 11, 12, 13, 14, 15]);
    rmSync(path);
  });

  it('the expert-store keeps serving and retrying while the disk is full, and saves once space is back', async () => {
    const logs: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
    const modelPath = copyModel(await testModel('tiny'), join(dir, 'tiny.gguf'));
    const store = await ExpertStore.open({ modelPath, stateDir, log, hintChannel: false, persistIntervalMs: 20, foldIntervalMs: 20 });
    const server = createExpertStoreServer({ log, store });
    const port = await server.listen('127.0.0.1:0');
    const channel = createChannel(`127.0.0.1:${port}`);
    const client = createClient(ExpertStoreServiceDefinition, channel);
    const { nLayer, nExpert } = store.heat;
    const use = (layer: number, expert: number) => {
      const d = new Float64Array(nLayer * nExpert);
      d[layer * nExpert + expert] = 1;
      store.heat.observe(d);
    };
    const layer = store.index.moeLayers[0];
    const failures = () => logs.filter((l) => l.msg === 'saving the heat map failed; the previous file is kept').length;
    try {
      use(layer, 1);
      await until('the first save', () => existsSync(store.heatMapPath) && !store.heat.dirty);
      const before = readFileSync(store.heatMapPath);
      const filler = fillUp(stateDir);

      use(layer, 2);
      await until('two failed saves (the timer keeps trying)', () => failures() >= 2);
      assert.match(String(logs.find((l) => l.msg === 'saving the heat map failed; the previous file is kept')?.err), /ENOSPC/);
      assert.deepEqual(readFileSync(store.heatMapPath), before);
      assert.equal(existsSync(`${store.heatMapPath}.tmp`), false);
      // Still serving, with the use it could not save.
      assert.equal((await client.stats({})).hintChannel, '');
      const heat = await client.getHeatMap({});
      assert.deepEqual(heat.layers.find((l) => l.layer === layer)?.counts.slice(0, 3), [0, 1, 1]);

      unlinkSync(filler);
      await until('a save once space is back', () => !store.heat.dirty);
      const saved = HeatMap.load(store.heatMapPath, store.heatModel, nLayer, nExpert, HOUR)!;
      assert.equal(saved.counts[layer * nExpert + 2], 1);
    } finally {
      channel.close();
      await server.shutdown(0);
      await store.close();
    }
  });
});
