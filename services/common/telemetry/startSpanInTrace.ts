import { ROOT_CONTEXT, type Span, type SpanOptions, type Tracer } from '@opentelemetry/api';
import { traceJoiningIdGenerator } from './traceJoiningIdGenerator';

/** A W3C trace id: 32 lowercase hex characters, not all zero. */
const TRACE_ID = /^(?!0{32})[0-9a-f]{32}$/;

/**
 * Starts a root span in the trace `traceId`, a request's trace that this process knows only by id (from a hint
 * record or a request field), so a trace backend shows the span with the request's other spans. With
 * startTelemetry's id generator the span gets that trace id; without it, or for an invalid id, it starts a trace of
 * its own. Either way the attribute `moeflash.request.trace_id` names the request's trace.
 */
export function startSpanInTrace(tracer: Tracer, name: string, traceId: string, options: SpanOptions = {}): Span {
  const attributes = { ...options.attributes, 'moeflash.request.trace_id': traceId };
  const start = () => tracer.startSpan(name, { ...options, root: true, attributes }, ROOT_CONTEXT);
  return TRACE_ID.test(traceId) ? traceJoiningIdGenerator.withNextTraceId(traceId, start) : start();
}
