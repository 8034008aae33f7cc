import { context, metrics, SpanKind, SpanStatusCode, trace, type Attributes, type Meter, type ObservableCounter, type Span } from '@opentelemetry/api';
import { GEN_AI_BUCKETS } from '../common/telemetry/genAiBuckets';
import type { EngineLike, ExpertCacheStats, GenerationFinal, RequestExpertCache, RequestExpertPaging } from '../engine/types';
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

/** Engine-wide counters read at scrape time, one per key: [name after the prefix, unit, description]. */
function observableCounters<K extends string>(
  meter: Meter,
  prefix: string,
  defs: Record<K, readonly [name: string, unit: string, description: string]>,
): Record<K, ObservableCounter> {
  const out = {} as Record<K, ObservableCounter>;
  for (const key of Object.keys(defs) as K[]) {
    const [name, unit, description] = defs[key];
    out[key] = meter.createObservableCounter(prefix + name, { unit, description });
  }
  return out;
}

/** At most this many layers go into the expert attribute: a bounded, single attribute whatever the model. */
const MAX_EXPERT_LAYERS = 256;

/**
 * At most this many `moeflash.expert_cache.layer` events per span (one per layer with lookups): under the SDK's
 * default limit of 128 events, so the aggregate `moeflash.experts` event, added last, is never the one dropped.
 */
const MAX_CACHE_LAYER_EVENTS = 120;

/** Per-request hit ratio buckets: fine near 1, where a working cache lives. */
const HIT_RATIO_BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1];

/** The engine-wide cache counters, when the engine has an expert cache (EngineLike leaves the method optional). */
function cacheStatsOf(engine: EngineLike): ExpertCacheStats | undefined {
  return engine.expertCacheStats?.();
}

/** A request's cache hits and misses summed over layers. */
function cacheTotals(cache: RequestExpertCache): { hits: number; misses: number } {
  let hits = 0;
  let misses = 0;
  for (const h of cache.hits) hits += h;
  for (const m of cache.misses) misses += m;
  return { hits, misses };
}

