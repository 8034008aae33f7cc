/** The expert index: exact, contiguous, non-overlapping byte ranges from ggml's own layout; splits; bad files. */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ModelLoadError } from '../../services/common/errors';
import { loadAddon } from '../../services/engine/loadAddon';
import { modelShardPaths } from '../../services/common/modelShardPaths';
import { loadExpertIndex, type ExpertIndex, type FileRange } from '../../services/expert-store/ExpertIndex';
import { testModel } from '../../harness/testModels';
import { writeTestGguf, type TestTensor } from './writeTestGguf';

function checkAgainstLayout(index: ExpertIndex, layouts: Awaited<ReturnType<ReturnType<typeof loadAddon>['readGgufLayout']>>[]): void {
  for (const [file, layout] of layouts.entries()) {
    for (const t of layout.tensors) {
      const m = /^blk\.(\d+)\.ffn_(gate|up|down|gate_up)_exps\.weight$/.exec(t.name);
      if (!m) {
        assert.ok(index.nonExpert.some((r) => r.tensor === t.name && r.file === file && r.offset === t.offset && r.length === t.nbytes), `${t.name} indexed as non-expert`);
        continue;
      }
      const layer = Number(m[1]);
      const nExpert = t.ne[2];
      assert.equal(nExpert, index.nExpert);
      // expert e's slab of this tensor: offset + e * nbytes / n_expert, back to back, covering the tensor exactly
      let end = t.offset;
      for (let e = 0; e < nExpert; e++) {
        const slab = index.experts[layer][e].ranges.find((r) => r.tensor === t.name);
        assert.ok(slab, `layer ${layer} expert ${e} has a slab of ${t.name}`);
        assert.equal(slab.file, file);
        assert.equal(slab.offset, t.offset + (e * t.nbytes) / nExpert);
        assert.equal(slab.offset, end, 'contiguous');
        end = slab.offset + slab.length;
      }
      assert.equal(end, t.offset + t.nbytes, 'the slabs cover the tensor');
    }
  }
  // every range of the index, experts and the rest, is inside its file and overlaps no other
  const all: FileRange[] = [...index.experts.flat().flatMap((e) => e.ranges), ...index.nonExpert];
  all.sort((a, b) => a.file - b.file || a.offset - b.offset);
  for (let i = 0; i < all.length; i++) {
    assert.ok(all[i].offset + all[i].length <= index.files[all[i].file].size, 'inside the file');
    if (i > 0 && all[i - 1].file === all[i].file) assert.ok(all[i - 1].offset + all[i - 1].length <= all[i].offset, 'no overlap');
  }
  const tensorBytes = layouts.reduce((s, l) => s + l.tensors.reduce((t, x) => t + x.nbytes, 0), 0);
  assert.equal(index.expertBytes + index.nonExpertBytes, tensorBytes);
}

