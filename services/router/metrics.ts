import { metrics, type Attributes } from '@opentelemetry/api';
import { GEN_AI_BUCKETS } from '../common/telemetry/genAiBuckets';
import type { Admission } from './Admission';
import type { BackendPool } from './BackendPool';

export interface RouterMetrics {
  /** A generation finished (complete message received): its duration and token usage. */
  generated(model: string, seconds: number, inputTokens: number, outputTokens: number, finishReason: string): void;
  /** A generation failed; `errorType` is the status name (RESOURCE_EXHAUSTED for an admission rejection). */
  failed(model: string, seconds: number, errorType: string): void;
  /** Admission turned a call away (queue full). */
  rejected(model: string): void;
}

/**
 * The router's metrics on the global meter: gen_ai.client.token.usage (input / output, semconv buckets) and
 * gen_ai.client.operation.duration as the client of the inference backends; queue depth, in-flight calls and
 * rejections of admission.
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
  const rejections = meter.createCounter('moeflash.router.rejections', { description: 'Generations rejected by admission (RESOURCE_EXHAUSTED).' });
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
    rejected(model) {
      rejections.add(1, base(model));
    },
  };
}
