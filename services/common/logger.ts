import { trace } from '@opentelemetry/api';
import pino, { type Logger } from 'pino';

/** trace_id / span_id of the active span, so a log line leads to its trace (nothing outside a span). */
function traceFields(): Record<string, string> {
  const ctx = trace.getActiveSpan()?.spanContext();
  return ctx && trace.isSpanContextValid(ctx) ? { trace_id: ctx.traceId, span_id: ctx.spanId } : {};
}

/**
 * The services' structured logger: JSON lines to stderr (stdout stays free for a CLI's output). Synchronous
 * writes, so the last lines before an exit are never lost; requests log at debug, so this costs nothing at the
 * default level. The level comes from MOEFLASH_LOG_LEVEL unless given. Lines written inside a traced request
 * carry its trace_id and span_id.
 */
export function createLogger(service: string, level = process.env.MOEFLASH_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name: service, level, base: { pid: process.pid }, mixin: traceFields }, pino.destination({ fd: 2, sync: true }));
}

export type { Logger };