describe('expert-store: expert index', function () {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'moeflash-index-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const preset of ['tiny', 'small'] as const) {
    it(`${preset} model: ranges match readGgufLayout, contiguous per tensor, non-overlapping`, async () => {
      const path = await testModel(preset);
      const index = await loadExpertIndex(path);
      const layout = await loadAddon().readGgufLayout(path);
      assert.equal(index.files.length, 1);
      assert.equal(index.nLayer, layout.metadata['qwen3moe.block_count']);
      assert.equal(index.nExpert, layout.metadata['qwen3moe.expert_count']);
      assert.deepEqual(index.moeLayers, Array.from({ length: index.nLayer }, (_, i) => i));
      for (const layer of index.experts) {
        for (const e of layer) {
          assert.deepEqual(e.ranges.map((r) => r.projection).sort(), ['down', 'gate', 'up']);
          assert.equal(e.bytes, e.ranges.reduce((s, r) => s + r.length, 0));
        }
      }
      checkAgainstLayout(index, [layout]);
    });
  }

  it('a split model: every shard indexed, from any shard path', async () => {
    const tensorsOf = (layer: number): TestTensor[] => [
      { name: `blk.${layer}.attn_norm.weight`, ne: [16] },
      { name: `blk.${layer}.ffn_gate_inp.weight`, ne: [16, 4] },
      { name: `blk.${layer}.ffn_gate_up_exps.weight`, ne: [16, 12, 4] },
      { name: `blk.${layer}.ffn_down_exps.weight`, ne: [6, 16, 4] },
    ];
    const meta = (no: number) => ({
      'general.architecture': 'testmoe',
      'testmoe.block_count': { u32: 3 },
      'testmoe.expert_count': { u32: 4 },
      'split.no': { u16: no },
      'split.count': { u16: 2 },
      'split.tensors.count': { i32: 12 },
    });
    const base = join(dir, 'split');
    writeTestGguf(`${base}-00001-of-00002.gguf`, meta(0), [{ name: 'token_embd.weight', ne: [16, 10] }, ...tensorsOf(0), ...tensorsOf(1)]);
    writeTestGguf(`${base}-00002-of-00002.gguf`, meta(1), [...tensorsOf(2), { name: 'output.weight', ne: [16, 10] }]);
    assert.deepEqual(modelShardPaths(`${base}-00002-of-00002.gguf`), [`${base}-00001-of-00002.gguf`, `${base}-00002-of-00002.gguf`]);
    const index = await loadExpertIndex(`${base}-00002-of-00002.gguf`);
    assert.equal(index.files.length, 2);
    assert.equal(index.nLayer, 3);
    assert.equal(index.nExpert, 4);
    assert.deepEqual(index.experts[2][3].ranges.map((r) => [r.file, r.projection]), [[1, 'gate_up'], [1, 'down']]);
    assert.equal(index.experts[0][1].bytes, (16 * 12 + 6 * 16) * 4);
    const layouts = await Promise.all(index.files.map((f) => loadAddon().readGgufLayout(f.path)));
    checkAgainstLayout(index, layouts);
  });

  it('a missing shard is named', async () => {
    writeTestGguf(join(dir, 'gone-00001-of-00003.gguf'), { 'split.count': { u16: 3 } }, [{ name: 'blk.0.ffn_up_exps.weight', ne: [4, 4, 2] }]);
    await assert.rejects(loadExpertIndex(join(dir, 'gone-00001-of-00003.gguf')), (e: unknown) => e instanceof ModelLoadError && /shard 2 of 3/.test(e.message));
  });

  it('a truncated GGUF is rejected with a clear error', async () => {
    const path = join(dir, 'truncated.gguf');
    copyFileSync(await testModel('tiny'), path);
    truncateSync(path, Math.floor(statSync(path).size * 0.7));
    await assert.rejects(loadExpertIndex(path), (e: unknown) => e instanceof ModelLoadError && e.message.includes(path) && /truncated/.test(e.message));
  });

  it('an expert tensor whose third dimension is not the expert count is rejected', async () => {
    const path = join(dir, 'bad-shape.gguf');
    writeTestGguf(path, { 'general.architecture': 'testmoe', 'testmoe.expert_count': { u32: 4 } }, [{ name: 'blk.0.ffn_up_exps.weight', ne: [8, 4, 3] }]);
    await assert.rejects(loadExpertIndex(path), (e: unknown) => e instanceof ModelLoadError && /expected 4 experts/.test(e.message));
  });

  it('a model without routed experts is rejected', async () => {
    const path = join(dir, 'dense.gguf');
    writeTestGguf(path, { 'general.architecture': 'testdense' }, [{ name: 'blk.0.ffn_up.weight', ne: [8, 4] }]);
    await assert.rejects(loadExpertIndex(path), (e: unknown) => e instanceof ModelLoadError && /not a MoE model/.test(e.message));
  });

  it('a missing file is named', () =>
    assert.rejects(loadExpertIndex(join(dir, 'absent.gguf')), (e: unknown) => e instanceof ModelLoadError && /no such file/.test(e.message)));
});
