import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import {
  FinishReason,
  type GenerateRequest,
  type GenerateResponse,
  type Model,
} from '../../gen/moeflash/v1/generation';
import {
  InferenceServiceDefinition,
  ModelState,
  RecentRequestsServiceDefinition,
  type InferenceServiceImplementation,
  type ModelLoad,
  type RecentRequestsServiceImplementation,
} from '../../gen/moeflash/v1/inference';
import { InvalidArgumentError, NotFoundError, UnavailableError } from '../common/errors';
import { ServiceServer } from '../common/ServiceServer';
import type { TerminatorContext } from '../common/ServerTerminator';
import type { EngineLike, FinishReason as EngineFinishReason } from '../engine/types';
import type { EngineHost } from './EngineHost';
import { InferenceMetrics } from './metrics';
import { RecentRequests } from './RecentRequests';
import { ExpertResidency } from './ExpertResidency';
import { toChatPrompt, toGenerateOptions } from './toGenerateOptions';
import { toModelMessage } from './toModelMessage';
import { toRequestSummary } from './toRequestSummary';
import { toTimingsMessage } from './toTimingsMessage';

export interface InferenceServerOptions {
  host: EngineHost;
  log: Logger;
  /** Serve reflection from this FileDescriptorSet. */
  descriptorSet?: Uint8Array;
  /** Generation spans and GenAI metrics (default: on the global OpenTelemetry providers). */
  metrics?: InferenceMetrics;
  /** Where finished generations are summarised for ListRecentRequests (default: the last 64). */
  recentRequests?: RecentRequests;
}

const SERVICE_NAME = 'moeflash.v1.InferenceService';

const FINISH_REASONS: Record<Exclude<EngineFinishReason, 'error'>, FinishReason> = {
  stop: FinishReason.FINISH_REASON_STOP,
  length: FinishReason.FINISH_REASON_LENGTH,
  cancelled: FinishReason.FINISH_REASON_CANCELLED,
};

const MODEL_STATES = { loading: ModelState.MODEL_STATE_LOADING, ready: ModelState.MODEL_STATE_READY, failed: ModelState.MODEL_STATE_FAILED };

/**
 * The inference process's gRPC server: InferenceService over the engines of `host`, grpc.health.v1 readiness
 * following the host (NOT_SERVING while models load), and the shared error, deadline and shutdown conventions.
 * Call listen() to serve; shutting down leaves the engines to the caller (host.close()).
 */
export function createInferenceServer(options: InferenceServerOptions): ServiceServer {
  const { host, log } = options;
  const service = ServiceServer({ log, serviceNames: [SERVICE_NAME], descriptorSet: options.descriptorSet });
  const followHost = () => service.health.setReady(host.ready && !host.isClosing);
  host.on('change', followHost);
  followHost();
  const telemetry = options.metrics ?? InferenceMetrics(host);
  const recent = options.recentRequests ?? new RecentRequests();

  const residency = new ExpertResidency();

  function engineFor(model: string): EngineLike {
    if (model.length === 0) throw InvalidArgumentError.field('model', 'a model name is required');
    return host.engine(model);
  }

  const implementation: InferenceServiceImplementation<TerminatorContext> = {
    async *generate(request: GenerateRequest, context): AsyncGenerator<GenerateResponse> {
      const engine = engineFor(request.model);
      const generation = telemetry.start(request.model, request.requestId);
      try {
        // The engine validates synchronously, so a bad field fails the call before any message is sent.
        const events = generation.with(() => engine.generate(toGenerateOptions(request, context.signal, generation.traceId)));
        let promptTokens = request.promptTokenIds.length;
        let completionTokens = 0;
        for await (const event of events) {
          if (event.type === 'chunk') {
            promptTokens = event.promptTokens;
            completionTokens += event.tokenIds.length;
            yield {
              event: { $case: 'chunk', value: { tokenIds: event.tokenIds, text: event.text, usage: { promptTokens, completionTokens }, logprobs: event.logprobs ?? [] } },
            };
            continue;
          }
          generation.end(event);
          // without an id (a direct call, not through the router) the ring still needs a key to list it under
          recent.add(toRequestSummary(event, { requestId: request.requestId || randomUUID(), model: request.model, traceId: generation.traceId }));
          log.debug(
            { model: request.model, requestId: request.requestId, finishReason: event.finishReason, completionTokens: event.completionTokens, timings: event.timings },
            'generation ended',
          );
          if (event.finishReason === 'error') {
            if (host.isClosing) throw new UnavailableError('the inference service is shutting down');
            throw new Error(`engine failed during generation: ${event.error ?? 'no reason given'}`);
          }
          yield {
            event: {
              $case: 'complete',
              value: {
                finishReason: FINISH_REASONS[event.finishReason],
                matchedStop: event.matchedStop ?? '',
                usage: { promptTokens: event.promptTokens, completionTokens: event.completionTokens },
                timings: toTimingsMessage(event.timings),
              },
            },
          };
        }
      } catch (err) {
        generation.fail(err);
        throw err;
      } finally {
        // the client went away mid-stream: the engine stops, no final record reaches us
        generation.fail(context.signal.aborted ? 'cancelled by the client' : 'stream closed');
      }
    },

    async tokenize(request) {
      const engine = engineFor(request.model);
      const chat = toChatPrompt(request);
      if (chat && request.text.length > 0) throw InvalidArgumentError.field('text', 'set either text or messages, not both');
      return { tokenIds: chat ? engine.tokenizeChat(chat) : engine.tokenize(request.text, { addSpecial: request.addSpecial, parseSpecial: request.parseSpecial }) };
    },

    async detokenize(request) {
      return { text: engineFor(request.model).detokenize(request.tokenIds) };
    },

    async listModels() {
      const models: Model[] = host.list().flatMap((m) => (m.status === 'ready' && m.engine ? [toModelMessage(m.name, m.engine.info)] : []));
      return { models };
    },

    async getModel(request) {
      return { model: toModelMessage(request.model, engineFor(request.model).info) };
    },

    async getLoad() {
      const models: ModelLoad[] = await Promise.all(
        host.list().map(async (m) => {
          const stats = m.status === 'ready' && m.engine ? m.engine.stats() : undefined;
          const path = m.status === 'ready' ? m.engine?.info.path : undefined;
          return {
            model: m.name,
            state: MODEL_STATES[m.status],
            activeSequences: stats?.activeSequences ?? 0,
            queuedRequests: stats?.queuedRequests ?? 0,
            capacity: stats?.parallel ?? 0,
            error: m.error ?? '',
            expertResidency: (path ? await residency.of(path) : undefined) ?? -1,
          };
        }),
      );
      return { models };
    },
  };

  const recentRequests: RecentRequestsServiceImplementation = {
    async listRecentRequests(request) {
      if (request.requestId) {
        const found = recent.get(request.requestId);
        if (!found) throw new NotFoundError('request', request.requestId, `this inference process keeps the last ${recent.capacity} requests`);
        return { requests: [found], capacity: recent.capacity };
      }
      return { requests: recent.newest(request.limit || recent.capacity), capacity: recent.capacity };
    },
  };

  service.server.add(InferenceServiceDefinition, implementation);
  service.server.add(RecentRequestsServiceDefinition, recentRequests);
  return service;
}
