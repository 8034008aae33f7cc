/** Native expert I/O: io_uring and fadvise both fill the page cache; residency is exact; eviction; fallbacks. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { loadAddon } from '../../services/engine/loadAddon';
import { loadExpertIndex, rangeTriples, type ExpertIndex, type FileRange } from '../../services/expert-store/ExpertIndex';
import { PageCache } from '../../services/expert-store/PageCache';
import { testModel } from '../../harness/testModels';
import { copyModel, until } from './writeTestGguf';

const sum = (a: Float64Array) => a.reduce((s, x) => s + x, 0);

describe('expert-store: page cache I/O', function () {
  let dir: string;
  let index: ExpertIndex;
  let expertRanges: FileRange[];
  let expertBytes: number;
  const uring = () => PageCache.ioUringStatus();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-io-'));
    // A private copy: nothing else maps or reads it, so residency is ours to control.
    const path = copyModel(await testModel('small'), join(dir, 'small.gguf'));
    index = await loadExpertIndex(path);
    expertRanges = index.experts.flat().flatMap((e) => e.ranges);
    expertBytes = index.expertBytes;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const resident = async (cache: PageCache, ranges = expertRanges) => sum((await cache.residency(ranges)).resident);

  it('evict drops every expert range: residency 0', async () => {
    const cache = new PageCache(index.files);
    await cache.prefetch(expertRanges);
    assert.ok((await resident(cache)) > 0);
    await cache.evict(expertRanges);
    assert.equal(await resident(cache), 0);
  });

  it('io_uring reads (QD 32) fill the cache with exactly the ranges read', async function () {
    if (!uring().available) this.skip();
    const cache = new PageCache(index.files, { ioMode: 'uring', queueDepth: 32 });
    await cache.evict(null);
    const result = await cache.prefetch(expertRanges, { groups: Int32Array.from(expertRanges, (_, i) => Math.floor(i / 3)) });
    assert.equal(result.mode, 'uring');
    assert.equal(result.bytes, expertBytes);
    assert.equal(result.groupsDone, expertRanges.length / 3);
    assert.equal(await resident(cache), expertBytes);
    // readahead is off for these reads: the non-expert tensors were not pulled in alongside
    assert.equal(await resident(cache, index.nonExpert), 0);
  });

  it('fadvise(WILLNEED) fills the cache (asynchronously)', async () => {
    const cache = new PageCache(index.files, { ioMode: 'fadvise' });
    await cache.evict(null);
    const result = await cache.prefetch(expertRanges);
    assert.equal(result.mode, 'fadvise');
    assert.equal(result.bytes, expertBytes);
    await until('the advised ranges to be resident', async () => (await resident(cache)) === expertBytes);
  });

  it("'auto' reports the mode it ran, and falls back to fadvise when io_uring is unavailable", async () => {
    const cache = new PageCache(index.files, { ioMode: 'auto' });
    const result = await cache.prefetch(expertRanges.slice(0, 3));
    assert.equal(result.mode, uring().available ? 'uring' : 'fadvise');
    assert.equal(result.fallbackReason, uring().available ? null : uring().reason);
    process.env.MOEFLASH_IO_URING = '0';
    try {
      const fallback = await cache.prefetch(expertRanges.slice(0, 3));
      assert.equal(fallback.mode, 'fadvise');
      assert.match(fallback.fallbackReason ?? '', /MOEFLASH_IO_URING=0/);
      await assert.rejects(new PageCache(index.files, { ioMode: 'uring' }).prefetch(expertRanges.slice(0, 3)), /io_uring is not available: disabled by MOEFLASH_IO_URING=0/);
    } finally {
      delete process.env.MOEFLASH_IO_URING;
    }
  });

  it('residency is exact to the byte for unaligned ranges, and eviction widens to whole pages', async function () {
    if (!uring().available) this.skip();
    const cache = new PageCache(index.files, { ioMode: 'uring' });
    await cache.evict(null);
    await cache.prefetch([{ file: 0, offset: 5000, length: 10_000 }]);
    const r = await cache.residency([
      { file: 0, offset: 5000, length: 10_000 },
      { file: 0, offset: 0, length: 4096 },
      { file: 0, offset: 4096, length: 8192 },
      { file: 0, offset: 14_000, length: 3000 },
    ]);
    assert.match(r.method, /^(cachestat|mincore)$/);
    // pages 1..3 were read: [5000, 15000) fully, page 0 not at all, [14000, 16384) of [14000, 17000)
    assert.deepEqual(Array.from(r.resident), [10_000, 0, 8192, 2384]);
    await cache.evict([{ file: 0, offset: 5000, length: 100 }]);
    assert.equal(sum((await cache.residency([{ file: 0, offset: 4096, length: 4096 }])).resident), 0);
  });

  it('merges adjacent ranges into large reads', async function () {
    if (!uring().available) this.skip();
    const cache = new PageCache(index.files, { ioMode: 'uring' });
    await cache.evict(null);
    const layer0 = index.experts[0].flatMap((e) => e.ranges);
    // one tensor's slabs are back to back (and here the three tensors too): in file order they merge
    const sorted = [...layer0].sort((a, b) => a.offset - b.offset);
    const expected = 1 + sorted.filter((r, i) => i > 0 && sorted[i - 1].offset + sorted[i - 1].length !== r.offset).length;
    assert.ok(expected <= 3);
    const result = await cache.prefetch(layer0, { sort: true });
    assert.equal(result.spans, expected);
    const unsorted = await cache.prefetch([...layer0].reverse());
    assert.equal(unsorted.spans, layer0.length, 'in the given order nothing is adjacent');
    assert.equal(result.bytes, index.expertBytesPerLayer[0]);
  });

  it('a cancel flag set before the call reads nothing', async () => {
    const cancel = new Int32Array(new SharedArrayBuffer(4));
    Atomics.store(cancel, 0, 1);
    const result = await loadAddon().prefetchRanges([index.files[0].path], rangeTriples(expertRanges), { cancel });
    assert.equal(result.cancelled, true);
    assert.equal(result.bytes, 0);
    const aborted = AbortSignal.abort();
    await assert.rejects(new PageCache(index.files).prefetch(expertRanges, { signal: aborted }), { name: 'AbortError' });
  });

  it('reads past the end of the file (a truncated model) fail with a clear error', async function () {
    if (!uring().available) this.skip();
    const size = statSync(index.files[0].path).size;
    await assert.rejects(
      new PageCache(index.files, { ioMode: 'uring' }).prefetch([{ file: 0, offset: size - 10, length: 100 }]),
      /ends before byte \d+: the file is shorter than its index says \(truncated\?\)/,
    );
    await assert.rejects(new PageCache([{ path: join(dir, 'absent.gguf') }]).prefetch([{ file: 0, offset: 0, length: 1 }]), /cannot open '.*absent.gguf'/);
  });

  it('rejects malformed range arguments', () => {
    const addon = loadAddon();
    assert.throws(() => addon.prefetchRanges([index.files[0].path], new Float64Array([0, 1])), /triples/);
    assert.throws(() => addon.prefetchRanges([index.files[0].path], new Float64Array([1, 0, 1])), /file index out of range/);
    assert.throws(() => addon.prefetchRanges([index.files[0].path], new Float64Array([0, -1, 1])), /non-negative integers/);
    assert.throws(() => addon.prefetchRanges([index.files[0].path], new Float64Array([0, 0, 1]), { mode: 'dio' as never }), /mode must be auto, uring or fadvise/);
  });
});
