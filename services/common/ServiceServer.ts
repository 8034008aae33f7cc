import { createServer, type Server } from 'nice-grpc';
import { HealthDefinition, HealthServiceImpl } from 'nice-grpc-server-health';
import { ServerReflection, ServerReflectionService } from 'nice-grpc-server-reflection';

import { ServerReflectionV1alphaService } from './reflectionV1alpha';
import type { ChannelOptions, ServerCredentials } from '@grpc/grpc-js';
import type { ServerMiddleware } from 'nice-grpc-common';
import type { Logger } from 'pino';
import { deadlineInterceptor } from './deadlineInterceptor';
import { errorMiddleware } from './errorMiddleware';
import { ServerTerminator, type TerminatorContext } from './ServerTerminator';
import { ServiceHealth } from './ServiceHealth';

export interface ServiceServerOptions {
  log: Logger;
  /** Fully qualified gRPC services this process serves: their health is reported and reflection lists them. */
  serviceNames: readonly string[];
  /** FileDescriptorSet (gen/descriptor.binpb) to serve through grpc.reflection.v1 and v1alpha; none: no reflection. */
  descriptorSet?: Uint8Array;
  /** Extra grpc-js server options, over the keepalive defaults. */
  grpcOptions?: ChannelOptions;
  /** After the grace period, how long aborted calls get to send their UNAVAILABLE before sockets are cut. */
  forceAfterMs?: number;
  /** Runs before every handler, inside the error mapping (the router's bearerAuthMiddleware). */
  authenticate?: ServerMiddleware;
}

/**
 * A gRPC server with the conventions every moeflash process shares: typed errors mapped to statuses, a
 * terminator for shutdown, grpc.health.v1, optional reflection, keepalive tolerant of long streams and the call
 * deadline exposed to handlers.
 */
export interface ServiceServer {
  /** Add the process's services here, before listen(). */
  readonly server: Server<TerminatorContext>;
  readonly health: ServiceHealth;
  readonly terminator: ServerTerminator;
  /** Binds `host:port` (port 0: any free port) and returns the port; plaintext unless `credentials` say TLS. */
  listen(address: string, credentials?: ServerCredentials): Promise<number>;
  /**
   * Binds a second, plaintext port serving grpc.health.v1 only (the same health state, no authentication), for
   * probes while the main port requires TLS; closed by shutdown(). Returns the port.
   */
  listenHealth(address: string): Promise<number>;
  /**
   * Graceful shutdown: health NOT_SERVING, no new calls or connections, health watches ended, calls in flight
   * given `graceMs` to finish; the rest are aborted and end with UNAVAILABLE.
   */
  shutdown(graceMs: number): Promise<void>;
}

/**
 * Server keepalive. Clients (and proxies) keep long generation streams alive with pings every 10-30 s, also
 * between calls. C-core and grpc-go servers answer pings more frequent than their permitted interval (5 min by
 * default) with GOAWAY "too_many_pings"; grpc-js enforces no ping policy today, but these are the options it and
 * gRPC's other servers read, so the tolerance is stated rather than inherited. The server's own pings find dead
 * peers of idle connections within 40 s.
 */
const KEEPALIVE_OPTIONS: ChannelOptions = {
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  'grpc.http2.min_time_between_pings_ms': 5_000,
  'grpc.http2.max_ping_strikes': 0,
};

/**
 * Largest message a server accepts or sends (grpc-js's receive default, stated so that it is a decision, and a
 * matching send limit). A bigger request ends with RESOURCE_EXHAUSTED before any handler runs; prompts that fit
 * are bounded again by the model's context.
 */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

const MESSAGE_SIZE_OPTIONS: ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
};

export function ServiceServer(options: ServiceServerOptions): ServiceServer {
  const { log } = options;
  const terminator = ServerTerminator();
  const health = ServiceHealth(options.serviceNames);
  const mapped = createServer({ ...KEEPALIVE_OPTIONS, ...MESSAGE_SIZE_OPTIONS, ...options.grpcOptions, interceptors: [deadlineInterceptor] })
    .use(errorMiddleware(log));
  const server = (options.authenticate ? mapped.use(options.authenticate) : mapped).use(terminator.middleware);
  server.add(HealthDefinition, HealthServiceImpl(health.state));
  if (options.descriptorSet) {
    const reflection = ServerReflection(options.descriptorSet, options.serviceNames);
    server.add(ServerReflectionService, reflection);
    server.add(ServerReflectionV1alphaService, reflection);
  }
  let healthOnly: Server | undefined;
  let shuttingDown: Promise<void> | undefined;

  async function shutdown(graceMs: number): Promise<void> {
    health.setShuttingDown();
    // Let health watchers receive NOT_SERVING before their streams are ended.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const drained = server.shutdown();
    terminator.terminate();
    if (!(await within(drained, graceMs))) {
      log.warn({ openCalls: terminator.openCalls, graceMs }, 'grace period over; ending the calls still open with UNAVAILABLE');
      terminator.abortAll();
      if (!(await within(drained, options.forceAfterMs ?? 2_000))) server.forceShutdown();
    }
    await drained.catch(() => undefined);
    // Probes saw NOT_SERVING during the drain; their Watch streams end now.
    healthOnly?.forceShutdown();
  }

  return {
    server,
    health,
    terminator,
    async listen(address, credentials) {
      const port = await server.listen(address, credentials);
      log.info({ address: address.replace(/:\d+$/, `:${port}`), tls: credentials?._isSecure() ?? false }, 'listening');
      return port;
    },
    async listenHealth(address) {
      if (!healthOnly) {
        healthOnly = createServer(KEEPALIVE_OPTIONS).use(errorMiddleware(log));
        healthOnly.add(HealthDefinition, HealthServiceImpl(health.state));
      }
      const port = await healthOnly.listen(address);
      log.info({ healthAddress: address.replace(/:\d+$/, `:${port}`) }, 'health listening');
      return port;
    },
    shutdown(graceMs) {
      shuttingDown ??= shutdown(graceMs);
      return shuttingDown;
    },
  };
}

/** Whether `promise` settles within `ms`; the timer never keeps the process alive. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
    timer.unref();
  });
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