/**
 * Inference's telemetry: a `text_completion <model>` span per generation (child of the gRPC server span) with
 * GenAI attributes and queue / prefill / decode child spans placed by the engine's timings, the request's expert
 * activity as one aggregated event, its expert cache use (attributes, one event per layer with lookups), and the
 * GenAI server histograms, expert cache counters and engine gauges on the global meter.
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
  // Expert slot cache, per request from the final record (a step shared by several requests counts for each).
  const cacheHits = meter.createCounter('moeflash.expert_cache.hits', {
    unit: '{lookup}',
    description: 'Expert cache lookups that found the expert in a slot, summed over layers and requests.',
  });
  const cacheMisses = meter.createCounter('moeflash.expert_cache.misses', {
    unit: '{lookup}',
    description: 'Expert cache lookups that had to copy the expert in, summed over layers and requests.',
  });
  const cacheBytes = meter.createCounter('moeflash.expert_cache.bytes_copied', {
    unit: 'By',
    description: 'Expert bytes copied into cache slots on misses, summed over requests.',
  });
  const cacheStall = meter.createCounter('moeflash.expert_cache.stall_time', {
    unit: 's',
    description: 'Time the cached layers waited (routing read-back, slot assignment, expert copies), summed over requests.',
  });
  const cacheCopy = meter.createCounter('moeflash.expert_cache.copy_time', {
    unit: 's',
    description: 'Time spent copying experts into slots, summed over requests.',
  });
  const cacheHitRatio = meter.createHistogram('moeflash.expert_cache.hit_ratio', {
    unit: '1',
    description: 'Per request: hits / (hits + misses) over all layers (requests without lookups are not recorded).',
    advice: { explicitBucketBoundaries: HIT_RATIO_BUCKETS },
  });
  // Engine-wide, read at scrape time: evictions are not in the per-request record.
  const cacheEvictions = meter.createObservableCounter('moeflash.expert_cache.evictions', {
    unit: '{expert}',
    description: 'Experts evicted from a cache slot since the model loaded.',
  });
  const cacheSlots = meter.createObservableGauge('moeflash.expert_cache.slots', {
    unit: '{slot}',
    description: 'Expert cache slots per MoE layer (absent when the cache is off).',
  });
  // Predictive prefetch, engine-wide: accuracy = predicted_used / predicted, useful copies = prefetched_used / prefetched.
  const prefetchCounters = observableCounters(meter, 'moeflash.expert_cache.prefetch.', {
    predicted: ['predicted', '{expert}', 'Distinct experts the prefetch predicted for a layer step.'],
    predictedUsed: ['predicted_used', '{expert}', 'Predicted experts the layer step then needed.'],
    prefetched: ['copies', '{expert}', 'Experts copied speculatively into a slot.'],
    prefetchedUsed: ['useful_copies', '{expert}', 'Speculative copies the layer step then needed (the rest was wasted).'],
    bytesPrefetched: ['bytes', 'By', 'Bytes copied speculatively (included in moeflash.expert_cache.bytes_copied).'],
    prefetchDeferred: ['deferred', '{expert}', 'Predicted experts not copied ahead because their bytes were still on disk (experts read on demand).'],
  });
  // Experts read on demand (expertRead 'demand'): the tiers below the GPU. A routed expert is served by the page cache
  // (every page resident) or needs the disk; bytes_read counts the routed experts' bytes the disk had to supply.
  const pagingExperts = meter.createCounter('moeflash.expert_paging.experts', {
    unit: '{expert}',
    description: 'Routed experts read on demand, by the tier that held them (moeflash.tier: page_cache or disk), per request.',
  });
  const pagingBytesRead = meter.createCounter('moeflash.expert_paging.bytes_read', {
    unit: 'By',
    description: "Bytes of routed experts that were not in the page cache when routed (read from disk during the step).",
  });
  const pagingPrediction = observableCounters(meter, 'moeflash.expert_paging.', {
    predicted: ['predicted', '{expert}', "Experts predicted for a layer by the layer before it (its router on this layer's input), read ahead."],
    predictedUsed: ['predicted_used', '{expert}', 'Predicted experts the layer then routed to.'],
    bytesReadAhead: ['bytes_read_ahead', 'By', 'Bytes of guessed experts (predictions, speculative copies) the engine read ahead from disk.'],
    bytesReadAheadUsed: ['bytes_read_ahead_used', 'By', "Of the bytes read ahead, those of experts the layer's next routing or miss list needed."],
  });
  meter.addBatchObservableCallback(
    (result) => {
      for (const m of host.list()) {
        if (m.status !== 'ready' || !m.engine) continue;
        const model = { 'gen_ai.request.model': m.name };
        const s = m.engine.stats();
        result.observe(active, s.activeSequences, model);
        result.observe(queued, s.queuedRequests, model);
        const paging = m.engine.expertPagingStats?.();
        if (paging) for (const [key, counter] of Object.entries(pagingPrediction)) result.observe(counter, paging[key as keyof typeof pagingPrediction], model);
        if (!m.engine.info.expertCache) continue;
        result.observe(cacheSlots, m.engine.info.expertCache.slots, model);
        const cache = cacheStatsOf(m.engine);
        if (cache) result.observe(cacheEvictions, cache.total.evictions, model);
        if (cache && m.engine.info.expertCache.prefetch) for (const [key, counter] of Object.entries(prefetchCounters)) result.observe(counter, cache.total[key as keyof typeof prefetchCounters], model);
      }
    },
    [active, queued, cacheSlots, cacheEvictions, ...Object.values(prefetchCounters), ...Object.values(pagingPrediction)],
  );

  /** The request's cache use: span attributes, one event per layer that had lookups, and the counters. */
  function recordExpertCache(span: Span, cache: RequestExpertCache, model: Attributes): void {
    const { hits, misses } = cacheTotals(cache);
    const lookups = hits + misses;
    span.setAttributes({
      'moeflash.expert_cache.hits': hits,
      'moeflash.expert_cache.misses': misses,
      ...(lookups > 0 ? { 'moeflash.expert_cache.hit_ratio': hits / lookups } : {}),
      'moeflash.expert_cache.bytes_copied': cache.bytesCopied,
      'moeflash.expert_cache.stall_ms': cache.stallMs,
      'moeflash.expert_cache.copy_ms': cache.copyMs,
    });
    let events = 0;
    const layers = Math.max(cache.hits.length, cache.misses.length);
    for (let layer = 0; layer < layers && events < MAX_CACHE_LAYER_EVENTS; layer++) {
      const h = cache.hits[layer] ?? 0;
      const m = cache.misses[layer] ?? 0;
      if (h + m === 0) continue;
      span.addEvent('moeflash.expert_cache.layer', {
        'moeflash.expert_cache.layer': layer,
        'moeflash.expert_cache.hits': h,
        'moeflash.expert_cache.misses': m,
      });
      events++;
    }
    cacheHits.add(hits, model);
    cacheMisses.add(misses, model);
    cacheBytes.add(cache.bytesCopied, model);
    cacheStall.add(cache.stallMs / 1000, model);
    cacheCopy.add(cache.copyMs / 1000, model);
    if (lookups > 0) cacheHitRatio.record(hits / lookups, model);
  }

  /** The request's page-cache and disk use when experts are read on demand: span attributes and the tier counters. */
  function recordExpertPaging(span: Span, paging: RequestExpertPaging, model: Attributes): void {
    span.setAttributes({
      'moeflash.expert_paging.experts': paging.experts,
      'moeflash.expert_paging.page_cache_hits': paging.pageCacheHits,
      'moeflash.expert_paging.bytes_read': paging.bytesRead,
      ...(paging.experts > 0 ? { 'moeflash.expert_paging.page_cache_hit_ratio': paging.pageCacheHits / paging.experts } : {}),
    });
    pagingExperts.add(paging.pageCacheHits, { ...model, 'moeflash.tier': 'page_cache' });
    pagingExperts.add(paging.experts - paging.pageCacheHits, { ...model, 'moeflash.tier': 'disk' });
    pagingBytesRead.add(paging.bytesRead, model);
  }

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
            ...(final.sampling ? { 'moeflash.sampling': final.sampling } : {}),
          });
          const phase = (name: string, from: number, ms: number, attributes: Attributes = {}) =>
            tracer.startSpan(name, { startTime: startMs + from, attributes }, spanContext).end(startMs + from + ms);
          phase('moeflash.queue', 0, t.queueMs);
          phase('moeflash.prefill', t.queueMs, t.prefillMs, { 'gen_ai.usage.input_tokens': final.promptTokens });
          if (final.completionTokens > 0) phase('moeflash.decode', t.ttftMs, t.decodeMs, { 'gen_ai.usage.output_tokens': final.completionTokens });
          if (final.expertCache) recordExpertCache(span, final.expertCache, { 'gen_ai.request.model': model });
          if (final.expertPaging) recordExpertPaging(span, final.expertPaging, { 'gen_ai.request.model': model });
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
