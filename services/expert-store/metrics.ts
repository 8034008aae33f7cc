import { metrics } from '@opentelemetry/api';
import type { ExpertStore } from './ExpertStore';

/**
 * The expert-store's counters as OpenTelemetry observables on the global meter, read from store.stats() at each
 * collection (Prometheus: moeflash_expert_store_*_total, the names the hand-written /metrics used), plus the
 * page-cache resident ratio of the expert bytes (mincore / cachestat at each scrape).
 */
export function ExpertStoreMetrics(store: ExpertStore): void {
  const meter = metrics.getMeter('moeflash.expert-store');
  const counters = {
    warmRequests: meter.createObservableCounter('moeflash.expert_store.warm_requests', { description: 'Warm calls served.' }),
    bytesWarmed: meter.createObservableCounter('moeflash.expert_store.warmed_bytes', { unit: 'By', description: 'Bytes read by warm-ups.' }),
    bytesEvicted: meter.createObservableCounter('moeflash.expert_store.evicted_bytes', { unit: 'By', description: 'Bytes evicted.' }),
    routingObservations: meter.createObservableCounter('moeflash.expert_store.routing_observations', { description: 'Routing observations in the heat map.' }),
    hints: meter.createObservableCounter('moeflash.expert_store.hints_received', { description: 'Valid hint records received.' }),
    dropped: meter.createObservableCounter('moeflash.expert_store.hints_dropped', { description: 'Hint records overwritten before they were read.' }),
    malformed: meter.createObservableCounter('moeflash.expert_store.hints_malformed', { description: 'Hint records rejected.' }),
    prefetchedExperts: meter.createObservableCounter('moeflash.expert_store.prefetched_experts', { description: 'Experts read ahead because of hints.' }),
    prefetchedBytes: meter.createObservableCounter('moeflash.expert_store.prefetched_bytes', { unit: 'By', description: 'Bytes read ahead because of hints.' }),
    useful: meter.createObservableCounter('moeflash.expert_store.prefetch_useful', { description: 'Prefetched experts a later hint used.' }),
    late: meter.createObservableCounter('moeflash.expert_store.prefetch_late', { description: 'Hints for experts still being prefetched.' }),
  };
  const attached = meter.createObservableGauge('moeflash.expert_store.hint_channel_attached', { description: 'Whether the hint channel is attached (0/1).' });
  meter.addBatchObservableCallback(
    (result) => {
      const s = store.stats();
      const h = s.hints;
      result.observe(counters.warmRequests, s.warmRequests);
      result.observe(counters.bytesWarmed, s.bytesWarmed);
      result.observe(counters.bytesEvicted, s.bytesEvicted);
      result.observe(counters.routingObservations, s.routingObservations);
      result.observe(counters.hints, h?.hints ?? 0);
      result.observe(counters.dropped, h?.dropped ?? 0);
      result.observe(counters.malformed, h?.malformed ?? 0);
      result.observe(counters.prefetchedExperts, h?.prefetchedExperts ?? 0);
      result.observe(counters.prefetchedBytes, h?.prefetchedBytes ?? 0);
      result.observe(counters.useful, h?.useful ?? 0);
      result.observe(counters.late, h?.late ?? 0);
      result.observe(attached, h?.attached ? 1 : 0);
    },
    [...Object.values(counters), attached],
  );
  meter
    .createObservableGauge('moeflash.expert_store.resident_ratio', { description: 'Fraction of the expert bytes resident in the page cache.' })
    .addCallback(async (result) => result.observe((await store.residency()).residentFraction));
}
