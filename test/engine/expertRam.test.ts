/**
 * Experts read on demand into memory the engine owns (LoadOptions.expertRam, native/src/ExpertRam.h): O_DIRECT reads
 * straight into the expert tensors' addresses, evicted least recently needed first within a budget. The output must
 * be the one of reading every expert at load, the page cache must not hold the experts, and the budget must hold.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { InvalidArgumentError } from '../../services/common/errors';
import { Engine } from '../../services/engine/Engine';
import { sizeExpertRam } from '../../services/engine/sizeExpertRam';
import type { LoadOptions } from '../../services/engine/types';
import { loadExpertIndex, type ExpertIndex } from '../../services/expert-store/ExpertIndex';
import { PageCache } from '../../services/expert-store/PageCache';
import { collect } from '../../harness/collect';
import { testModel } from '../../harness/testModels';
import { copyModel } from '../expert-store/writeTestGguf';

const PROMPTS = ['Once upon a time, in a land far away,', 'The quick brown fox', 'Hello'];
const TOKENS = 32;
const MiB = 2 ** 20;

describe("engine: experts in the engine's own memory (expertRam)", function () {
  let dir: string;
  let modelPath: string;
  let index: ExpertIndex;
  let cache: PageCache;
  let layerBytes: number;

  const options = (extra: Partial<LoadOptions>): LoadOptions => ({ path: modelPath, threads: 2, parallel: 2, contextSize: 256, warmup: false, ...extra });
  const generate = (engine: Engine, prompt: string) => collect(engine.generate({ prompt, maxTokens: TOKENS, sampling: { temperature: 0 } }));
  /** One prompt at a time, then two at once (continuous batching): the token ids of each. */
  const outputs = async (engine: Engine) => {
    const single = [];
    for (const p of PROMPTS) single.push((await generate(engine, p)).tokens);
    const together = (await Promise.all(PROMPTS.slice(0, 2).map((p) => generate(engine, p)))).map((r) => r.tokens);
    return { single, together };
  };
  const residentExpertShare = async () => {
    const { resident } = await cache.residency(index.experts.flat().flatMap((e) => e.ranges));
    return resident.reduce((a, b) => a + b, 0) / index.expertBytes;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-expert-ram-'));
    modelPath = copyModel(await testModel('small'), join(dir, 'small.gguf'));
    index = await loadExpertIndex(modelPath);
    cache = new PageCache(index.files);
    layerBytes = Math.max(...index.expertBytesPerLayer);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('output equals reading at load, one stream and two; the experts bypass the page cache; the budget holds', async () => {
    // first, from a cold page cache (an engine that read at load keeps its mapping until it is collected)
    await cache.evict(null);
    // two layers' worth for a model of more: experts are evicted and read again all the time
    const budget = 2 * layerBytes;
    assert.ok(index.expertBytes > 3 * budget, 'the test model has more experts than the budget holds');
    const engine = await Engine.load(options({ expertRead: 'demand', expertRam: budget }));
    let onDemand;
    try {
      assert.deepEqual(engine.info.expertRam, { bytes: budget, sizedBy: 'option' });
      // The first touch of a layer's non-expert weights may read ahead into the experts beside them in the file
      // (the kernel's async read-ahead window, once): measured from after the first generation on.
      await generate(engine, PROMPTS[0]);
      const before = await residentExpertShare();
      onDemand = await outputs(engine);
      const s = engine.expertPagingStats()!;
      assert.ok(s.bytesMissing > budget, `experts were evicted and read again (${s.bytesMissing} bytes read for needs)`);
      assert.ok(s.pageCacheHits > 0 && s.pageCacheHits < s.experts, 'some needs found their expert resident, some did not');
      assert.ok(s.ramResidentBytes > 0 && s.ramResidentBytes <= budget, `${s.ramResidentBytes} bytes held after the steps, budget ${budget}`);
      // O_DIRECT: what the engine read is not in the page cache (a tensor's first and last page may be)
      const share = await residentExpertShare();
      assert.ok(share - before < 0.02, `${(share * 100).toFixed(2)}% of the experts' bytes in the page cache, ${(before * 100).toFixed(2)}% before`);
    } finally {
      await engine.close();
    }

    const atLoad = await Engine.load(options({ expertRead: 'load' }));
    try {
      assert.deepEqual(onDemand, await outputs(atLoad));
    } finally {
      await atLoad.close();
    }
  });

  it("with the expert cache (host path), its misses and guesses come from the engine's memory; output equals reading at load", async () => {
    const cached = { expertCache: { slots: 8, prefetch: true }, parallel: 1 };
    const atLoad = await Engine.load(options({ ...cached, expertRead: 'load' }));
    let reference;
    try {
      reference = (await generate(atLoad, PROMPTS[0])).tokens;
    } finally {
      await atLoad.close();
    }
    await cache.evict(null);
    const budget = 2 * layerBytes;
    const engine = await Engine.load(options({ ...cached, expertRead: 'demand', expertRam: budget }));
    try {
      assert.equal(engine.info.expertCache?.path, 'host-stop');
      assert.deepEqual(engine.info.expertRam, { bytes: budget, sizedBy: 'option' });
      await generate(engine, PROMPTS[1]); // the one-time read-ahead beside the non-expert weights (above)
      const before = await residentExpertShare();
      assert.deepEqual((await generate(engine, PROMPTS[0])).tokens, reference);
      const total = engine.expertCacheStats()!.total;
      const s = engine.expertPagingStats()!;
      assert.ok(total.misses > 0 && s.experts >= total.misses, `${s.experts} experts needed from host memory, ${total.misses} slot misses`);
      assert.ok(s.bytesMissing > 0 && s.ramResidentBytes <= budget, 'read from disk into the budget');
      assert.ok(total.prefetched > 0, 'guesses resident in the engine memory were copied ahead');
      const share = await residentExpertShare();
      assert.ok(share - before < 0.02, `${(share * 100).toFixed(2)}% of the experts' bytes in the page cache, ${(before * 100).toFixed(2)}% before`);
    } finally {
      await engine.close();
    }
  });

  it('is INVALID_ARGUMENT naming expertRam below one layer of experts, or where experts are not read on demand', async () => {
    const rejects = (extra: Partial<LoadOptions>, words: RegExp) =>
      assert.rejects(Engine.load(options(extra)), (e: unknown) => e instanceof InvalidArgumentError && e.violations[0].field === 'expertRam' && words.test(e.violations[0].description));
    await rejects({ expertRead: 'demand', expertRam: layerBytes - 1 }, /at least one layer's experts \(\d+ bytes\)/);
    await rejects({ expertRead: 'load', expertRam: 64 * MiB }, /expertRead demand/);
    await rejects({ expertRead: 'demand', expertRam: 'lots' as unknown as number }, /size in bytes/);
  });

  it('auto: the memory limit less the non-expert weights, the process, the KV cache, one layer and the headroom, at most all the experts', () => {
    const GiB = 2 ** 30;
    const size = (limit: number, o: Partial<LoadOptions> = {}, read: 'load' | 'demand' = 'demand') =>
      sizeExpertRam({ path: 'm.gguf', ...o }, read, { layerExpertBytes: 100 * MiB, expertBytes: 8 * GiB, nonExpertBytes: 50 * MiB, contextBytes: 20 * MiB }, () => limit, () => 80 * MiB);
    // 4 GiB - 50 - 80 - 20 - 100 MiB - max(128 MiB, 5 %)
    assert.deepEqual(size(4 * GiB), { bytes: Math.floor(4 * GiB - 250 * MiB - 0.05 * 4 * GiB), sizedBy: 'memory limit' });
    assert.equal(size(400 * MiB), undefined, 'less than a layer left: the page cache serves');
    assert.deepEqual(size(64 * GiB), { bytes: 8 * GiB, sizedBy: 'memory limit' }, 'never more than all the experts');
    assert.equal(size(Infinity), undefined, 'no limit known');
    assert.equal(size(4 * GiB, { expertRam: 'off' }), undefined);
    assert.equal(size(4 * GiB, {}, 'load'), undefined, 'experts read at load');
    assert.ok(size(4 * GiB, { expertCache: { slots: 8, hostMemory: 'mmap' } }), "the expert cache's host reads come through it too");
    assert.deepEqual(size(4 * GiB, { expertRam: 300 * MiB }), { bytes: 300 * MiB, sizedBy: 'option' });
  });
});
