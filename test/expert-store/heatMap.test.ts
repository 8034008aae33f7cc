/** Heat map decay, order and atomic persistence; warm planning (non-expert first, heat order, budget prefix). */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { loadExpertIndex, type ExpertIndex } from '../../services/expert-store/ExpertIndex';
import { HeatMap } from '../../services/expert-store/HeatMap';
import { planWarm } from '../../services/expert-store/Warmer';
import { writeFileAtomic } from '../../services/expert-store/writeFileAtomic';
import { testModel } from '../../harness/testModels';

const MODEL = { path: '/models/m.gguf', size: 1234, name: 'm' };
const HOUR = 3_600_000;

describe('expert-store: heat map', function () {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'moeflash-heat-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('uses decay with the half-life; plain counts do not', () => {
    const h = new HeatMap(2, 4, HOUR, 0);
    const d = new Float64Array(8);
    d[1 * 4 + 2] = 8;
    h.observe(d, 0, 3);
    assert.equal(h.heatAt(HOUR)[6], 4);
    assert.equal(h.heatAt(3 * HOUR)[6], 1);
    assert.equal(h.counts[6], 8);
    assert.equal(h.observations, 8);
    assert.equal(h.stepsObserved, 3);
    assert.throws(() => h.observe(new Float64Array(3)), /expected 8 counts/);
  });

  it('orders experts hottest first, ties by layer then expert', () => {
    const h = new HeatMap(2, 3, HOUR, 0);
    h.observe([0, 5, 1, 5, 0, 2], 0);
    assert.deepEqual(
      h.hotOrder([0, 1], 0).map((x) => `${x.layer}:${x.expert}`),
      ['0:1', '1:0', '1:2', '0:2', '0:0', '1:1'],
    );
    assert.deepEqual(h.hotOrder([1], 0).map((x) => x.expert), [0, 2, 1]);
  });

  it('saves and loads (mode 0600), and refuses another model’s map', () => {
    const path = join(dir, 'heat.json');
    const h = new HeatMap(2, 3, HOUR, 1000);
    h.observe([1, 2, 3, 4, 5, 6], 1000, 7);
    assert.equal(h.dirty, true);
    h.save(path, MODEL, 1000);
    assert.equal(h.dirty, false);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const back = HeatMap.load(path, MODEL, 2, 3, HOUR);
    assert.ok(back);
    assert.deepEqual(Array.from(back.heatAt(1000)), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(Array.from(back.counts), [1, 2, 3, 4, 5, 6]);
    assert.equal(back.stepsObserved, 7);
    assert.equal(HeatMap.load(join(dir, 'none.json'), MODEL, 2, 3, HOUR), undefined);
    assert.throws(() => HeatMap.load(path, MODEL, 2, 4, HOUR), /is for a model of 2 layers x 3 experts/);
    assert.throws(() => HeatMap.load(path, { ...MODEL, size: 99 }, 2, 3, HOUR), /1234 bytes/);
    writeFileSync(join(dir, 'junk.json'), '{"format":');
    assert.throws(() => HeatMap.load(join(dir, 'junk.json'), MODEL, 2, 3, HOUR), /not valid JSON/);
  });

  it('a failed save leaves the old file intact (something in the way of the temporary file)', () => {
    const path = join(dir, 'heat.json');
    const h = new HeatMap(1, 2, HOUR, 0);
    h.observe([1, 0], 0);
    h.save(path, MODEL, 0);
    const before = readFileSync(path);
    h.observe([0, 9], 0);
    mkdirSync(`${path}.tmp`); // the temporary file cannot be created: as good as a full disk for this test
    assert.throws(() => h.save(path, MODEL, 0), /EISDIR/);
    assert.deepEqual(readFileSync(path), before);
    assert.equal(h.dirty, true, 'still to be saved');
    rmSync(`${path}.tmp`, { recursive: true });
    h.save(path, MODEL, 0);
    assert.deepEqual(HeatMap.load(path, MODEL, 1, 2, HOUR)?.counts, Float64Array.from([1, 9]));
  });

  it('writeFileAtomic: a missing directory fails without leaving anything behind', () => {
    assert.throws(() => writeFileAtomic(join(dir, 'no', 'such', 'f.json'), 'x'), /ENOENT/);
    writeFileAtomic(join(dir, 'f.json'), 'one');
    writeFileAtomic(join(dir, 'f.json'), 'two');
    assert.equal(readFileSync(join(dir, 'f.json'), 'utf8'), 'two');
    assert.throws(() => statSync(join(dir, 'f.json.tmp')), /ENOENT/);
  });
});

describe('expert-store: warm plan', function () {
  let index: ExpertIndex;
  before(async () => (index = await loadExpertIndex(await testModel('tiny'))));

  const hot = (pairs: [number, number][]) => pairs.map(([layer, expert], i) => ({ layer, expert, heat: 100 - i }));

  it('non-expert tensors first, then experts in heat order, cut to the budget as a prefix', () => {
    const perExpert = index.experts[0][0].bytes;
    const order = hot([[2, 5], [0, 1], [3, 7], [1, 0]]);
    const plan = planWarm(index, order, { budgetBytes: index.nonExpertBytes + 2 * perExpert + 10 });
    assert.equal(plan.nonExpertBytes, index.nonExpertBytes);
    assert.deepEqual(plan.experts.map((e) => `${e.layer}:${e.expert}`), ['2:5', '0:1']);
    assert.equal(plan.bytesTotal, index.nonExpertBytes + 2 * perExpert);
    const all = planWarm(index, order, { budgetBytes: Number.MAX_SAFE_INTEGER });
    assert.equal(all.experts.length, 4);
    const none = planWarm(index, order, { budgetBytes: 1000 });
    assert.deepEqual([none.experts.length, none.bytesTotal <= 1000], [0, true]);
  });

  it('explicit experts, hottest per layer, and skipping non-expert tensors', () => {
    const order = hot([[0, 1], [0, 2], [0, 3], [1, 4], [1, 5]]);
    const perLayer = planWarm(index, order, { budgetBytes: Number.MAX_SAFE_INTEGER, hottestPerLayer: 1, skipNonExpert: true });
    assert.deepEqual(perLayer.experts.map((e) => `${e.layer}:${e.expert}`), ['0:1', '1:4']);
    assert.equal(perLayer.nonExpertBytes, 0);
    const explicit = planWarm(index, order, { budgetBytes: Number.MAX_SAFE_INTEGER, experts: [{ layer: 3, expert: 6 }] });
    assert.deepEqual(explicit.experts.map((e) => `${e.layer}:${e.expert}`), ['3:6']);
    assert.throws(
      () => planWarm(index, order, { budgetBytes: 1, experts: [{ layer: 9, expert: 0 }] }),
      (e: unknown) => (e as { violations?: { field: string }[] }).violations?.[0].field === 'experts[0]',
    );
  });
});
