import { context, SpanStatusCode, trace, type Link, type Span } from '@opentelemetry/api';
import { startSpanInTrace } from '../common/telemetry/startSpanInTrace';
import type { WarmProgress } from './Warmer';

export interface WarmOrigin {
  /** What started the warm-up: the Warm rpc, or the store's startup warm from the heat map. */
  trigger: 'rpc' | 'startup';
  /** W3C trace id of the request that caused it (WarmRequest.trace_id), if any. */
  requestTraceId?: string;
}

/**
 * Passes a warm-up's progress through unchanged, inside a `moeflash.expert_store.warm` span that ends with what was
 * read. With a request trace id the span joins that request's trace (startSpanInTrace) and links to the span that
 * was active here (the Warm rpc's server span), so both traces lead to each other; otherwise it is a child of the
 * active span.
 */
export async function* traceWarm(progress: AsyncIterable<WarmProgress>, origin: WarmOrigin): AsyncGenerator<WarmProgress> {
  const tracer = trace.getTracer('moeflash.expert-store');
  const attributes = { 'moeflash.warm.trigger': origin.trigger };
  let span: Span;
  if (origin.requestTraceId) {
    const caller = trace.getSpanContext(context.active());
    const links: Link[] = caller && trace.isSpanContextValid(caller) ? [{ context: caller }] : [];
    span = startSpanInTrace(tracer, 'moeflash.expert_store.warm', origin.requestTraceId, { attributes, links });
  } else {
    span = tracer.startSpan('moeflash.expert_store.warm', { attributes });
  }
  let last: WarmProgress | undefined;
  let completed = false;
  try {
    for await (const p of progress) {
      last = p;
      yield p;
    }
    completed = true;
  } catch (err) {
    span.recordException(err instanceof Error ? err : String(err));
    span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
    throw err;
  } finally {
    // also reached when the caller stops early (the client cancelled the Warm call)
    span.setAttributes({
      'moeflash.warm.completed': completed,
      'moeflash.warm.bytes_done': last?.bytesDone ?? 0,
      'moeflash.warm.bytes_total': last?.bytesTotal ?? 0,
      'moeflash.warm.experts_warmed': last?.expertsWarmed ?? 0,
      'moeflash.warm.experts_total': last?.expertsTotal ?? 0,
      'moeflash.warm.budget_bytes': last?.budgetBytes ?? 0,
      ...(last ? { 'moeflash.warm.io_mode': last.ioMode } : {}),
    });
    span.end();
  }
}
