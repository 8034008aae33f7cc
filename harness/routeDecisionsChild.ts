/**
 * A child process that runs the expert cache on a route override (the synthetic trace bench:cache's realistic regime
 * uses) twice on whatever backend its addon was built for (MOEFLASH_BACKEND): slots resolved on the device, then on
 * the host, and prints each run's path and per-layer decisions (hits, misses, evictions) as one JSON object on
 * stdout. The two must agree: the device path reads the override's ids from its own tensor. Used by the Vulkan
 * (lavapipe) test.
 * Usage: node dist/harness/routeDecisionsChild.js '{"model": ..., "slots": 4, "seed": 5, "tokens": 24}'
 */
import { Engine } from '../services/engine/Engine';
import { collect } from './collect';

export interface RouteDecisionsRequest {
  model: string;
  slots: number;
  seed: number;
  tokens: number;
}

export interface RouteDecisions {
  path: string;
  /** Per cached layer: [hits, misses, evictions]. */
  layers: [number, number, number][];
}

async function decisions(request: RouteDecisionsRequest, resolve: 'device' | 'host'): Promise<RouteDecisions> {
  const engine = await Engine.load({
    path: request.model, nGpuLayers: 99, contextSize: 256, threads: 2, parallel: 1, warmup: false,
    expertCache: { slots: request.slots, resolve, syntheticRouting: { seed: request.seed } },
  });
  try {
    await collect(engine.generate({ promptTokens: [1], maxTokens: request.tokens, sampling: { temperature: 0 } }));
    const layers = engine.expertCacheStats()!.layers.map((l) => [l.hits, l.misses, l.evictions] as [number, number, number]);
    return { path: engine.info.expertCache!.path!, layers };
  } finally {
    await engine.close();
  }
}

async function main(): Promise<void> {
  const request = JSON.parse(process.argv[2]) as RouteDecisionsRequest;
  const device = await decisions(request, 'device');
  const host = await decisions(request, 'host');
  console.log(JSON.stringify({ device, host }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
