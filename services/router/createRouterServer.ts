import { randomUUID } from 'node:crypto';
import { Status, type CallContext } from 'nice-grpc';
import type { Logger } from 'pino';
import {
  FinishReason,
  GenerationServiceDefinition,
  type GenerateRequest,
  type GenerateResponse,
  type GenerationServiceImplementation,
  type Model,
} from '../../gen/moeflash/v1/generation';
import type { InferenceServiceDefinition } from '../../gen/moeflash/v1/inference';
import { callDeadline } from '../common/deadlineInterceptor';
import { DEFAULT_MAX_TOKENS } from '../common/defaultMaxTokens';
import type { DefinitionClient } from '../common/DefinitionClient';
import { InvalidArgumentError, MoeflashError, NotFoundError, UnavailableError } from '../common/errors';
import type { RouterConfig } from '../common/parseConfig';
import type { TerminatorContext } from '../common/ServerTerminator';
import { ServiceServer } from '../common/ServiceServer';
import { UpstreamError } from '../common/UpstreamError';
import { undecodableAsInvalidArgument } from '../common/undecodableAsInvalidArgument';
import { ApiKeys, bearerAuthMiddleware } from '../common/auth';
import type { BackendCredentials } from '../common/tls';
import { Admission } from './Admission';
import { BackendDiscovery } from './BackendDiscovery';
import { BackendMonitor } from './BackendMonitor';
import { BackendPool } from './BackendPool';
import { callerOf } from './callerOf';
import { queueSpanAttributes, RouterMetrics } from './metrics';

export interface RouterServerOptions {
  log: Logger;
  config: RouterConfig;
  /** Serve reflection from this FileDescriptorSet (gen/descriptor.binpb). */
  descriptorSet?: Uint8Array;
  /** TLS (or mutual TLS) to the backends; plaintext by default. */
  backendCredentials?: BackendCredentials;
}

export interface RouterServer extends ServiceServer {
  readonly pool: BackendPool;
  readonly admission: Admission;
  /** Resolves dns:/// backends; resolveSoon() to look them up now. */
  readonly discovery: BackendDiscovery;
  /** Stops watching the backends and closes their channels; call after shutdown(). */
  close(): void;
}

const SERVICE_NAME = 'moeflash.v1.GenerationService';
const MAX_PRIORITY = 10;

type InferenceClient = DefinitionClient<typeof InferenceServiceDefinition>;

/**
 * The router: GenerationService in front of the inference backends. A request goes to the least loaded healthy
 * backend serving its model, through bounded admission (by default as many calls per backend as it reports it
 * decodes at once and no queue, so the rest get RESOURCE_EXHAUSTED at once); the client's deadline and cancellation
 * travel to the backend; a call that fails UNAVAILABLE before its first token is retried on another backend, and
 * never after (the client already has tokens it would get twice).
 */
