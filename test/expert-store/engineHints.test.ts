/**
 * The engine and the expert-store together: routing hints published during generation raise the store's counters
 * and make exactly the experts the engine used resident; killing the store (kill -9) mid-generation changes nothing
 * for the generation.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ExpertStoreServiceClient } from '../../gen/moeflash/v1/expert_store';
import { Engine } from '../../services/engine/Engine';
import type { GenerationEvent } from '../../services/engine/types';
import { testModel } from '../../harness/testModels';
import { spawnExpertStore, type SpawnedExpertStore } from './spawnExpertStore';
import { copyModel, until } from './writeTestGguf';
const PROMPT = 'The quick brown fox jumps over the lazy dog';

describe('expert-store: with the engine', function () {
  let dir: string;
  let modelPath: string;
  const hintChannel = `moeflash-test-engine-${process.pid}`;
  let store: SpawnedExpertStore | undefined;

  async function startStore(): Promise<ExpertStoreServiceClient> {
    store = await spawnExpertStore(modelPath, join(dir, 'state'), hintChannel, { MOEFLASH_WARM_ON_START: 'none' });
    return store.client;
  }

  async function stopStore(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!store) return;
    const { service, channel } = store;
    store = undefined;
    channel.close();
    if (service.child.exitCode === null && service.child.signalCode === null) {
      service.child.kill(signal);
      await service.exited;
    }
  }

  async function generate(engine: Engine, onChunk?: () => void): Promise<{ tokens: number[]; finish: string }> {
    const tokens: number[] = [];
    let final: Extract<GenerationEvent, { type: 'final' }> | undefined;
    for await (const e of engine.generate({ prompt: PROMPT, maxTokens: 48, sampling: { temperature: 0 } })) {
      if (e.type === 'chunk') {
        tokens.push(...e.tokenIds);
        onChunk?.();
      } else {
        final = e;
      }
    }
    return { tokens, finish: final?.finishReason ?? 'none' };
  }

  /** "layer:expert" of every expert the engine's recorded routing used, sorted. */
  const usedExperts = (engine: Engine) =>
    engine.expertUse().flatMap((layer, l) => layer.flatMap((n, e) => (n > 0 ? [`${l}:${e}`] : []))).sort();
  /** "layer:expert" of every expert the store's heat map counted, sorted. */
  const heatSeen = async (client: ExpertStoreServiceClient) =>
    (await client.getHeatMap({})).layers.flatMap((l) => l.counts.flatMap((n, e) => (n > 0 ? [`${l.layer}:${e}`] : []))).sort();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-engine-hints-'));
    // A private copy of the small model (page-aligned expert slabs): residency per expert is exact.
    modelPath = copyModel(await testModel('small'), join(dir, 'small.gguf'));
  });
  afterEach(() => stopStore('SIGKILL'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('hints during generation raise the counters and the residency of exactly the experts used', async () => {
    const client = await startStore();
    // Weights read into memory (not mapped): the engine never touches the file again, so what is resident
    // afterwards is what the expert-store read.
    const engine = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, loadMode: 'none', warmup: false, hintChannel });
    try {
      await until('the store to attach', async () => (await client.stats({})).hintChannelAttached);
      await client.evict({ includeNonExpert: true });
      assert.equal((await client.residency({})).residentBytes, 0);
      const { tokens } = await generate(engine);
      assert.equal(tokens.length, 48);
      const usedSet = usedExperts(engine);
      assert.ok(usedSet.length > 0);
      await until('the store to read every used expert', async () => {
        const s = await client.stats({});
        return s.prefetchedExperts + s.prefetchAlreadyResident >= usedSet.length && (await client.residency({})).residentBytes > 0;
      });
      // What the store read is resident, and nothing else: only used experts, whole. (This machine's kernel pages
      // out cold page cache on its own (DAMON pageout), so a used expert read a moment ago may already be gone
      // again: waiting for all of them at once made the test fail at random.)
      const resident = async () =>
        (await client.residency({})).layers.flatMap((l) => l.residentExperts.map((e) => `${l.layer}:${e}`)).sort();
      await until('the residency to settle on used experts only', async () => {
        const now = await resident();
        return now.length > 0 && now.every((e) => usedSet.includes(e));
      });
      const r = await client.residency({});
      const perExpert = (r.totalBytes / r.layers.length) / 32;
      const now = await resident();
      assert.ok(now.every((e) => usedSet.includes(e)), `only used experts are resident: ${now.filter((e) => !usedSet.includes(e))}`);
      assert.ok(r.residentBytes > 0 && r.residentBytes <= usedSet.length * perExpert, 'no more than the used experts');
      const s = await client.stats({});
      assert.ok(s.hintsReceived >= 8 * 48, `one hint per layer per step at least (got ${s.hintsReceived})`);
      assert.equal(s.hintsMalformed, 0);
      assert.equal(s.prefetchedExperts, usedSet.length);
      assert.ok(s.prefetchUseful + s.prefetchDeduplicated > 0, 'experts are reused across tokens');
      await until('the heat map to hold the uses', async () => {
        return JSON.stringify(await heatSeen(client)) === JSON.stringify(usedSet);
      });
    } finally {
      await engine.close();
    }
  });

  it("the expert cache's predictions reach the store as predicted hints, with routing not recorded (as on a GPU)", async () => {
    const client = await startStore();
    const engine = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, hintChannel,
      recordRouting: false, expertCache: { slots: 8, prefetch: true } });
    try {
      assert.equal(engine.info.hintChannelError, undefined);
      await until('the store to attach', async () => (await client.stats({})).hintChannelAttached);
      const { tokens } = await generate(engine);
      assert.equal(tokens.length, 48);
      const predicted = (engine.expertCacheStats()?.total.predicted ?? 0);
      assert.ok(predicted > 0, 'the cache predicted');
      // every prediction is one record (at most 64 ids each): the store receives them all
      await until('the predictions to arrive', async () => (await client.stats({})).predictedHintIds >= predicted);
      assert.equal((await client.stats({})).hintsMalformed, 0);
    } finally {
      await engine.close();
    }
  });

  it('experts read on demand: routed and predicted experts reach the store during the step', async () => {
    const client = await startStore();
    // through the page cache, where the store's reads ahead serve the engine
    const engine = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, hintChannel, expertRead: 'demand', expertRam: 'off' });
    try {
      await until('the store to attach', async () => (await client.stats({})).hintChannelAttached);
      const { tokens } = await generate(engine);
      assert.equal(tokens.length, 48);
      const paging = engine.expertPagingStats();
      assert.ok(paging?.hintsInStep, 'the pager publishes');
      // the store reads the predictions: the engine reads none of them itself
      assert.equal(paging.predictedRead, 0);
      const predictedIds = paging.predicted;
      assert.ok(predictedIds > 0, 'the pager predicted');
      await until('the routing and the predictions to arrive', async () => {
        const s = await client.stats({});
        return s.predictedHintIds >= predictedIds && s.hintsReceived >= paging.layerSteps;
      });
      const s = await client.stats({});
      assert.equal(s.hintsMalformed, 0);
      assert.ok(s.prefetchedExperts + s.prefetchAlreadyResident + s.prefetchDeduplicated > 0, 'the store acted on them');
    } finally {
      await engine.close();
    }
  });

  it("experts in the engine's own memory (expertRam): the store's heat map gets the routing, and the store reads nothing ahead", async () => {
    const client = await startStore();
    const engine = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, hintChannel, expertRead: 'demand', expertRam: 64 * 2 ** 20 });
    try {
      assert.equal(engine.info.expertRam?.bytes, 64 * 2 ** 20);
      await until('the store to attach', async () => (await client.stats({})).hintChannelAttached);
      assert.equal((await generate(engine)).tokens.length, 48);
      const paging = engine.expertPagingStats()!;
      assert.ok(paging.hintsInStep && paging.predictedRead > 0, 'the engine publishes and reads its guesses itself');
      const used = usedExperts(engine);
      await until('the heat map to hold every expert used', async () => (await heatSeen(client)).length >= used.length);
      assert.deepEqual(await heatSeen(client), used);
      // the page cache would be the wrong place for them: the channel says so and the store reads none
      const s = await client.stats({});
      assert.equal(s.prefetchedExperts, 0);
      assert.equal(s.prefetchAlreadyResident, 0);
    } finally {
      await engine.close();
    }
  });

  it('experts read on demand under the expert cache: the routing still reaches the store after each step', async () => {
    const client = await startStore();
    const engine = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, hintChannel, expertRead: 'demand', expertCache: { slots: 8 } });
    try {
      await until('the store to attach', async () => (await client.stats({})).hintChannelAttached);
      assert.equal((await generate(engine)).tokens.length, 48);
      assert.equal(engine.expertPagingStats()?.hintsInStep, false, 'the cache path publishes after the step');
      await until('hints from every step', async () => (await client.stats({})).hintsReceived >= 8 * 48);
    } finally {
      await engine.close();
    }
  });

  it('routing not recorded (as on a GPU): the expert cache\'s slots tell the store\'s heat map which experts were used', async () => {
    // the experts this prompt uses, from recorded routing (the cache does not change routing)
    const reference = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false });
    let usedSet: string[];
    try {
      await generate(reference);
      usedSet = usedExperts(reference);
    } finally {
      await reference.close();
    }
    const client = await startStore();
    const engine = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, hintChannel,
      recordRouting: false, expertCache: { slots: 8 } });
    try {
      assert.equal(engine.info.hintChannelError, undefined);
      assert.equal(engine.info.expertCache?.path, 'device', 'slots resolved in the graph, as on a GPU');
      await until('the store to attach', async () => (await client.stats({})).hintChannelAttached);
      assert.equal((await generate(engine)).tokens.length, 48);
      // every 16 steps one record per layer with the experts used since the last (48 steps: 3 rounds)
      await until('the slots\' reports to arrive', async () => (await client.stats({})).hintsReceived >= 3 * 8);
      await until('the heat map to hold them', async () => (await heatSeen(client)).length > 0);
      const seen = await heatSeen(client);
      assert.ok(seen.length > 0);
      assert.deepEqual(seen.filter((e) => !usedSet.includes(e)), [], 'only experts the routing used');
      assert.equal((await client.stats({})).hintsMalformed, 0);
    } finally {
      await engine.close();
    }
  });

  it('routing not recorded (a GPU build by default) and no expert cache: the engine says the channel stays silent', async () => {
    const client = await startStore();
    const engine = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, hintChannel, recordRouting: false });
    try {
      assert.match(engine.info.hintChannelError ?? '', /^hint channel: nothing is published on it: routing is not recorded \(recordRouting/);
      await until('the store to attach', async () => (await client.stats({})).hintChannelAttached);
      assert.equal((await generate(engine)).tokens.length, 48);
      assert.equal((await client.stats({})).hintsReceived, 0);
    } finally {
      await engine.close();
    }
  });

  it('a second engine on the same model and channel serves without hints and says why', async () => {
    const first = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, hintChannel });
    try {
      assert.equal(first.info.hintChannelError, undefined);
      const second = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, warmup: false, hintChannel });
      try {
        assert.match(second.info.hintChannelError ?? '', /^hint channel: .* is in use by another writer \(pid \d+\)/);
        assert.equal((await generate(second)).tokens.length, 48);
      } finally {
        await second.close();
      }
    } finally {
      await first.close();
    }
  });

  it('kill -9 of the expert-store mid-generation: the generation completes with identical tokens', async () => {
    const engine = await Engine.load({ path: modelPath, threads: 2, parallel: 1, contextSize: 256, hintChannel });
    try {
      const reference = await generate(engine); // no expert-store at all: hints are simply overwritten
      assert.equal(reference.tokens.length, 48);

      const client = await startStore();
      await until('the store to attach', async () => (await client.stats({})).hintChannelAttached);
      const running = store as NonNullable<typeof store>;
      let killed = false;
      const withKill = await generate(engine, () => {
        if (!killed) {
          killed = true;
          running.service.child.kill('SIGKILL');
        }
      });
      assert.equal(await running.service.exited, 'SIGKILL');
      assert.deepEqual(withKill, reference);

      // and a restarted store picks the channel up again while the engine keeps going
      const again = await startStore();
      await until('the restarted store to attach', async () => (await again.stats({})).hintChannelAttached);
      assert.deepEqual(await generate(engine), reference);
      await until('hints in the restarted store', async () => (await again.stats({})).hintsReceived > 0);
    } finally {
      await engine.close();
    }
  });
});
