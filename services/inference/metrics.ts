import { context, metrics, SpanKind, SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api';
import { GEN_AI_BUCKETS } from '../common/telemetry/genAiBuckets';
import type { GenerationFinal } from '../engine/types';
import type { EngineHost } from './EngineHost';

/** One generation's span, open from the request until its final record. */
export interface GenerationTrace {
  /** The W3C trace id the engine writes into the expert-store hint records ('' when not traced). */
  readonly traceId: string;
  /** Runs `fn` with the generation span active (log lines inside carry its ids). */
  with<T>(fn: () => T): T;
  /** Ends the span with the final record's attributes and child spans, and records the GenAI metrics. */
  end(final: GenerationFinal): void;
  /** Ends the span with an error (no final record). */
  fail(err: unknown): void;
}

export interface InferenceMetrics {
  start(model: string, requestId: string): GenerationTrace;
}

/** At most this many layers go into the expert attribute: a bounded, single attribute whatever the model. */
const MAX_EXPERT_LAYERS = 256;

/**
 * Inference's telemetry: a `text_completion <model>` span per generation (child of the gRPC server span) with
 * GenAI attributes and queue / prefill / decode child spans placed by the engine's timings, the request's expert
 * activity as one aggregated event, and the GenAI server histograms plus engine gauges on the global meter.
 */
export function InferenceMetrics(host: EngineHost): InferenceMetrics {
  const tracer = trace.getTracer('moeflash.inference');
  const meter = metrics.getMeter('moeflash.inference');
  const duration = meter.createHistogram('gen_ai.server.request.duration', {
    unit: 's',
    description: 'Generative AI server request duration: request received to final record.',
    advice: { explicitBucketBoundaries: [...GEN_AI_BUCKETS.requestDuration] },
  });
  const ttft = meter.createHistogram('gen_ai.server.time_to_first_token', {
    unit: 's',
    description: 'Time to generate the first token (queueing and prefill included).',
    advice: { explicitBucketBoundaries: [...GEN_AI_BUCKETS.timeToFirstToken] },
  });
  const tpot = meter.createHistogram('gen_ai.server.time_per_output_token', {
    unit: 's',
    description: 'Time per output token after the first (decode time / (output tokens - 1)).',
    advice: { explicitBucketBoundaries: [...GEN_AI_BUCKETS.timePerOutputToken] },
  });
  const active = meter.createObservableGauge('moeflash.engine.active_sequences', { description: 'Sequences decoding now, per model.' });
  const queued = meter.createObservableGauge('moeflash.engine.queued_requests', { description: 'Requests waiting for a sequence slot, per model.' });
  meter.addBatchObservableCallback(
    (result) => {
      for (const m of host.list()) {
        if (m.status !== 'ready' || !m.engine) continue;
        const s = m.engine.stats();
        result.observe(active, s.activeSequences, { 'gen_ai.request.model': m.name });
        result.observe(queued, s.queuedRequests, { 'gen_ai.request.model': m.name });
      }
    },
    [active, queued],
  );

  return {
    start(model, requestId) {
      const startMs = performance.timeOrigin + performance.now();
      const base: Attributes = { 'gen_ai.operation.name': 'text_completion', 'gen_ai.request.model': model, 'gen_ai.system': 'moeflash' };
      const span: Span = tracer.startSpan(`text_completion ${model}`, {
        kind: SpanKind.INTERNAL,
        startTime: startMs,
        attributes: { ...base, ...(requestId ? { 'moeflash.request_id': requestId } : {}) },
      });
      const sc = span.spanContext();
      const spanContext = trace.setSpan(context.active(), span);
      let ended = false;
      return {
        traceId: trace.isSpanContextValid(sc) ? sc.traceId : '',
        with: (fn) => context.with(spanContext, fn),
        end(final) {
          if (ended) return;
          ended = true;
          const t = final.timings;
          const endMs = performance.timeOrigin + performance.now();
          span.setAttributes({
            'gen_ai.usage.input_tokens': final.promptTokens,
            'gen_ai.usage.output_tokens': final.completionTokens,
            'gen_ai.response.finish_reasons': [final.finishReason],
            'moeflash.queue_ms': t.queueMs,
            'moeflash.prefill_ms': t.prefillMs,
            'moeflash.ttft_ms': t.ttftMs,
            'moeflash.decode_ms': t.decodeMs,
            'moeflash.decode_tokens_per_second': t.decodeTokensPerSecond,
          });
          const phase = (name: string, from: number, ms: number, attributes: Attributes = {}) =>
            tracer.startSpan(name, { startTime: startMs + from, attributes }, spanContext).end(startMs + from + ms);
          phase('moeflash.queue', 0, t.queueMs);
          phase('moeflash.prefill', t.queueMs, t.prefillMs, { 'gen_ai.usage.input_tokens': final.promptTokens });
          if (final.completionTokens > 0) phase('moeflash.decode', t.ttftMs, t.decodeMs, { 'gen_ai.usage.output_tokens': final.completionTokens });
          const perLayer = final.expertsPerLayer ?? [];
          if (perLayer.length > 0) {
            const shown = perLayer.slice(0, MAX_EXPERT_LAYERS);
            span.addEvent('moeflash.experts', {
              'moeflash.experts.distinct_per_layer': shown,
              'moeflash.experts.layers': perLayer.length,
              'moeflash.experts.distinct_total': perLayer.reduce((a, b) => a + b, 0),
              'moeflash.experts.distinct_max': Math.max(...perLayer),
            });
          }
          if (final.finishReason === 'error') span.setStatus({ code: SpanStatusCode.ERROR, message: final.error ?? 'engine error' });
          span.end(endMs);
          const attrs: Attributes = { ...base, 'gen_ai.response.finish_reason': final.finishReason };
          duration.record((endMs - startMs) / 1000, attrs);
          if (final.completionTokens > 0) ttft.record(t.ttftMs / 1000, base);
          if (final.completionTokens > 1) tpot.record(t.decodeMs / 1000 / (final.completionTokens - 1), base);
        },
        fail(err) {
          if (ended) return;
          ended = true;
          span.recordException(err instanceof Error ? err : String(err));
          span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
          span.end();
          duration.record((performance.timeOrigin + performance.now() - startMs) / 1000, { ...base, 'error.type': err instanceof Error ? err.name : 'error' });
        },
      };
    },
  };
}