export function createRouterServer(options: RouterServerOptions): RouterServer {
  const { log, config } = options;
  // Keys are read once, here: a missing or empty key file fails startup rather than serving unauthenticated.
  const apiKeys = ApiKeys.load({ file: config.apiKeysFile, keys: config.apiKeys });
  const service = ServiceServer({
    log,
    serviceNames: [SERVICE_NAME],
    descriptorSet: options.descriptorSet,
    authenticate: apiKeys && bearerAuthMiddleware(apiKeys),
  });
  const discovery = new BackendDiscovery({
    log,
    entries: config.backends,
    resolveMs: config.resolveMs,
    dnsServers: config.dnsServers,
    tls: options.backendCredentials !== undefined,
    apply: (added, removed) => {
      for (const [address, channelOptions] of added) monitor.add(address, channelOptions);
      for (const address of removed) monitor.remove(address);
    },
  });
  const pool = new BackendPool(discovery.staticBackends);
  const fixedLimit = config.maxInFlightPerBackend;
  const admission = new Admission({
    // Unless overridden, a backend takes as many calls as its engines decode at once: a call beyond that would only
    // wait in the engine's queue, slowing every admitted call, where the router can queue it fairly or refuse it.
    limit: fixedLimit !== undefined ? () => fixedLimit : (backend) => pool.capacity(backend),
    maxQueued: config.maxQueued,
    maxQueueWaitMs: config.maxQueueWaitMs,
    burstMs: config.queueBurstMs,
    retryAfterMs: config.retryAfterMs,
  });
  const monitor = new BackendMonitor(pool, {
    log,
    loadPollMs: config.loadPollMs,
    credentials: options.backendCredentials?.credentials,
    channelOptions: options.backendCredentials?.channelOptions,
  });
  const metrics = RouterMetrics(admission, pool);
  // A backend that failed a call may have gone away: look the names up again rather than at the next period.
  pool.on('suspect', () => void discovery.resolveSoon());
  pool.on('change', () => {
    service.health.setReady(pool.anyHealthy());
    // Queued calls may now have a backend (or none left at all).
    admission.poke();
  });

  /** Fails fast for a request no backend can serve now: NOT_FOUND if no healthy backend knows the model. */
  function requireModel(model: string): void {
    if (model.length === 0) throw InvalidArgumentError.field('model', 'a model name is required');
    if (pool.candidates(model).length > 0) return;
    if (pool.knowsModel(model) || !pool.anyHealthy()) {
      const failures = pool.failures(model);
      // A backend may be starting (scaled up from zero, loading, warming): tell the caller when to look again.
      throw new UnavailableError(`no healthy backend serves model '${model}'${failures.length ? ` (${failures.join('; ')})` : ''}`, config.retryAfterMs);
    }
    throw new NotFoundError('model', model);
  }

  function retriable(err: unknown): err is UpstreamError {
    return err instanceof UpstreamError && err.code === Status.UNAVAILABLE;
  }

  /**
   * A unary call on a backend serving `model`, retried on others while UNAVAILABLE. These calls are short and
   * cheap, so they bypass admission (which bounds generations).
   */
  async function routeUnary<T>(model: string, signal: AbortSignal, call: (client: InferenceClient) => Promise<T>): Promise<T> {
    requireModel(model);
    const tried = new Set<string>();
    for (let attempt = 1; ; attempt++) {
      const free = pool.candidates(model).filter((b) => !tried.has(b));
      if (free.length === 0) throw new UnavailableError(`no healthy backend serves model '${model}'`);
      const backend = pool.pick(model, free, (b) => admission.inFlight(b));
      try {
        return await call(monitor.client(backend));
      } catch (err) {
        if (!retriable(err) || attempt >= config.maxAttempts || signal.aborted) throw err;
        log.warn({ backend, model, err: err.message }, 'backend unavailable; retrying on another');
        tried.add(backend);
        pool.markUnavailable(backend);
      }
    }
  }

  /** A generation on the least loaded backend, through admission, retried before its first token. */
  async function* route(request: GenerateRequest, context: CallContext): AsyncGenerator<GenerateResponse> {
    const { signal, metadata } = context;
    requireModel(request.model);
    if (request.priority < -MAX_PRIORITY || request.priority > MAX_PRIORITY)
      throw InvalidArgumentError.field('priority', `must be in [-${MAX_PRIORITY}, ${MAX_PRIORITY}], got ${request.priority}`);
    const forwarded = { ...request, requestId: request.requestId || randomUUID() };
    const deadline = callDeadline(metadata);
    const tried = new Set<string>();
    let queuedMs = 0;
    let expectedQueueMs = 0;
    for (let attempt = 1; ; attempt++) {
      const ticket = await admission.acquire({
        model: request.model,
        maxTokens: request.maxTokens ?? DEFAULT_MAX_TOKENS,
        caller: callerOf(context),
        priority: request.priority,
        deadline,
        candidates: () => pool.candidates(request.model).filter((b) => !tried.has(b)),
        pick: (free) => pool.pick(request.model, free, (b) => admission.inFlight(b)),
        signal,
      });
      queuedMs += ticket.queuedMs;
      expectedQueueMs += ticket.expectedWaitMs ?? 0;
      queueSpanAttributes(ticket);
      let streamed = false;
      let completed = false;
      try {
        for await (const response of monitor.client(ticket.backend).serverStream('generate', forwarded, { signal, deadline })) {
          streamed = true;
          if (response.event?.$case === 'complete') {
            completed = true;
            const timings = response.event.value.timings;
            if (timings) Object.assign(timings, { routerQueueMs: queuedMs, routerExpectedQueueMs: expectedQueueMs });
          }
          yield response;
        }
        return;
      } catch (err) {
        if (streamed || !retriable(err) || attempt >= config.maxAttempts || signal.aborted) throw err;
        log.warn({ backend: ticket.backend, requestId: forwarded.requestId, err: err.message }, 'backend unavailable before the first token; retrying');
        tried.add(ticket.backend);
        pool.markUnavailable(ticket.backend);
      } finally {
        ticket.release(completed);
      }
    }
  }

  const implementation: GenerationServiceImplementation<TerminatorContext> = {
    async *generate(request: GenerateRequest, context): AsyncGenerator<GenerateResponse> {
      const started = performance.now();
      const seconds = () => (performance.now() - started) / 1000;
      try {
        for await (const response of route(request, context)) {
          if (response.event?.$case === 'complete') {
            const { usage, finishReason } = response.event.value;
            const reason = (FinishReason[finishReason] ?? 'FINISH_REASON_UNSPECIFIED').replace('FINISH_REASON_', '').toLowerCase();
            metrics.generated(request.model, seconds(), usage?.promptTokens ?? 0, usage?.completionTokens ?? 0, reason);
          }
          yield response;
        }
      } catch (err) {
        metrics.failed(request.model, seconds(), err instanceof MoeflashError ? err.constructor.name : err instanceof Error ? err.name : 'Error');
        throw err;
      }
    },

    tokenize(request, { signal, metadata }) {
      return routeUnary(request.model, signal, (c) => c.unary('tokenize', request, { signal, deadline: callDeadline(metadata) }));
    },

    detokenize(request, { signal, metadata }) {
      return routeUnary(request.model, signal, (c) => c.unary('detokenize', request, { signal, deadline: callDeadline(metadata) }));
    },

    getModel(request, { signal, metadata }) {
      return routeUnary(request.model, signal, (c) => c.unary('getModel', request, { signal, deadline: callDeadline(metadata) }));
    },

    async listModels(_request, { signal, metadata }) {
      // Every healthy backend's list, merged by name: backends serving the same model describe it the same way.
      const healthy = pool.addresses.filter((b) => pool.isHealthy(b));
      if (healthy.length === 0) throw new UnavailableError('no healthy backend');
      const deadline = callDeadline(metadata);
      const lists = await Promise.allSettled(healthy.map((b) => monitor.client(b).unary('listModels', {}, { signal, deadline })));
      const byName = new Map<string, Model>();
      for (const list of lists) if (list.status === 'fulfilled') for (const m of list.value.models) if (!byName.has(m.name)) byName.set(m.name, m);
      if (byName.size === 0) {
        const failure = lists.find((l): l is PromiseRejectedResult => l.status === 'rejected');
        if (failure) throw failure.reason;
      }
      return { models: [...byName.values()].sort((a, b) => a.name.localeCompare(b.name)) };
    },
  };

  // The public port: a client's malformed bytes are its error (INVALID_ARGUMENT), not the router's (INTERNAL).
  service.server.add(undecodableAsInvalidArgument(GenerationServiceDefinition), implementation);
  monitor.start();
  void discovery.start();
  return {
    ...service,
    pool,
    admission,
    discovery,
    close: () => {
      discovery.close();
      monitor.close();
    },
  };
}
