import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';

import { repoRoot } from '../../services/engine/loadAddon';

interface ScenarioSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  attributes: Record<string, unknown>;
  events: { name: string; attributes: Record<string, unknown> }[];
  startMs: number;
  endMs: number;
}
interface Scenario {
  spans: ScenarioSpan[];
  engineTraceIds: string[];
  metrics: Record<string, { attributes: Record<string, unknown>; value: number | { count: number; sum: number; buckets: { boundaries: number[] } } }[]>;
}

/** Runs traceScenario.js (telemetry first, then router + inference in that process) and parses its report. */
function runScenario(requests: number): Promise<Scenario> {
  const script = join(repoRoot(), 'dist', 'test', 'observability', 'traceScenario.js');
  const child = spawn(process.execPath, [script], { env: { ...process.env, SCENARIO_REQUESTS: String(requests) }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Scenario) : reject(new Error(`scenario exited ${code}: ${err}`))));
  });
}

describe('observability: traces and metrics of Generate (router + inference in one process)', function () {
  let one: Scenario;
  before(async () => {
    one = await runScenario(1);
  });

  it('one Generate is one trace: client -> router server -> router client -> inference server -> text_completion -> phases', () => {
    const { spans } = one;
    const traceIds = new Set(spans.map((s) => s.traceId));
    assert.equal(traceIds.size, 1, 'every span in one trace');
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const parentOf = (s: ScenarioSpan) => (s.parentSpanId ? byId.get(s.parentSpanId) : undefined);
    const gen = spans.find((s) => s.name === 'text_completion fake');
    assert.ok(gen, `a generation span among ${spans.map((s) => s.name).join(', ')}`);
    // SpanKind: 1 server, 2 client
    const chain: [string, number][] = [];
    for (let s = parentOf(gen); s; s = parentOf(s)) chain.push([s.name, s.kind]);
    assert.deepEqual(chain, [
      ['grpc.moeflash.v1.InferenceService/Generate', 1],
      ['grpc.moeflash.v1.InferenceService/Generate', 2],
      ['grpc.moeflash.v1.GenerationService/Generate', 1],
      ['grpc.moeflash.v1.GenerationService/Generate', 2],
    ]);
    // The router's server span says how long the call waited in the router's queue (no wait: a slot was free).
    const routerServer = spans.find((s) => s.name === 'grpc.moeflash.v1.GenerationService/Generate' && s.kind === 1);
    assert.equal(routerServer?.attributes['moeflash.queue.wait_ms'], 0);
    const phases = spans.filter((s) => s.parentSpanId === gen.spanId).map((s) => s.name).sort();
    assert.deepEqual(phases, ['moeflash.decode', 'moeflash.prefill', 'moeflash.queue']);
    for (const p of spans.filter((s) => s.parentSpanId === gen.spanId)) {
      assert.ok(p.startMs >= gen.startMs - 1 && p.endMs <= gen.endMs + 1, `${p.name} lies within the generation span`);
    }
  });

  it('the generation span carries the GenAI attributes and one aggregated expert event', () => {
    const gen = one.spans.find((s) => s.name === 'text_completion fake')!;
    assert.equal(gen.attributes['gen_ai.operation.name'], 'text_completion');
    assert.equal(gen.attributes['gen_ai.request.model'], 'fake');
    assert.equal(gen.attributes['gen_ai.usage.input_tokens'], 6); // BOS + 'hello'
    assert.equal(gen.attributes['gen_ai.usage.output_tokens'], 5);
    assert.deepEqual(gen.attributes['gen_ai.response.finish_reasons'], ['length']);
    assert.equal(gen.attributes['moeflash.request_id'], 'req-0');
    assert.equal(gen.attributes['moeflash.sampling'], 'graph');
    for (const k of ['moeflash.queue_ms', 'moeflash.prefill_ms', 'moeflash.ttft_ms', 'moeflash.decode_ms']) assert.equal(typeof gen.attributes[k], 'number', k);
    assert.equal(gen.events.length, 1);
    assert.equal(gen.events[0].name, 'moeflash.experts');
    assert.deepEqual(gen.events[0].attributes['moeflash.experts.distinct_per_layer'], [2, 3]);
    assert.equal(gen.events[0].attributes['moeflash.experts.distinct_total'], 5);
  });

  it('the engine gets the trace id (for the expert-store hint records)', () => {
    assert.deepEqual(one.engineTraceIds, [one.spans[0].traceId]);
    assert.match(one.engineTraceIds[0], /^[0-9a-f]{32}$/);
  });

  it('metrics after 3 Generates: GenAI histograms with semconv buckets, token usage, gauges', async () => {
    const { metrics } = await runScenario(3);
    const hist = (name: string, filter: Record<string, unknown> = {}) => {
      const points = (metrics[name] ?? []).filter((p) => Object.entries(filter).every(([k, v]) => p.attributes[k] === v));
      assert.equal(points.length, 1, `${name} ${JSON.stringify(filter)}: ${JSON.stringify(metrics[name])}`);
      return points[0].value as { count: number; sum: number; buckets: { boundaries: number[] } };
    };
    assert.equal(hist('gen_ai.server.request.duration').count, 3);
    assert.deepEqual(hist('gen_ai.server.request.duration').buckets.boundaries.slice(0, 3), [0.01, 0.02, 0.04]);
    assert.equal(hist('gen_ai.server.time_to_first_token').count, 3);
    assert.deepEqual(hist('gen_ai.server.time_to_first_token').buckets.boundaries.slice(0, 3), [0.001, 0.005, 0.01]);
    assert.equal(hist('gen_ai.server.time_per_output_token').count, 3);
    const input = hist('gen_ai.client.token.usage', { 'gen_ai.token.type': 'input' });
    const output = hist('gen_ai.client.token.usage', { 'gen_ai.token.type': 'output' });
    assert.deepEqual([input.count, input.sum, output.count, output.sum], [3, 18, 3, 15]);
    assert.equal(hist('gen_ai.client.operation.duration', { 'gen_ai.response.finish_reason': 'length' }).count, 3);
    assert.deepEqual(metrics['moeflash.engine.active_sequences'], [{ attributes: { 'gen_ai.request.model': 'fake' }, value: 0 }]);
    assert.deepEqual(metrics['moeflash.router.queue_depth'], [{ attributes: {}, value: 0 }]);
    const queueWait = hist('moeflash.router.queue.wait');
    assert.deepEqual([queueWait.count, queueWait.sum], [3, 0]);
    assert.equal(metrics['moeflash.router.in_flight'].length, 1);
  });
});
