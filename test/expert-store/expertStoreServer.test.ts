/**
 * ExpertStoreService over a real gRPC server on 127.0.0.1:0: Evict -> 0% resident, Warm -> 100% within a large
 * budget and the hottest prefix within a small one, hints -> counters and residency, heat map over gRPC, HTTP and
 * the CLI, typed errors.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Status, createChannel, createClient, type Channel } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { HealthCheckResponse_ServingStatus as ServingStatus } from 'nice-grpc-server-health/lib/proto/grpc/health/v1/health';

import { heatmapCommand } from '../../cli/commands/heatmap';
import { ExpertStoreServiceDefinition, type ExpertStoreServiceClient, type WarmResponse } from '../../gen/moeflash/v1/expert_store';
import type { ServiceServer } from '../../services/common/ServiceServer';
import { loadAddon, type NativeHintWriter } from '../../services/engine/loadAddon';
import { createExpertStoreServer } from '../../services/expert-store/createExpertStoreServer';
import { ExpertStore } from '../../services/expert-store/ExpertStore';
import { HeatMap } from '../../services/expert-store/HeatMap';
import { PageCache } from '../../services/expert-store/PageCache';
import { startExpertStoreHttp, type ExpertStoreHttp } from '../../services/expert-store/startExpertStoreHttp';
import { failure } from '../../harness/grpcClients';
import { testLog } from '../../harness/startStack';
import { testModel } from '../../harness/testModels';
import { copyModel, until } from './writeTestGguf';

describe('expert-store: ExpertStoreService', function () {
  let dir: string;
  let modelPath: string;
  let store: ExpertStore;
  let server: ServiceServer;
  let channel: Channel;
  let client: ExpertStoreServiceClient;
  let writer: NativeHintWriter;
  let http: ExpertStoreHttp;
  let port: number;
  const hintChannel = `moeflash-test-store-${process.pid}`;
  const uring = PageCache.ioUringStatus().available;

  async function warm(request: Parameters<ExpertStoreServiceClient['warm']>[0]): Promise<WarmResponse[]> {
    const out: WarmResponse[] = [];
    for await (const r of client.warm(request)) out.push(r);
    return out;
  }
  /** Residency now; with fadvise (asynchronous reads) wait until it reaches `fraction`. */
  async function residencyAt(fraction?: number) {
    if (fraction !== undefined && !uring) await until('fadvise reads to land', async () => (await client.residency({})).residentFraction >= fraction);
    return client.residency({});
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-store-'));
    modelPath = copyModel(await testModel('small'), join(dir, 'small.gguf'));
    writer = new (loadAddon().HintWriter)(hintChannel);
    store = await ExpertStore.open({ modelPath, stateDir: join(dir, 'state'), log: testLog, hintChannel, foldIntervalMs: 20, recentMs: 600_000 });
    server = createExpertStoreServer({ log: testLog, store });
    port = await server.listen('127.0.0.1:0');
    channel = createChannel(`127.0.0.1:${port}`);
    client = createClient(ExpertStoreServiceDefinition, channel);
    http = await startExpertStoreHttp(store, '127.0.0.1:0', testLog);
  });
  after(async () => {
    channel?.close();
    await server?.shutdown(0);
    await http?.close();
    await store?.close();
    writer?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves grpc.health.v1 for the service', async () => {
    const health = createClient(HealthDefinition, channel);
    assert.equal((await health.check({ service: 'moeflash.v1.ExpertStoreService' })).status, ServingStatus.SERVING);
    assert.equal((await health.check({ service: '' })).status, ServingStatus.SERVING);
  });

  it('Evict -> residency 0%', async () => {
    await warm({ budgetBytes: Number.MAX_SAFE_INTEGER });
    const evicted = await client.evict({ model: 'small' });
    assert.equal(evicted.expertsEvicted, store.index.nLayer * store.index.nExpert);
    assert.equal(evicted.bytesEvicted, store.index.expertBytes);
    const r = await client.residency({ model: 'small.gguf' });
    assert.equal(r.residentBytes, 0);
    assert.equal(r.residentFraction, 0);
    assert.equal(r.totalBytes, store.index.expertBytes);
    assert.equal(r.layers.length, 8);
    for (const l of r.layers) assert.deepEqual([l.residentExperts, l.residentBytes, l.expertsTotal], [[], 0, 32]);
    assert.match(r.method, /^(cachestat|mincore)$/);
  });

  it('Warm within a budget larger than the model -> 100%, with streamed progress', async () => {
    await client.evict({ includeNonExpert: true });
    const progress = await warm({ budgetBytes: 10 * store.index.files[0].size, traceId: '4bf92f3577b34da6a3ce929d0e0e4736' });
    const last = progress[progress.length - 1];
    assert.equal(last.bytesDone, last.bytesTotal);
    assert.equal(last.bytesTotal, store.index.expertBytes + store.index.nonExpertBytes);
    assert.equal(last.expertsWarmed, 256);
    assert.equal(last.expertsTotal, 256);
    assert.equal(last.ioMode, uring ? 'uring' : 'fadvise');
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i].bytesDone >= progress[i - 1].bytesDone);
    const r = await residencyAt(1);
    assert.equal(r.residentFraction, 1);
    assert.equal(r.nonExpertResidentBytes, r.nonExpertTotalBytes);
    for (const l of r.layers) assert.equal(l.residentExperts.length, 32);
  });

  it('Warm within a small budget reads non-expert tensors, then the hottest experts only', async () => {
    // Heat: expert (l, (7 * l + k) % 32) gets 10 - k uses for k = 0..9, so the order is known.
    const deltas = new Float64Array(8 * 32);
    const hottest: string[] = [];
    for (let k = 0; k < 10; k++) {
      for (let l = 0; l < 8; l++) deltas[l * 32 + ((7 * l + k) % 32)] = 100 * (10 - k) + l;
    }
    store.heat.observe(deltas);
    const order = store.heat.hotOrder(store.index.moeLayers);
    for (const h of order.slice(0, 5)) hottest.push(`${h.layer}:${h.expert}`);
    await client.evict({ includeNonExpert: true });
    const perExpert = store.index.experts[0][0].bytes;
    const budget = store.index.nonExpertBytes + 5 * perExpert + perExpert / 2;
    const progress = await warm({ budgetBytes: budget });
    const last = progress[progress.length - 1];
    assert.deepEqual([last.expertsWarmed, last.expertsTotal, last.budgetBytes], [5, 5, budget]);
    const r = await residencyAt((5 * perExpert) / store.index.expertBytes);
    const resident = r.layers.flatMap((l) => l.residentExperts.map((e) => `${l.layer}:${e}`));
    assert.deepEqual(resident.sort(), [...hottest].sort());
    assert.equal(r.residentBytes, 5 * perExpert);
    assert.equal(r.nonExpertResidentBytes, r.nonExpertTotalBytes);

    const perLayer = await warm({ hottestPerLayer: 1, skipNonExpert: true, budgetBytes: Number.MAX_SAFE_INTEGER });
    assert.equal(perLayer[perLayer.length - 1].expertsTotal, 8);
    const explicit = await warm({ experts: [{ layer: 7, expert: 31 }], skipNonExpert: true, budgetBytes: Number.MAX_SAFE_INTEGER });
    assert.equal(explicit[explicit.length - 1].bytesTotal, perExpert);
  });

  it('hints from the engine raise the counters, the residency of those experts and the heat map', async () => {
    await client.evict({});
    await until('the store to attach to the hint channel', async () => (await client.stats({})).hintChannelAttached);
    const before = await client.stats({});
    const heatBefore = await client.getHeatMap({});
    const count = (h: typeof heatBefore, layer: number, expert: number) => h.layers[layer].counts[expert];
    writer.publish(0, [4, 9], [17]);
    writer.publish(1, [17]);
    await until('three prefetched experts', async () => {
      const s = await client.stats({});
      // 1:17 was predicted, then used: useful if its read had completed by then, else late
      return s.prefetchedExperts - before.prefetchedExperts === 3 && s.prefetchUseful + s.prefetchLate - before.prefetchUseful - before.prefetchLate === 1;
    });
    const s = await client.stats({});
    assert.equal(s.hintChannel, hintChannel);
    assert.equal(s.hintsReceived - before.hintsReceived, 2);
    assert.equal(s.hintsDropped, 0);
    assert.equal(s.prefetchedBytes - before.prefetchedBytes, 3 * store.index.experts[0][0].bytes);
    assert.equal(s.ioMode, uring ? 'uring' : 'fadvise');
    const r = await residencyAt();
    if (uring) {
      const resident = r.layers.flatMap((l) => l.residentExperts.map((e) => `${l.layer}:${e}`));
      assert.deepEqual(resident.sort(), ['0:4', '0:9', '1:17']);
    }
    await until('the uses to reach the heat map', async () => {
      const heat = await client.getHeatMap({});
      // 1:17 once: as a use at layer 1, not as the prediction made at layer 0
      return [[0, 4], [0, 9], [1, 17]].every(([l, e]) => count(heat, l, e) === count(heatBefore, l, e) + 1);
    });
    const heat = await client.getHeatMap({ model: 'moeflash-small' });
    assert.equal(heat.layers.length, 8);
    assert.equal(heat.layers[0].heat.length, 32);
    assert.equal(heat.stepsObserved, 1);
    assert.equal(heat.halfLifeSeconds, 1800);
    assert.ok((await client.stats({})).routingObservations >= 3);
  });

  it('Stats counts warm-ups and evictions', async () => {
    const s = await client.stats({});
    assert.ok(s.warmRequests >= 5);
    assert.ok(s.bytesWarmed >= store.index.expertBytes);
    assert.ok(s.expertsEvicted >= 4 * 256);
    assert.ok(s.bytesEvicted > 0);
  });

  it('invalid requests end with INVALID_ARGUMENT or NOT_FOUND', async () => {
    const bad = await failure((o) => client.evict({ experts: [{ layer: 8, expert: 0 }] }, o));
    assert.equal(bad.code, Status.INVALID_ARGUMENT);
    assert.equal(bad.statusDetails?.fieldViolations?.[0].field, 'experts[0]');
    const unknown = await failure((o) => client.residency({ model: 'no-such-model' }, o));
    assert.equal(unknown.code, Status.NOT_FOUND);
    const trace = await failure(async (o) => {
      for await (const _ of client.warm({ traceId: 'xyz' }, o));
    });
    assert.equal(trace.code, Status.INVALID_ARGUMENT);
    assert.match(trace.details, /trace_id/);
  });

  it('the heat map renders as SVG over HTTP (cells, resident markers) and through `moeflash heatmap`', async () => {
    await client.evict({});
    await warm({ experts: [{ layer: 2, expert: 3 }, { layer: 5, expert: 30 }], skipNonExpert: true, budgetBytes: Number.MAX_SAFE_INTEGER });
    await residencyAt((2 * store.index.experts[0][0].bytes) / store.index.expertBytes);
    const res = await fetch(`http://${http.address}/heatmap.svg`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/svg+xml');
    const svg = await res.text();
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.equal(svg.match(/class="cell"/g)?.length, 8 * 32);
    assert.equal(svg.match(/class="resident"/g)?.length, 2);
    assert.match(svg, /layer 2 expert 3: [^<]*, resident/);
    const metrics = await (await fetch(`http://${http.address}/metrics`)).text();
    assert.match(metrics, /^moeflash_expert_store_hints_received_total \d+$/m);
    assert.equal((await fetch(`http://${http.address}/nope`)).status, 404);
    const json = (await (await fetch(`http://${http.address}/heatmap.json`)).json()) as { residency: { layers: unknown[] } };
    assert.equal(json.residency.layers.length, 8);

    const out = join(dir, 'heat.svg');
    const stderr = process.stderr.write;
    process.stderr.write = () => true; // the command's one-line summary
    try {
      assert.equal(await heatmapCommand(['--addr', `127.0.0.1:${port}`, '--out', out]), 0);
    } finally {
      process.stderr.write = stderr;
    }
    const file = readFileSync(out, 'utf8');
    assert.equal(file.match(/class="cell"/g)?.length, 8 * 32);
    assert.equal(file.match(/class="resident"/g)?.length, 2);
  });

  it('persists the heat map atomically under the state directory (mode 0600); a failed save keeps the old file', async () => {
    assert.equal(store.persist(true), true);
    const path = store.heatMapPath;
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const saved = readFileSync(path);
    store.heat.observe(new Float64Array(8 * 32).fill(1));
    mkdirSync(`${path}.tmp`);
    try {
      assert.equal(store.persist(), false);
      assert.deepEqual(readFileSync(path), saved);
    } finally {
      rmSync(`${path}.tmp`, { recursive: true });
    }
    assert.equal(store.persist(), true);
    const loaded = HeatMap.load(path, store.heatModel, 8, 32, 1_800_000);
    assert.ok(loaded && loaded.observations > 0);
  });
});
