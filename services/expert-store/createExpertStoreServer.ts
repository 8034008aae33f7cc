import { ExpertStoreServiceDefinition, type ExpertStoreServiceImplementation } from '../../gen/moeflash/v1/expert_store';
import { InvalidArgumentError, UnavailableError } from '../common/errors';
import type { Logger } from 'pino';
import { ServiceServer } from '../common/ServiceServer';
import type { ExpertStore } from './ExpertStore';
import { traceWarm } from './traceWarm';

export interface ExpertStoreServerOptions {
  log: Logger;
  /** The store to serve. Absent (no model configured): Stats reports zeros and the other calls UNAVAILABLE. */
  store?: ExpertStore;
  /** FileDescriptorSet for grpc.reflection.v1; none: no reflection. */
  descriptorSet?: Uint8Array;
}

const TRACE_ID = /^[0-9a-f]{32}$/;

/**
 * The gRPC face of an ExpertStore: moeflash.v1.ExpertStoreService plus grpc.health.v1 on a ServiceServer (typed
 * errors mapped to statuses, graceful shutdown). Ready as soon as it is created: the store is already open.
 */
export function createExpertStoreServer(options: ExpertStoreServerOptions): ServiceServer {
  const { log } = options;
  const service = ServiceServer({ log, serviceNames: [ExpertStoreServiceDefinition.fullName], descriptorSet: options.descriptorSet });
  const need = (): ExpertStore => {
    if (!options.store) throw new UnavailableError('this expert-store has no model (set MOEFLASH_MODEL or --model)');
    return options.store;
  };

  const impl: ExpertStoreServiceImplementation = {
    async *warm(request, context) {
      const store = need();
      store.resolveModel(request.model);
      if (request.traceId && !TRACE_ID.test(request.traceId)) {
        throw InvalidArgumentError.field('trace_id', 'must be 32 lowercase hex characters (a W3C trace id)');
      }
      const started = Date.now();
      let last;
      const progress = store.warm(
        {
          experts: request.experts,
          hottestPerLayer: request.hottestPerLayer,
          budgetBytes: request.budgetBytes,
          skipNonExpert: request.skipNonExpert,
        },
        context.signal,
      );
      for await (const p of traceWarm(progress, { trigger: 'rpc', requestTraceId: request.traceId || undefined })) {
        last = p;
        yield {
          bytesDone: p.bytesDone,
          bytesTotal: p.bytesTotal,
          expertsWarmed: p.expertsWarmed,
          expertsTotal: p.expertsTotal,
          ioMode: p.ioMode,
          budgetBytes: p.budgetBytes,
        };
      }
      log.info({ traceId: request.traceId || undefined, bytes: last?.bytesDone, experts: last?.expertsWarmed, ms: Date.now() - started, ioMode: last?.ioMode }, 'warm done');
    },

    async evict(request) {
      const store = need();
      store.resolveModel(request.model);
      const r = await store.evict(request.experts, request.includeNonExpert);
      return { expertsEvicted: r.experts, bytesEvicted: r.bytes };
    },

    async residency(request) {
      const store = need();
      store.resolveModel(request.model);
      return store.residency();
    },

    async stats() {
      if (!options.store) return {};
      const s = options.store.stats();
      const h = s.hints;
      return {
        warmRequests: s.warmRequests,
        expertsWarmed: s.expertsWarmed,
        bytesWarmed: s.bytesWarmed,
        expertsEvicted: s.expertsEvicted,
        bytesEvicted: s.bytesEvicted,
        routingObservations: s.routingObservations,
        hintChannel: s.hintChannel,
        hintChannelAttached: h?.attached ?? false,
        hintChannelError: h?.lastError ?? '',
        hintsReceived: h?.hints ?? 0,
        hintsDropped: h?.dropped ?? 0,
        hintsMalformed: h?.malformed ?? 0,
        prefetchedExperts: h?.prefetchedExperts ?? 0,
        prefetchedBytes: h?.prefetchedBytes ?? 0,
        prefetchUseful: h?.useful ?? 0,
        prefetchLate: h?.late ?? 0,
        prefetchAlreadyResident: h?.alreadyResident ?? 0,
        prefetchDeduplicated: h?.deduplicated ?? 0,
        ioMode: s.ioMode,
        ioFallbackReason: s.ioFallbackReason,
        hintChannelAttaches: h?.attaches ?? 0,
        predictedHintIds: h?.predictedIds ?? 0,
      };
    },

    async getHeatMap(request) {
      const store = need();
      store.resolveModel(request.model);
      const r = store.heatReport();
      return { layers: r.layers, tokensObserved: 0, stepsObserved: r.stepsObserved, halfLifeSeconds: r.halfLifeSeconds };
    },
  };

  service.server.add(ExpertStoreServiceDefinition, impl);
  service.health.setReady(true);
  return service;
}
