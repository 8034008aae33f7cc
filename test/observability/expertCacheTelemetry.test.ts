/**
 * The expert slot cache seen from outside, with the real engine on CPU (the cache keeps a host bank there): an
 * inference process started the way operators start it (MOEFLASH_MODEL + MOEFLASH_EXPERT_CACHE_SLOTS), one Generate,
 * then its Prometheus endpoint, the OTLP trace it exports and `moeflash trace-summary` all show the request's hits
 * and misses.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { createChannel, createClient } from 'nice-grpc';

import { InferenceServiceDefinition } from '../../gen/moeflash/v1/inference';
import { repoRoot } from '../../services/engine/loadAddon';
import { until } from '../expert-store/writeTestGguf';
import { drain, generateRequest } from '../../harness/grpcClients';
import { spawnService, type SpawnedService } from '../../harness/spawnService';
import { testModel } from '../../harness/testModels';
import { freePort } from '../helpers/freePort';
import { OtlpReceiver, type ReceivedSpan } from '../../harness/OtlpReceiver';

const run = promisify(execFile);
const BIN = join(repoRoot(), 'bin', 'moeflash.js');
const MAIN = join(repoRoot(), 'dist', 'services', 'inference', 'main.js');
const MODEL = 'tiny-seed1'; // served under its file name
const SLOTS = 4; // of tiny's 8 experts per layer, top-2: some lookups miss, some hit
const MAX_TOKENS = 16;

async function stop(service: SpawnedService | undefined): Promise<void> {
  if (!service || service.child.exitCode !== null || service.child.signalCode !== null) return;
  const exited = once(service.child, 'exit');
  service.child.kill('SIGTERM');
  await exited;
}

/** The value of each series of `name` in Prometheus text, keyed by its label set. */
function series(text: string, name: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)/.exec(line);
    if (m && m[1] === name) found.set(m[2] ?? '', Number(m[3]));
  }
  return found;
}

/** The one series of `name` for the model (fails listing what is there). */
function valueFor(text: string, name: string): number {
  const matching = [...series(text, name)].filter(([labels]) => labels.includes(`gen_ai_request_model="${MODEL}"`));
  assert.equal(matching.length, 1, `one ${name} series for ${MODEL}: ${JSON.stringify([...series(text, name)])}`);
  return matching[0][1];
}

