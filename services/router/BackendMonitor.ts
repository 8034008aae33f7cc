import { setTimeout as delay } from 'node:timers/promises';
import { Channel, credentials, type ChannelCredentials, type ChannelOptions } from '@grpc/grpc-js';
import { HealthDefinition } from 'nice-grpc-server-health';
import { HealthCheckResponse_ServingStatus } from 'nice-grpc-server-health/lib/proto/grpc/health/v1/health';
import type { Logger } from 'pino';
import { InferenceServiceDefinition, ModelState } from '../../gen/moeflash/v1/inference';
import { DefinitionClient } from '../common/DefinitionClient';
import type { BackendPool, ModelLoadInfo } from './BackendPool';

export interface BackendMonitorOptions {
  log: Logger;
  /** How often each healthy backend's GetLoad is polled. */
  loadPollMs: number;
  /** Extra channel options for the backend channels. */
  channelOptions?: ChannelOptions;
  /** TLS to the backends (services/common/tls backendCredentials); plaintext by default. */
  credentials?: ChannelCredentials;
}

/** The readiness the router watches on each backend. */
const INFERENCE_SERVICE = 'moeflash.v1.InferenceService';

/**
 * Backend channels: quick reconnects so a restarted backend is back in about a second, keepalive to notice a
 * backend that vanished without closing its connections, and no transparent retries: the router decides itself
 * what may be retried (UNAVAILABLE before the first token).
 */
const CHANNEL_OPTIONS: ChannelOptions = {
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1_000,
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.enable_retries': 0,
};

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2_000;

const MODEL_STATES: Partial<Record<ModelState, ModelLoadInfo['state']>> = {
  [ModelState.MODEL_STATE_LOADING]: 'loading',
  [ModelState.MODEL_STATE_READY]: 'ready',
  [ModelState.MODEL_STATE_FAILED]: 'failed',
};

interface Connection {
  channel: Channel;
  health: DefinitionClient<typeof HealthDefinition>;
  inference: DefinitionClient<typeof InferenceServiceDefinition>;
  restart?: AbortController;
  /** Aborted when the backend leaves the set (discovery): its watch ends. */
  removed: AbortController;
  polling: boolean;
}

/**
 * Feeds a BackendPool from the network: one grpc.health.v1 Watch per backend (waiting for the connection, so a
 * backend that comes back is noticed as soon as it accepts connections) and GetLoad when a backend turns
 * SERVING and every loadPollMs after (from every backend that answers, serving or not). Owns the backend channels and their InferenceService clients.
 */
export class BackendMonitor {
  private readonly connections = new Map<string, Connection>();
  private readonly closed = new AbortController();
  private pollTimer?: NodeJS.Timeout;
  private started = false;

  constructor(
    private readonly pool: BackendPool,
    private readonly options: BackendMonitorOptions,
  ) {
    for (const address of pool.addresses) this.connect(address);
    pool.on('suspect', (address) => this.connections.get(address)?.restart?.abort());
  }

  /**
   * A backend that joined the set: a channel, and once started its health watch. `channelOptions` are added to
   * this backend's channel (a discovered address keeps the TLS name of the DNS name it came from).
   */
  add(address: string, channelOptions: ChannelOptions = {}): void {
    if (this.connections.has(address)) return;
    this.pool.add(address);
    this.connect(address, channelOptions);
    if (this.started) void this.watch(address);
  }

  /**
   * A backend that left the set: out of the pool at once; its channel closes once the calls on it have ended
   * (grpc-js lets calls in progress finish on a closed channel) and its watch stops.
   */
  remove(address: string): void {
    const connection = this.connections.get(address);
    if (!connection) return;
    this.connections.delete(address);
    this.pool.remove(address);
    connection.removed.abort();
    connection.channel.close();
  }

  private connect(address: string, channelOptions: ChannelOptions = {}): void {
    const channel = new Channel(address, this.options.credentials ?? credentials.createInsecure(), { ...CHANNEL_OPTIONS, ...this.options.channelOptions, ...channelOptions });
    this.connections.set(address, {
      channel,
      health: new DefinitionClient(HealthDefinition, channel, address),
      inference: new DefinitionClient(InferenceServiceDefinition, channel, address),
      removed: new AbortController(),
      polling: false,
    });
  }

  /** The InferenceService client of a backend. */
  client(address: string): DefinitionClient<typeof InferenceServiceDefinition> {
    const connection = this.connections.get(address);
    if (!connection) throw new Error(`unknown backend ${address}`);
    return connection.inference;
  }

  start(): void {
    this.started = true;
    for (const address of this.connections.keys()) void this.watch(address);
    this.pollTimer = setInterval(() => {
      // unhealthy ones too: a backend up but not serving reports why (a failed model) for the router to pass on
      for (const address of this.connections.keys()) void this.refreshLoad(address);
    }, this.options.loadPollMs);
    this.pollTimer.unref();
  }

  close(): void {
    this.closed.abort();
    clearInterval(this.pollTimer);
    for (const c of this.connections.values()) c.channel.close();
  }

  private async watch(address: string): Promise<void> {
    const connection = this.connections.get(address)!;
    const { log } = this.options;
    const ended = AbortSignal.any([this.closed.signal, connection.removed.signal]);
    let backoffMs = MIN_BACKOFF_MS;
    while (!ended.aborted) {
      const restart = new AbortController();
      connection.restart = restart;
      const signal = AbortSignal.any([ended, restart.signal]);
      try {
        const stream = connection.health.serverStream('watch', { service: INFERENCE_SERVICE }, { signal, waitForReady: true });
        for await (const { status } of stream) {
          backoffMs = MIN_BACKOFF_MS;
          const serving = status === HealthCheckResponse_ServingStatus.SERVING;
          // Know the backend's models before routing to it; a backend that is not serving says why (a model that
          // failed, or is still loading), which the router passes on to callers.
          await this.refreshLoad(address);
          this.pool.setHealth(address, serving);
          log.info({ backend: address, serving }, 'backend health');
        }
      } catch (err) {
        if (!signal.aborted) log.debug({ backend: address, err: (err as Error).message }, 'health watch ended');
      }
      if (ended.aborted) return;
      this.pool.setHealth(address, false);
      if (restart.signal.aborted) continue;
      // The watch waits for a connection by itself; this only paces a backend that answers but fails the watch.
      await delay(backoffMs, undefined, { signal: ended }).catch(() => undefined);
      backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
    }
  }

  private async refreshLoad(address: string): Promise<void> {
    const connection = this.connections.get(address);
    if (!connection || connection.polling) return;
    connection.polling = true;
    try {
      const { models } = await connection.inference.unary('getLoad', {}, { signal: this.closed.signal, deadline: Date.now() + 5_000 });
      const loads = new Map<string, ModelLoadInfo>();
      for (const m of models) {
        const state = MODEL_STATES[m.state];
        if (state)
          loads.set(m.model, {
            state,
            activeSequences: m.activeSequences,
            queuedRequests: m.queuedRequests,
            capacity: m.capacity,
            error: m.error || undefined,
            expertResidency: m.expertResidency >= 0 ? m.expertResidency : undefined,
          });
      }
      this.pool.setLoad(address, loads);
    } catch (err) {
      if (!this.closed.signal.aborted) this.options.log.debug({ backend: address, err: (err as Error).message }, 'GetLoad failed');
    } finally {
      connection.polling = false;
    }
  }
}
