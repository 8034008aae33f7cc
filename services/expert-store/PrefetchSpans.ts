import { trace, type Attributes, type Tracer } from '@opentelemetry/api';
import { startSpanInTrace } from '../common/telemetry/startSpanInTrace';
import type { NativeHintConsumerStats } from '../common/native/ioAddon';

/** Counters of the hint consumer that a prefetch batch span reports as deltas, and their attribute names. */
const BATCH_COUNTERS = {
  hints: 'moeflash.prefetch.hint_records',
  steps: 'moeflash.prefetch.steps',
  demandIds: 'moeflash.prefetch.demand_ids',
  predictedIds: 'moeflash.prefetch.predicted_ids',
  prefetchedExperts: 'moeflash.prefetch.experts',
  prefetchedBytes: 'moeflash.prefetch.bytes',
  alreadyResident: 'moeflash.prefetch.already_resident',
  deduplicated: 'moeflash.prefetch.deduplicated',
  useful: 'moeflash.prefetch.useful',
  late: 'moeflash.prefetch.late',
  dropped: 'moeflash.prefetch.dropped_records',
  malformed: 'moeflash.prefetch.malformed_records',
  ioErrors: 'moeflash.prefetch.io_errors',
} as const satisfies Partial<Record<keyof NativeHintConsumerStats, string>>;

type Counters = Record<keyof typeof BATCH_COUNTERS, number>;
const ZERO = Object.fromEntries(Object.keys(BATCH_COUNTERS).map((k) => [k, 0])) as Counters;

/** Emits the hint consumer's prefetch work as aggregated spans. */
export interface PrefetchSpans {
  /** Ends the current batch now (if anything happened), as the timer does every interval. */
  flush(): void;
  /** Stops the timer after a last flush. Idempotent. */
  stop(): void;
}

export interface PrefetchSpansOptions {
  /** Length of a batch: the hint consumer's counters are read this often. */
  intervalMs: number;
  tracer?: Tracer;
}

/**
 * One `moeflash.expert_store.prefetch` span per interval in which the hint consumer did something (records read,
 * experts prefetched), with the counters' deltas as attributes: the engine publishes a record per layer per step,
 * so a span per record would outnumber the request's own spans a thousandfold. The span joins the trace of the last
 * traced hint record of the interval (startSpanInTrace), which is the request being decoded; while several requests
 * decode at once an interval's work is attributed to one of them, because the native consumer reports only its last
 * trace id, not counts per trace.
 */
export function PrefetchSpans(readStats: () => NativeHintConsumerStats | undefined, options: PrefetchSpansOptions): PrefetchSpans {
  const tracer = options.tracer ?? trace.getTracer('moeflash.expert-store');
  let previous: Counters = { ...ZERO };
  let since = Date.now();
  let stopped = false;

  const flush = () => {
    const stats = readStats();
    const now = Date.now();
    if (!stats) return;
    const current = Object.fromEntries(Object.keys(BATCH_COUNTERS).map((k) => [k, stats[k as keyof Counters]])) as Counters;
    const attributes: Attributes = { 'moeflash.prefetch.io_mode': stats.mode, 'moeflash.prefetch.in_flight': stats.inFlight, 'moeflash.prefetch.queued': stats.queued };
    let changed = false;
    for (const [key, name] of Object.entries(BATCH_COUNTERS) as [keyof Counters, string][]) {
      const delta = current[key] - previous[key];
      attributes[name] = delta;
      changed ||= delta !== 0;
    }
    if (changed) {
      const spanOptions = { startTime: since, attributes };
      const span = stats.lastTraceId
        ? startSpanInTrace(tracer, 'moeflash.expert_store.prefetch', stats.lastTraceId, spanOptions)
        : tracer.startSpan('moeflash.expert_store.prefetch', { ...spanOptions, root: true });
      span.end(now);
    }
    previous = current;
    since = now;
  };

  const timer = setInterval(flush, options.intervalMs).unref();
  return {
    flush,
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      flush();
    },
  };
}