describe('observability: expert cache metrics, span attributes and trace-summary (real engine, CPU, MOEFLASH_EXPERT_CACHE_SLOTS)', function () {
  let receiver: OtlpReceiver;
  let inference: SpawnedService | undefined;
  let metricsPort: number;
  let ready: Record<string, unknown>;
  let generation: ReceivedSpan;

  before(async () => {
    receiver = await OtlpReceiver.start();
    metricsPort = await freePort();
    inference = await spawnService(MAIN, {
      MOEFLASH_MODEL: await testModel('tiny'),
      MOEFLASH_EXPERT_CACHE_SLOTS: String(SLOTS),
      MOEFLASH_EXPERT_CACHE_PREFETCH: '1',
      MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0',
      MOEFLASH_METRICS_ADDR: `127.0.0.1:${metricsPort}`,
      MOEFLASH_HINTS: '0', // no expert-store here
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_BSP_SCHEDULE_DELAY: '50',
    });
    ready = await Promise.race([
      inference.waitForLog((l) => l.msg === 'model ready' || l.msg === 'model failed to load'),
      inference.exited.then((code) => assert.fail(`inference exited (${code}): ${JSON.stringify(inference!.logs)}`)),
    ]);
    assert.equal(ready.msg, 'model ready', JSON.stringify(ready));
    const channel = createChannel(`127.0.0.1:${inference.port}`);
    try {
      const result = await drain(
        createClient(InferenceServiceDefinition, channel).generate(
          generateRequest({ model: MODEL, prompt: 'The quick brown fox', maxTokens: MAX_TOKENS, requestId: 'cache-1', sampling: { temperature: 0 } }),
        ),
      );
      assert.equal(result.tokens.length, MAX_TOKENS);
    } finally {
      channel.close();
    }
    generation = await receiver.waitFor('the generation span', (spans) => spans.find((s) => s.name === `text_completion ${MODEL}` && s.attributes['moeflash.request_id'] === 'cache-1'));
  });

  after(async () => {
    await stop(inference);
    await receiver?.close();
  });

  it('MOEFLASH_EXPERT_CACHE_SLOTS turns the cache on for MOEFLASH_MODEL (ModelInfo.expertCache reports the slots)', () => {
    const info = ready.info as { expertCache?: { slots: number; sizedBy: string }; nExpert: number };
    assert.equal(info.expertCache?.slots, SLOTS, JSON.stringify(info));
    assert.equal(info.nExpert, 8);
  });

  it('the Prometheus endpoint has the expert cache series of the model: hits + misses > 0, slots, hit ratio per request', async () => {
    let text = '';
    await until('the expert cache series on /metrics', async () => {
      text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return series(text, 'moeflash_expert_cache_hits_total').size > 0;
    });
    const hits = valueFor(text, 'moeflash_expert_cache_hits_total');
    const misses = valueFor(text, 'moeflash_expert_cache_misses_total');
    assert.ok(hits + misses > 0, `hits ${hits} misses ${misses}`);
    assert.ok(misses > 0, 'a cold cache misses');
    // the counters are the request's record summed over layers: the span says the same
    assert.equal(hits, generation.attributes['moeflash.expert_cache.hits']);
    assert.equal(misses, generation.attributes['moeflash.expert_cache.misses']);
    assert.equal(valueFor(text, 'moeflash_expert_cache_bytes_copied_total'), generation.attributes['moeflash.expert_cache.bytes_copied']);
    assert.ok(valueFor(text, 'moeflash_expert_cache_bytes_copied_total') > 0);
    assert.ok(valueFor(text, 'moeflash_expert_cache_stall_time_total') >= 0);
    assert.ok(valueFor(text, 'moeflash_expert_cache_copy_time_total') >= 0);
    assert.ok(valueFor(text, 'moeflash_expert_cache_evictions_total') >= 0);
    assert.equal(valueFor(text, 'moeflash_expert_cache_slots'), SLOTS);
    // MOEFLASH_EXPERT_CACHE_PREFETCH: every cached layer step after the first was predicted
    const predicted = valueFor(text, 'moeflash_expert_cache_prefetch_predicted_total');
    assert.ok(predicted > 0);
    assert.ok(valueFor(text, 'moeflash_expert_cache_prefetch_predicted_used_total') <= predicted);
    assert.ok(valueFor(text, 'moeflash_expert_cache_prefetch_useful_copies_total') <= valueFor(text, 'moeflash_expert_cache_prefetch_copies_total'));
    assert.ok(valueFor(text, 'moeflash_expert_cache_prefetch_bytes_total') <= valueFor(text, 'moeflash_expert_cache_bytes_copied_total'));
    // the experts are in memory (read at load): no guess waits for the disk
    assert.equal(valueFor(text, 'moeflash_expert_cache_prefetch_deferred_total'), 0);
    assert.equal(valueFor(text, 'moeflash_expert_cache_hit_ratio_count'), 1);
    assert.ok(Math.abs(valueFor(text, 'moeflash_expert_cache_hit_ratio_sum') - hits / (hits + misses)) < 1e-9);
    // no per-layer label: one series per model whatever the layer count
    assert.equal(series(text, 'moeflash_expert_cache_hits_total').size, 1);
    assert.ok(![...series(text, 'moeflash_expert_cache_hits_total').keys()][0].includes('layer'));
  });

  it('the generation span carries the cache totals and one event per layer that had lookups', () => {
    const a = generation.attributes;
    const hits = a['moeflash.expert_cache.hits'] as number;
    const misses = a['moeflash.expert_cache.misses'] as number;
    assert.ok(hits + misses > 0);
    assert.ok(Math.abs((a['moeflash.expert_cache.hit_ratio'] as number) - hits / (hits + misses)) < 1e-9);
    for (const k of ['moeflash.expert_cache.bytes_copied', 'moeflash.expert_cache.stall_ms', 'moeflash.expert_cache.copy_ms']) assert.equal(typeof a[k], 'number', k);
    const layers = generation.events.filter((e) => e.name === 'moeflash.expert_cache.layer');
    assert.ok(layers.length >= 1 && layers.length <= 4, `${layers.length} layer events for tiny's 4 layers`);
    const indices = layers.map((e) => e.attributes['moeflash.expert_cache.layer'] as number);
    assert.deepEqual(indices, [...new Set(indices)].sort((x, y) => x - y), 'one event per layer, in layer order');
    for (const e of layers) assert.ok((e.attributes['moeflash.expert_cache.hits'] as number) + (e.attributes['moeflash.expert_cache.misses'] as number) > 0);
    const sum = (k: string) => layers.reduce((n, e) => n + (e.attributes[k] as number), 0);
    assert.equal(sum('moeflash.expert_cache.hits'), hits);
    assert.equal(sum('moeflash.expert_cache.misses'), misses);
    assert.equal(generation.events.at(-1)?.name, 'moeflash.experts', 'the aggregate expert event is still there, last');
  });

  it('`moeflash trace-summary` shows the per-layer hits and misses of the request, matching the span events', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'trace-summary', '--addr', `127.0.0.1:${inference!.port}`, '--request-id', 'cache-1']);
    const hits = generation.attributes['moeflash.expert_cache.hits'];
    const misses = generation.attributes['moeflash.expert_cache.misses'];
    assert.match(stdout, new RegExp(`^cache {3}hits ${hits} {2}misses ${misses} {2}hit rate `, 'm'));
    const rows = stdout
      .split('\n')
      .filter((l) => /^\s*\d+\s+\d+\s+\d+\s+\d+\s+\S+%$/.test(l))
      .map((l) => l.trim().split(/\s+/));
    const events = generation.events.filter((e) => e.name === 'moeflash.expert_cache.layer');
    for (const e of events) {
      const row = rows.find((r) => Number(r[0]) === e.attributes['moeflash.expert_cache.layer']);
      assert.ok(row, `a row for layer ${e.attributes['moeflash.expert_cache.layer']} in\n${stdout}`);
      assert.deepEqual([Number(row[2]), Number(row[3])], [e.attributes['moeflash.expert_cache.hits'], e.attributes['moeflash.expert_cache.misses']]);
    }
  });
});

