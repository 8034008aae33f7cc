/**
 * Experts read on demand (LoadOptions.expertRead 'demand': patches/llama.cpp/0012 + native/src/ExpertPager): the load
 * leaves the experts on disk, a step reads the experts its router picked, the output is the one of reading at load.
 * The page cache is measured on a private copy of the model (cachestat over the expert slabs).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { InvalidArgumentError } from '../../services/common/errors';
import { chooseExpertRead } from '../../services/engine/chooseExpertRead';
import { Engine } from '../../services/engine/Engine';
import { loadExpertIndex, type ExpertIndex } from '../../services/expert-store/ExpertIndex';
import { PageCache } from '../../services/expert-store/PageCache';
import { collect } from '../../harness/collect';
import { testModel } from '../../harness/testModels';
import { copyModel } from '../expert-store/writeTestGguf';

const PROMPT = 'Once upon a time, in a land far away,';
const TOKENS = 24;

describe('engine: experts read on demand', function () {
  let dir: string;
  let modelPath: string;
  let index: ExpertIndex;
  let cache: PageCache;

  const expertRanges = () => index.experts.flat().flatMap((e) => e.ranges);
  const residentExpertShare = async () => {
    const { resident } = await cache.residency(expertRanges());
    return resident.reduce((a, b) => a + b, 0) / index.expertBytes;
  };
  const generate = (engine: Engine) => collect(engine.generate({ prompt: PROMPT, maxTokens: TOKENS, sampling: { temperature: 0 } }));
  // the tokens with every expert read at load (the reference on-demand output must equal)
  const tokensReadAtLoad = async (options: Parameters<typeof Engine.load>[0]) => {
    const atLoad = await Engine.load({ ...options, expertRead: 'load' });
    try {
      return (await generate(atLoad)).tokens;
    } finally {
      await atLoad.close();
    }
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-on-demand-'));
    modelPath = copyModel(await testModel('small'), join(dir, 'small.gguf'));
    index = await loadExpertIndex(modelPath);
    cache = new PageCache(index.files);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('the load reads the experts only with expertRead load; a step reads the routed ones; output is the same', async () => {
    await cache.evict(null);
    const atLoad = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, expertRead: 'load' });
    let reference: number[];
    try {
      assert.equal(atLoad.info.expertRead, 'load');
      // stock llama.cpp populates the whole mapping at load
      assert.ok((await residentExpertShare()) > 0.5, 'expertRead load reads the experts with the model');
      assert.equal(atLoad.expertPagingStats(), undefined);
      const { tokens, final } = await generate(atLoad);
      reference = tokens;
      assert.equal(final.expertPaging, undefined);
    } finally {
      await atLoad.close();
    }

    await cache.evict(null);
    // through the page cache (expertRam off): the engine-owned memory has its own test (expertRam.test.ts)
    const engine = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, expertRead: 'demand', expertRam: 'off' });
    try {
      assert.equal(engine.info.expertRead, 'demand');
      const afterLoad = await residentExpertShare();
      assert.ok(afterLoad < 0.05, `the load leaves the experts on disk (${(afterLoad * 100).toFixed(1)}% resident)`);
      const { tokens, final } = await generate(engine);
      assert.deepEqual(tokens, reference);

      const s = engine.expertPagingStats();
      assert.ok(s, 'paging counters');
      // the request's share: it was the only one, so it saw every step
      assert.deepEqual(final.expertPaging, { experts: s.experts, pageCacheHits: s.pageCacheHits, bytesRead: s.bytesMissing });
      const moeLayerSteps = index.moeLayers.length * TOKENS; // prompt + 23 decode steps, at least one per token
      assert.ok(s.layerSteps >= moeLayerSteps - index.moeLayers.length, `every MoE layer of every step is paged (${s.layerSteps})`);
      assert.ok(s.bytesMissing > 0 && s.bytesMissing <= s.bytesRouted, 'routed experts came from disk');
      assert.ok(s.pageCacheHits < s.experts, 'the first uses missed the page cache');
      // the routed experts are resident now; the ones never routed were never read
      const used = engine.expertUse();
      const routed = index.experts.flatMap((layer, l) => layer.filter((e) => (used[l]?.[e.expert] ?? 0) > 0));
      const neverRouted = index.experts.flatMap((layer, l) => layer.filter((e) => (used[l]?.[e.expert] ?? 0) === 0));
      assert.ok(neverRouted.length > 0, 'the prompt leaves some experts unused');
      const residentOf = async (entries: typeof routed) => {
        const { resident } = await cache.residency(entries.flatMap((e) => e.ranges));
        return resident.reduce((a, b) => a + b, 0) / entries.reduce((a, e) => a + e.bytes, 0);
      };
      // read-around off: an expert nobody routed to is not pulled in by its neighbours (predictions that missed may
      // have read a few)
      const unusedShare = await residentOf(neverRouted);
      assert.ok(unusedShare < 0.5, `unrouted experts stay on disk (${(unusedShare * 100).toFixed(1)}% resident)`);
      assert.ok(s.predicted > 0 && s.predictedUsed > 0 && s.predictedRead > 0, 'the next layer is predicted and read ahead');
      // from a cold page cache the guesses came from disk, and the right ones count as used disk bytes
      assert.ok(s.bytesReadAhead > 0, 'predictions were read ahead from disk');
      assert.ok(s.bytesReadAheadUsed > 0 && s.bytesReadAheadUsed <= s.bytesReadAhead, `${s.bytesReadAheadUsed} of ${s.bytesReadAhead} bytes read ahead were used`);
    } finally {
      await engine.close();
    }
  });

  it('with the expert cache, its misses are read on demand before it copies them; output is the same', async () => {
    const options = { path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, expertCache: { slots: 8 } };
    await cache.evict(null);
    const reference = await tokensReadAtLoad(options);
    await cache.evict(null);
    const engine = await Engine.load({ ...options, expertRead: 'demand' });
    try {
      assert.equal(engine.info.expertRead, 'demand');
      assert.equal(engine.info.expertCache?.path, 'host-stop', 'on demand, the cache runs its host path');
      assert.ok((await residentExpertShare()) < 0.05, 'the load leaves the experts on disk');
      const { tokens, final } = await generate(engine);
      assert.deepEqual(tokens, reference);
      const s = engine.expertPagingStats();
      const misses = engine.expertCacheStats()?.total.misses ?? 0;
      assert.ok(s && misses > 0);
      // what the slots missed (decode) and the staging bank took (the prompt) came through the pager
      assert.ok(s.experts >= misses, `${s.experts} experts read from host, ${misses} slot misses`);
      assert.ok(s.bytesMissing > 0 && s.pageCacheHits < s.experts, 'the first reads came from disk');
      assert.ok(final.expertPaging && final.expertPaging.experts === s.experts);
    } finally {
      await engine.close();
    }
  });

  it('with the cache predicting, its speculative copies are read through the pager too (lookahead); output is the same', async () => {
    const options = { path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false };
    const reference = await tokensReadAtLoad({ ...options, expertCache: { slots: 8 } });
    await cache.evict(null);
    const engine = await Engine.load({ ...options, expertRead: 'demand', expertCache: { slots: 8, prefetch: true } });
    try {
      assert.deepEqual((await generate(engine)).tokens, reference);
      const total = engine.expertCacheStats()!.total;
      const s = engine.expertPagingStats()!;
      assert.ok(total.predicted > 0 && total.prefetched > 0, `${total.predicted} predicted, ${total.prefetched} copied ahead`);
      // from a cold page cache, a guess is first seen before its expert was ever read: it is queued for reading, not
      // copied (a copy from the mapping would wait for the disk); guesses already in memory are copied ahead
      assert.ok(total.prefetchDeferred > 0, `${total.prefetchDeferred} guesses left on disk`);
      // the misses were handed to the pager as needs (the tiers count them), the guesses as guesses: those on disk
      // were read ahead, and a deferred guess that the layer then missed made its read-ahead useful
      assert.ok(s.experts >= total.misses, `${s.experts} experts needed from host, ${total.misses} misses`);
      assert.ok(s.bytesReadAhead > 0, 'deferred guesses were read ahead from disk');
      assert.ok(s.bytesReadAheadUsed > 0 && s.bytesReadAheadUsed <= s.bytesReadAhead, `${s.bytesReadAheadUsed} of ${s.bytesReadAhead} bytes read ahead were used`);
    } finally {
      await engine.close();
    }
  });

  it('demand where experts are not read from the mapping is INVALID_ARGUMENT naming expertRead', () => {
    for (const options of [{ nGpuLayers: 99 }, { nGpuLayers: 99, expertCache: { slots: 8 } }, { expertCache: { slots: 8, hostMemory: 'pinned' as const } }]) {
      assert.throws(
        () => chooseExpertRead({ path: modelPath, expertRead: 'demand', ...options }, 1, 'mmap'),
        (e: unknown) => e instanceof InvalidArgumentError && e.violations[0].field === 'expertRead',
      );
    }
    assert.throws(() => chooseExpertRead({ path: modelPath, expertRead: 'demand' }, 1, 'none'), InvalidArgumentError);
  });

  it('auto reads on demand when the model does not fit in the memory the process may use', () => {
    const limit = (bytes: number) => () => bytes;
    assert.equal(chooseExpertRead({ path: modelPath }, 4e9, 'mmap', limit(1.5 * 2 ** 30)), 'demand');
    assert.equal(chooseExpertRead({ path: modelPath }, 4e9, 'mmap', limit(16 * 2 ** 30)), 'load');
    // what would be copied to a GPU at load anyway stays as stock loads it
    assert.equal(chooseExpertRead({ path: modelPath, nGpuLayers: 99 }, 4e9, 'mmap', limit(1e9)), 'load');
    assert.equal(chooseExpertRead({ path: modelPath, expertRead: 'load' }, 4e9, 'mmap', limit(1e9)), 'load');
  });
});
