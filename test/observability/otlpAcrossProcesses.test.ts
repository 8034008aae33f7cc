/**
 * The real stack as separate processes (router, inference with a generated model, expert-store reading the engine's
 * hint channel), each exporting OTLP to a receiver in this process, over each of the specification's protocols
 * (grpc, http/protobuf, http/json): one Generate must come out as one trace holding spans of all three services.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { repoRoot } from '../../services/engine/loadAddon';
import { spawnExpertStore, type SpawnedExpertStore } from '../expert-store/spawnExpertStore';
import { until } from '../expert-store/writeTestGguf';
import { drain, generateRequest, generationClient } from '../../harness/grpcClients';
import { spawnService, type SpawnedService } from '../../harness/spawnService';
import { testModel } from '../../harness/testModels';
import { OTLP_KIND, OtlpReceiver, type ReceivedSpan } from '../../harness/OtlpReceiver';

const SERVICES = { router: 'moeflash-router', inference: 'moeflash-inference', expertStore: 'moeflash-expert-store' };
const MAX_TOKENS = 12;

async function stop(service: SpawnedService | undefined): Promise<void> {
  if (!service || service.child.exitCode !== null || service.child.signalCode !== null) return;
  const exited = once(service.child, 'exit');
  service.child.kill('SIGTERM');
  await exited;
}

for (const protocol of ['grpc', 'http/protobuf', 'http/json'] as const) describe(`observability: OTLP (${protocol}) traces and metrics across the router, inference and expert-store processes`, function () {
  const dir = mkdtempSync(join(tmpdir(), 'moeflash-otlp-'));
  const hintChannel = `moeflash-test-otlp-${process.pid}-${protocol.replace('/', '-')}`;
  let receiver: OtlpReceiver;
  let inference: SpawnedService | undefined;
  let router: SpawnedService | undefined;
  let store: SpawnedExpertStore | undefined;
  let traceId: string;
  let trace: ReceivedSpan[];

  before(async () => {
    receiver = await OtlpReceiver.start(protocol);
    const otel = {
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_BSP_SCHEDULE_DELAY: '50', // export within ~50 ms instead of 5 s
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_METRIC_EXPORT_INTERVAL: '200',
      MOEFLASH_METRICS_ADDR: 'off', // no fixed Prometheus ports that other suites might hold
    };
    const model = await testModel('tiny');
    // The models file gives the engine a hint channel of this test's own, which the expert-store reads.
    const modelsFile = join(dir, 'models.json');
    writeFileSync(modelsFile, JSON.stringify({ tiny: { path: model, options: { hintChannel, threads: 1, parallel: 1, contextSize: 256, warmup: false } } }));
    inference = await spawnService(join(repoRoot(), 'dist', 'services', 'inference', 'main.js'), { ...otel, MOEFLASH_MODELS: modelsFile, MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0' });
    await inference.waitForLog((l) => l.msg === 'model ready');
    store = await spawnExpertStore(model, join(dir, 'state'), hintChannel, { ...otel, MOEFLASH_WARM_ON_START: 'none', MOEFLASH_PREFETCH_SPAN_INTERVAL_MS: '50' });
    router = await spawnService(join(repoRoot(), 'dist', 'services', 'router', 'main.js'), { ...otel, MOEFLASH_ROUTER_ADDR: '127.0.0.1:0', MOEFLASH_BACKENDS: `127.0.0.1:${inference.port}` });
    await router.waitForLog((l) => l.msg === 'backend health' && l.serving === true);
    const storeClient = store.client;
    // hint records written before the store attaches are not read: attach first
    await until('the expert-store to attach to the hint channel', async () => (await storeClient.stats({})).hintChannelAttached, 20_000);

    const { client, channel } = generationClient(`127.0.0.1:${router.port}`);
    try {
      const result = await drain(client.generate(generateRequest({ model: 'tiny', prompt: 'The quick brown fox', maxTokens: MAX_TOKENS, requestId: 'otlp-1', sampling: { temperature: 0 } })));
      assert.equal(result.tokens.length, MAX_TOKENS);
    } finally {
      channel.close();
    }
    traceId = await receiver.waitFor('the generation span', (spans) => spans.find((s) => s.attributes['moeflash.request_id'] === 'otlp-1' && s.name === 'text_completion tiny')?.traceId);
    // Each process exports on its own timer, and the expert-store's batches trail the generation: wait for every
    // span the assertions look at (the waiting fails, naming what arrived, if one never comes).
    const expected = [
      `${SERVICES.router}:grpc.moeflash.v1.GenerationService/Generate`,
      `${SERVICES.router}:grpc.moeflash.v1.InferenceService/Generate`,
      `${SERVICES.inference}:grpc.moeflash.v1.InferenceService/Generate`,
      `${SERVICES.inference}:text_completion tiny`,
      `${SERVICES.inference}:moeflash.queue`,
      `${SERVICES.inference}:moeflash.prefill`,
      `${SERVICES.inference}:moeflash.decode`,
    ];
    trace = await receiver.waitFor('the spans of all three services in the trace', (spans) => {
      const inTrace = spans.filter((s) => s.traceId === traceId);
      const names = new Set(inTrace.map((s) => `${s.service}:${s.name}`));
      const steps = inTrace.filter((s) => s.name === 'moeflash.expert_store.prefetch').reduce((n, s) => n + Number(s.attributes['moeflash.prefetch.steps']), 0);
      return expected.every((n) => names.has(n)) && steps >= MAX_TOKENS - 1 ? inTrace : undefined;
    });
  });

  after(async () => {
    store?.channel.close();
    await Promise.all([stop(router), stop(inference), stop(store?.service)]);
    await receiver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const one = (name: string, service: string, kind?: number): ReceivedSpan => {
    const found = trace.filter((s) => s.name === name && s.service === service && (kind === undefined || s.kind === kind));
    assert.equal(found.length, 1, `one ${service} span '${name}' in the trace: ${trace.map((s) => `${s.service}:${s.name}`).join(', ')}`);
    return found[0];
  };

  it("metrics reach the collector too: the router's and the inference's GenAI durations and the router's queue", async () => {
    const generated = (service: string, name: string) => (m: { service: string; name: string; points: number }) => m.service === service && m.name === name && m.points > 0;
    await receiver.waitForMetric('the router\'s client duration', generated(SERVICES.router, 'gen_ai.client.operation.duration'));
    await receiver.waitForMetric('the router\'s queue wait', generated(SERVICES.router, 'moeflash.router.queue.wait'));
    await receiver.waitForMetric('the inference\'s server duration', generated(SERVICES.inference, 'gen_ai.server.request.duration'));
  });

  it('router server -> router client -> inference server -> text_completion, one trace id across the processes', () => {
    const routerServer = one('grpc.moeflash.v1.GenerationService/Generate', SERVICES.router, OTLP_KIND.server);
    const routerClient = one('grpc.moeflash.v1.InferenceService/Generate', SERVICES.router, OTLP_KIND.client);
    const inferenceServer = one('grpc.moeflash.v1.InferenceService/Generate', SERVICES.inference, OTLP_KIND.server);
    const generation = one('text_completion tiny', SERVICES.inference);
    assert.equal(routerServer.parentSpanId, '', 'the router server span is the root (the test client is not traced)');
    assert.equal(routerClient.parentSpanId, routerServer.spanId);
    assert.equal(inferenceServer.parentSpanId, routerClient.spanId, 'the inference server span is a child of the router client span');
    assert.equal(generation.parentSpanId, inferenceServer.spanId);
  });

  it('the engine phases are children of the generation span, with the gen_ai.* attributes', () => {
    const generation = one('text_completion tiny', SERVICES.inference);
    assert.equal(generation.attributes['gen_ai.operation.name'], 'text_completion');
    assert.equal(generation.attributes['gen_ai.request.model'], 'tiny');
    assert.equal(generation.attributes['gen_ai.usage.output_tokens'], MAX_TOKENS);
    const input = generation.attributes['gen_ai.usage.input_tokens'];
    assert.ok(typeof input === 'number' && input > 0, `input tokens: ${input}`);
    assert.deepEqual(generation.attributes['gen_ai.response.finish_reasons'], ['length']);
    const experts = generation.events.find((e) => e.name === 'moeflash.experts');
    assert.ok(experts && (experts.attributes['moeflash.experts.distinct_total'] as number) > 0, 'the engine reported expert activity');
    const phases = trace.filter((s) => s.parentSpanId === generation.spanId);
    assert.deepEqual(phases.map((s) => s.name).sort(), ['moeflash.decode', 'moeflash.prefill', 'moeflash.queue']);
    assert.equal(phases.find((s) => s.name === 'moeflash.prefill')!.attributes['gen_ai.usage.input_tokens'], input);
    assert.equal(phases.find((s) => s.name === 'moeflash.decode')!.attributes['gen_ai.usage.output_tokens'], MAX_TOKENS);
    for (const p of phases) assert.ok(p.startMs >= generation.startMs - 1 && p.endMs <= generation.endMs + 1, `${p.name} lies within the generation`);
  });

  it("the expert-store's prefetch batch joins the request's trace through the hint records' trace id", () => {
    const batches = trace.filter((s) => s.service === SERVICES.expertStore && s.name === 'moeflash.expert_store.prefetch');
    assert.ok(batches.length >= 1, 'at least one prefetch batch span in the trace');
    const records = batches.reduce((n, s) => n + (s.attributes['moeflash.prefetch.hint_records'] as number), 0);
    const steps = batches.reduce((n, s) => n + (s.attributes['moeflash.prefetch.steps'] as number), 0);
    // aggregated: a handful of spans for the request's many records (a record per MoE layer per engine step)
    assert.ok(records > batches.length, `${records} records in ${batches.length} spans`);
    assert.ok(steps >= MAX_TOKENS - 1, `${steps} engine steps seen for ${MAX_TOKENS} tokens`);
    for (const b of batches) {
      assert.equal(b.parentSpanId, '', 'the batch span has no parent (only the trace id crossed the shared memory)');
      assert.equal(b.attributes['moeflash.request.trace_id'], traceId);
    }
  });

  it("a Warm call naming the request's trace id adds a warm span to that trace, linked to the Warm call's own span", async () => {
    const warm = store!.client.warm({ model: '', experts: [], hottestPerLayer: 1, traceId, skipNonExpert: true, budgetBytes: 1 << 30 });
    let last;
    for await (const p of warm) last = p;
    assert.ok(last && last.expertsWarmed > 0 && last.expertsWarmed === last.expertsTotal, `warmed ${JSON.stringify(last)}`);
    const [warmSpan, server] = await receiver.waitFor('the warm span and the Warm server span', (spans) => {
      const w = spans.find((s) => s.name === 'moeflash.expert_store.warm' && s.traceId === traceId);
      const link = w?.links[0];
      const srv = link && spans.find((s) => s.spanId === link.spanId && s.traceId === link.traceId);
      return w && srv ? ([w, srv] as const) : undefined;
    });
    assert.equal(warmSpan.service, SERVICES.expertStore);
    assert.equal(warmSpan.parentSpanId, '');
    assert.equal(warmSpan.attributes['moeflash.warm.trigger'], 'rpc');
    assert.equal(warmSpan.attributes['moeflash.warm.completed'], true);
    assert.equal(warmSpan.attributes['moeflash.warm.experts_warmed'], last.expertsWarmed);
    assert.equal(warmSpan.attributes['moeflash.warm.bytes_done'], last.bytesDone);
    assert.equal(server.name, 'grpc.moeflash.v1.ExpertStoreService/Warm');
    assert.equal(server.kind, OTLP_KIND.server);
    assert.notEqual(server.traceId, traceId, "the Warm call's own trace (its client is not traced)");
  });
});
