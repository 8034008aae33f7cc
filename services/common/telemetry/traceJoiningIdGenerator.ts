import { RandomIdGenerator, type IdGenerator } from '@opentelemetry/sdk-trace-base';

const random = new RandomIdGenerator();
let nextTraceId: string | undefined;

/**
 * The id generator startTelemetry installs: random ids, except that a root span started inside `withNextTraceId`
 * gets the given trace id. That lets a process put its spans into a trace it only knows the id of (the expert-store
 * learns a request's trace id from the shared-memory hint records, never a span id), without inventing a parent
 * span id that no backend could resolve. The SDK asks for a trace id only for spans without a valid parent.
 */
export const traceJoiningIdGenerator: IdGenerator & { withNextTraceId<T>(traceId: string, fn: () => T): T } = {
  generateSpanId: () => random.generateSpanId(),
  generateTraceId() {
    const joined = nextTraceId;
    nextTraceId = undefined;
    return joined ?? random.generateTraceId();
  },
  withNextTraceId(traceId, fn) {
    nextTraceId = traceId;
    try {
      return fn();
    } finally {
      // not taken (no SDK, or the span had a parent): must not leak into an unrelated span
      nextTraceId = undefined;
    }
  },
};