describe('observability: experts read on demand (MOEFLASH_EXPERT_READ=demand): tier counters and span attributes', function () {
  let receiver: OtlpReceiver;
  let inference: SpawnedService | undefined;
  let metricsPort: number;

  before(async () => {
    receiver = await OtlpReceiver.start();
    metricsPort = await freePort();
    inference = await spawnService(MAIN, {
      MOEFLASH_MODEL: await testModel('tiny'),
      MOEFLASH_EXPERT_READ: 'demand',
      MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0',
      MOEFLASH_METRICS_ADDR: `127.0.0.1:${metricsPort}`,
      MOEFLASH_HINTS: '0',
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_BSP_SCHEDULE_DELAY: '50',
    });
    const ready = await inference.waitForLog((l) => l.msg === 'model ready' || l.msg === 'model failed to load');
    assert.equal(ready.msg, 'model ready', JSON.stringify(ready));
    assert.equal((ready.info as { expertRead: string }).expertRead, 'demand');
  });

  after(async () => {
    await stop(inference);
    await receiver?.close();
  });

  it("the request's routed experts by tier on /metrics equal its span's attributes; predictions are counted", async () => {
    const channel = createChannel(`127.0.0.1:${inference!.port}`);
    try {
      await drain(
        createClient(InferenceServiceDefinition, channel).generate(
          generateRequest({ model: MODEL, prompt: 'Once upon a time', maxTokens: MAX_TOKENS, requestId: 'paged-1', sampling: { temperature: 0 } }),
        ),
      );
    } finally {
      channel.close();
    }
    const span = await receiver.waitFor('the generation span', (spans) => spans.find((s) => s.attributes['moeflash.request_id'] === 'paged-1'));
    const experts = span.attributes['moeflash.expert_paging.experts'] as number;
    const hits = span.attributes['moeflash.expert_paging.page_cache_hits'] as number;
    assert.ok(experts >= 4 * MAX_TOKENS, `tiny's 4 layers route at least one expert per step (${experts})`);
    assert.ok(hits <= experts);
    assert.equal(span.attributes['moeflash.expert_paging.page_cache_hit_ratio'], hits / experts);
    let text = '';
    await until('the paging series on /metrics', async () => {
      text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return series(text, 'moeflash_expert_paging_experts_total').size > 0;
    });
    const byTier = (tier: string) => [...series(text, 'moeflash_expert_paging_experts_total')].find(([labels]) => labels.includes(`moeflash_tier="${tier}"`))?.[1];
    assert.equal(byTier('page_cache'), hits);
    assert.equal(byTier('disk'), experts - hits);
    assert.equal(valueFor(text, 'moeflash_expert_paging_bytes_read_total'), span.attributes['moeflash.expert_paging.bytes_read']);
    const predicted = valueFor(text, 'moeflash_expert_paging_predicted_total');
    assert.ok(predicted > 0, 'the next layers were predicted');
    assert.ok(valueFor(text, 'moeflash_expert_paging_predicted_used_total') <= predicted);
    // the guesses' reads ahead are exported apart from the needs' reads, the used part never above the whole
    const readAhead = valueFor(text, 'moeflash_expert_paging_bytes_read_ahead_total');
    assert.ok(valueFor(text, 'moeflash_expert_paging_bytes_read_ahead_used_total') <= readAhead);
  });
});

describe('configuration: a bad MOEFLASH_EXPERT_CACHE_* value stops the inference process, naming the variable', () => {
  for (const [name, value] of [
    ['MOEFLASH_EXPERT_CACHE_SLOTS', 'lots'],
    ['MOEFLASH_EXPERT_CACHE_MEM', '40 parsecs'],
  ] as const) {
    it(`${name}=${value}: exit 2, the variable on stderr`, async () => {
      await assert.rejects(
        spawnService(MAIN, { MOEFLASH_MODEL: '/nonexistent/tiny.gguf', MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0', MOEFLASH_METRICS_ADDR: 'off', [name]: value }),
        (err: Error) => {
          assert.match(err.message, /exited \(2\) before listening/);
          assert.match(err.message, new RegExp(`\\(${name}\\): [^"]*'${value}'`));
          return true;
        },
      );
    });
  }
});
