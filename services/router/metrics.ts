import { metrics, trace, type Attributes } from '@opentelemetry/api';
import { GEN_AI_BUCKETS } from '../common/telemetry/genAiBuckets';
import type { Admission, AdmissionTicket } from './Admission';
import type { BackendPool } from './BackendPool';

export interface RouterMetrics {
  /** A generation finished (complete message received): its duration and token usage. */
  generated(model: string, seconds: number, inputTokens: number, outputTokens: number, finishReason: string): void;
  /** A generation failed; `errorType` is the error's class (AdmissionRefusal for an admission rejection). */
  failed(model: string, seconds: number, errorType: string): void;
}

/** The queue wait of a call on its server span, so a slow call's trace says how much of it was waiting. */
export function queueSpanAttributes(ticket: AdmissionTicket): void {
  trace.getActiveSpan()?.setAttributes({
    'moeflash.queue.wait_ms': ticket.queuedMs,
    ...(ticket.expectedWaitMs !== undefined && { 'moeflash.queue.expected_wait_ms': ticket.expectedWaitMs }),
  });
}

/**
 * The router's metrics on the global meter: gen_ai.client.token.usage (input / output, semconv buckets) and
 * gen_ai.client.operation.duration as the client of the inference backends; queue depth, queue wait, in-flight
 * calls and refusals of admission by reason.
 */
export function RouterMetrics(admission: Admission, pool: BackendPool): RouterMetrics {
  const meter = metrics.getMeter('moeflash.router');
  const usage = meter.createHistogram('gen_ai.client.token.usage', {
    unit: '{token}',
    description: 'Tokens used per generation, by gen_ai.token.type (input, output).',
    advice: { explicitBucketBoundaries: [...GEN_AI_BUCKETS.tokenUsage] },
  });
  const duration = meter.createHistogram('gen_ai.client.operation.duration', {
    unit: 's',
    description: 'Generation duration seen by the router (admission, retries and streaming included).',
    advice: { explicitBucketBoundaries: [...GEN_AI_BUCKETS.requestDuration] },
  });
  const rejections = meter.createCounter('moeflash.router.rejections', {
    description: 'Generations refused by admission (RESOURCE_EXHAUSTED), by moeflash.refusal.reason.',
  });
  const queueWait = meter.createHistogram('moeflash.router.queue.wait', {
    unit: 's',
    description: 'Time admitted generations waited in the router queue for a backend slot (0 when one was free).',
    advice: { explicitBucketBoundaries: [0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] },
  });
  const queueDepth = meter.createObservableGauge('moeflash.router.queue_depth', { description: 'Generations waiting for a backend slot.' });
  const inFlight = meter.createObservableGauge('moeflash.router.in_flight', { description: 'Generations running on each backend.' });
  meter.addBatchObservableCallback(
    (result) => {
      result.observe(queueDepth, admission.queued);
      for (const backend of pool.addresses) result.observe(inFlight, admission.inFlight(backend), { 'server.address': backend });
    },
    [queueDepth, inFlight],
  );
  const base = (model: string): Attributes => ({ 'gen_ai.operation.name': 'text_completion', 'gen_ai.request.model': model, 'gen_ai.system': 'moeflash' });
  admission.on('admitted', (model, queuedMs) => queueWait.record(queuedMs / 1000, base(model)));
  admission.on('refused', (model, reason) => rejections.add(1, { ...base(model), 'moeflash.refusal.reason': reason }));
  return {
    generated(model, seconds, inputTokens, outputTokens, finishReason) {
      const attrs = base(model);
      usage.record(inputTokens, { ...attrs, 'gen_ai.token.type': 'input' });
      usage.record(outputTokens, { ...attrs, 'gen_ai.token.type': 'output' });
      duration.record(seconds, { ...attrs, 'gen_ai.response.finish_reason': finishReason });
    },
    failed(model, seconds, errorType) {
      duration.record(seconds, { ...base(model), 'error.type': errorType });
    },
  };
}
