import { once } from 'node:events';
import pino from 'pino';
import type { RouterConfig } from '../services/common/parseConfig';
import type { ServiceServer } from '../services/common/ServiceServer';
import type { EngineLike } from '../services/engine/types';
import { createInferenceServer } from '../services/inference/createInferenceServer';
import { EngineHost } from '../services/inference/EngineHost';
import { createRouterServer, type RouterServer } from '../services/router/createRouterServer';
import { loadDescriptorSet } from '../services/common/loadDescriptorSet';

/** Quiet unless MOEFLASH_TEST_LOG_LEVEL asks otherwise. */
export const testLog = pino({ level: process.env.MOEFLASH_TEST_LOG_LEVEL ?? 'silent' });

export interface InferenceInstance {
  server: ServiceServer;
  host: EngineHost;
  port: number;
  address: string;
}

/** An inference server on 127.0.0.1 (or another loopback address; a free port unless given) hosting `engines`. */
export async function startInference(engines: Record<string, EngineLike>, port = 0, ip = '127.0.0.1'): Promise<InferenceInstance> {
  const host = new EngineHost();
  for (const [name, engine] of Object.entries(engines)) host.setReady(name, engine);
  const server = createInferenceServer({ host, log: testLog });
  const bound = await server.listen(`${ip}:${port}`);
  return { server, host, port: bound, address: `${ip}:${bound}` };
}

export const TEST_ROUTER_CONFIG: RouterConfig = {
  backends: [],
  maxInFlightPerBackend: 64,
  maxQueued: 64,
  maxQueueWaitMs: 30_000,
  queueBurstMs: 250,
  resolveMs: 5_000,
  retryAfterMs: 250,
  maxAttempts: 3,
  loadPollMs: 200,
};

export interface RouterInstance {
  router: RouterServer;
  port: number;
  address: string;
  /** Shuts the router down (grace 0) and closes its backend channels. */
  stop(): Promise<void>;
}

/** A router on a free 127.0.0.1 port in front of `backends`, with reflection. */
export async function startRouter(backends: string[], config: Partial<RouterConfig> = {}): Promise<RouterInstance> {
  const router = createRouterServer({
    log: testLog,
    config: { ...TEST_ROUTER_CONFIG, ...config, backends },
    descriptorSet: loadDescriptorSet(),
  });
  const port = await router.listen('127.0.0.1:0');
  return {
    router,
    port,
    address: `127.0.0.1:${port}`,
    async stop() {
      await router.shutdown(0);
      router.close();
    },
  };
}

/** Resolves when `predicate` holds, re-checked on each of `emitter`'s `event`s (no polling, no sleeps). */
export async function waitFor(emitter: NodeJS.EventEmitter, event: string, predicate: () => boolean): Promise<void> {
  while (!predicate()) await once(emitter, event);
}

/** Resolves once the router routes `model` to `count` backends (default: at least one). */
export function routerReady(router: RouterServer, model: string, count = 1): Promise<void> {
  return waitFor(router.pool, 'change', () => router.pool.candidates(model).length >= count);
}

/**
 * An inference server hosting `engines` and a router in front of it, ready to route every model. Any EngineLike
 * works (FakeEngine for transport tests, the real Engine for end-to-end ones).
 */
export async function startStack(
  engines: Record<string, EngineLike>,
  config: Partial<RouterConfig> = {},
): Promise<{ inference: InferenceInstance; router: RouterInstance; stop(): Promise<void> }> {
  const inference = await startInference(engines);
  const router = await startRouter([inference.address], config);
  for (const model of Object.keys(engines)) await routerReady(router.router, model);
  return {
    inference,
    router,
    async stop() {
      await router.stop();
      await inference.server.shutdown(0);
    },
  };
}
