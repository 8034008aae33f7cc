/**
 * PrefetchSpans without processes: fed hint-consumer counters by hand, with a tracer provider of its own (nothing
 * registered globally) that uses telemetry's trace-joining id generator, as startTelemetry's does.
 */
import assert from 'node:assert/strict';

import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

import { traceJoiningIdGenerator } from '../../services/common/telemetry/traceJoiningIdGenerator';
import type { NativeHintConsumerStats } from '../../services/engine/loadAddon';
import { PrefetchSpans } from '../../services/expert-store/PrefetchSpans';

const TRACE_A = '4bf92f3577b34da6a3ce929d0e0e4736';

function consumerStats(fields: Partial<NativeHintConsumerStats> = {}): NativeHintConsumerStats {
  return {
    attached: true, path: '/dev/shm/x', producerPid: 1, writeIndex: 0, readIndex: 0, attaches: 1, records: 0, hints: 0, steps: 0, dropped: 0,
    malformed: 0, demandIds: 0, predictedIds: 0, prefetchedExperts: 0, prefetchedBytes: 0, alreadyResident: 0, deduplicated: 0, useful: 0,
    late: 0, heatOnly: false, ioErrors: 0, inFlight: 0, queued: 0, mode: 'uring', fallbackReason: null, lastTraceId: null, lastError: null, ...fields,
  };
}

describe('PrefetchSpans: hint-consumer work as aggregated spans', () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ idGenerator: traceJoiningIdGenerator, spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const tracer = provider.getTracer('test');
  let stats = consumerStats();
  let spans: PrefetchSpans | undefined;

  beforeEach(() => {
    exporter.reset();
    stats = consumerStats();
    // an hour: only flush() and stop() end batches here
    spans = PrefetchSpans(() => stats, { intervalMs: 3_600_000, tracer });
  });
  afterEach(() => spans?.stop());
  after(() => provider.shutdown());

  it("one span per batch, whatever the records, in the last record's trace, with the counters' deltas", () => {
    stats = consumerStats({ hints: 480, steps: 120, demandIds: 960, prefetchedExperts: 30, prefetchedBytes: 30 << 20, useful: 12, late: 3, lastTraceId: TRACE_A });
    spans!.flush();
    const [batch, ...more] = exporter.getFinishedSpans();
    assert.equal(more.length, 0);
    assert.equal(batch.name, 'moeflash.expert_store.prefetch');
    assert.equal(batch.spanContext().traceId, TRACE_A);
    assert.equal(batch.parentSpanContext, undefined);
    assert.equal(batch.attributes['moeflash.request.trace_id'], TRACE_A);
    assert.equal(batch.attributes['moeflash.prefetch.hint_records'], 480);
    assert.equal(batch.attributes['moeflash.prefetch.steps'], 120);
    assert.equal(batch.attributes['moeflash.prefetch.bytes'], 30 << 20);
    assert.equal(batch.attributes['moeflash.prefetch.useful'], 12);

    // the next batch reports what happened since, not the totals
    stats = consumerStats({ ...stats, hints: 500, steps: 125, prefetchedExperts: 31 });
    spans!.flush();
    const second = exporter.getFinishedSpans()[1];
    assert.equal(second.attributes['moeflash.prefetch.hint_records'], 20);
    assert.equal(second.attributes['moeflash.prefetch.experts'], 1);
    assert.equal(second.attributes['moeflash.prefetch.useful'], 0);
  });

  it('an idle interval emits nothing; stop() ends the last batch', () => {
    spans!.flush();
    assert.equal(exporter.getFinishedSpans().length, 0);
    stats = consumerStats({ hints: 8, steps: 2 });
    spans!.stop();
    const [batch] = exporter.getFinishedSpans();
    assert.equal(batch.attributes['moeflash.prefetch.hint_records'], 8);
    assert.notEqual(batch.spanContext().traceId, TRACE_A);
    assert.equal(batch.attributes['moeflash.request.trace_id'], undefined, 'untraced records: a trace of its own, no request named');
  });

  it('the joined trace id is used once: a later unrelated root span gets a fresh trace', () => {
    stats = consumerStats({ hints: 4, lastTraceId: TRACE_A });
    spans!.flush();
    const other = tracer.startSpan('unrelated');
    other.end();
    assert.notEqual(other.spanContext().traceId, TRACE_A);
  });
});
