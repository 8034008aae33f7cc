import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Engine } from '../services/engine/Engine';
import { generateRequest, generationClient } from './grpcClients';
import { startStack } from './startStack';
import { testModel } from './testModels';

export interface CancelLeakOptions {
  /** Cancels measured (after the warm-up). */
  cancels: number;
  warmup: number;
  /** Concurrent streams (the engine decodes 4 sequences at once). */
  concurrency: number;
  /** Each stream is cancelled after this many chunks. */
  cancelAfterChunks: number;
  /** Bound on waiting for the engine to report no active or queued sequence. */
  settleTimeoutMs: number;
  /**
   * Opens a new client channel after this many calls. Node's HTTP/2 (nghttp2) answers a peer that resets streams
   * faster than its rapid-reset limit (a burst of 1000, then 33 a second) with GOAWAY INTERNAL_ERROR, so one
   * connection cannot carry unbounded cancels at full speed. Default: one channel for the whole run.
   */
  callsPerChannel?: number;
  /**
   * Paces call starts to at most this many a second (a rate limit for long runs, not synchronisation). Every
   * cancel is an RST_STREAM on the router's one connection to the backend too, and nghttp2's rapid-reset limit
   * (burst 1000, then 33/s) applies there: see docs/RELIABILITY.md. Default: unpaced.
   */
  maxCallsPerSecond?: number;
}

export interface CancelLeakResult {
  cancels: number;
  warmup: number;
  concurrency: number;
  /** Streams that ended on their own before the cancel point (the model emitted EOS early). */
  endedEarly: number;
  activeSequencesAfter: number;
  queuedRequestsAfter: number;
  totalRequests: number;
  rssBaselineBytes: number;
  rssAfterBytes: number;
  rssGrowthPercent: number;
  heapUsedAfterBytes: number;
  elapsedMs: number;
}

/** The collector, reachable without --expose-gc on the command line. */
function gcFunction(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

async function settledRss(gc: () => void): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return process.memoryUsage().rss;
}

/**
 * Mid-stream cancels through the router against the real engine on the generated tiny model (parallel 4,
 * threads 2): every stream is aborted by the client after a few chunks. Returns the engine's sequence counts once
 * it has settled and RSS growth from after the warm-up to the end.
 */
export async function runCancelLeak(options: CancelLeakOptions): Promise<CancelLeakResult> {
  const gc = gcFunction();
  const engine = await Engine.load({ path: await testModel('tiny'), threads: 2, contextSize: 4096, parallel: 4 });
  const stack = await startStack({ tiny: engine }, { maxInFlightPerBackend: 8, maxQueued: 64 });
  let { client, channel } = generationClient(stack.router.address);
  let callsOnChannel = 0;
  const retired: { close(): void }[] = [];
  let endedEarly = 0;
  let n = 0;

  const paceStart = Date.now();
  async function cancelOne(i: number): Promise<void> {
    if (options.maxCallsPerSecond !== undefined) {
      const due = paceStart + (i * 1000) / options.maxCallsPerSecond - Date.now();
      if (due > 0) await new Promise<void>((resolve) => setTimeout(resolve, due));
    }
    if (options.callsPerChannel !== undefined && ++callsOnChannel > options.callsPerChannel) {
      retired.push(channel); // closed at the end: calls on it may not have started yet
      ({ client, channel } = generationClient(stack.router.address));
      callsOnChannel = 1;
    }
    const controller = new AbortController();
    let chunks = 0;
    try {
      const stream = client.generate(
        generateRequest({ model: 'tiny', prompt: `request ${i}: tell me a long story`, maxTokens: 512, sampling: { seed: i } }),
        { signal: controller.signal },
      );
      for await (const r of stream) if (r.event?.$case === 'chunk' && ++chunks === options.cancelAfterChunks) controller.abort();
      endedEarly++;
    } catch (err) {
      if (!(err instanceof Error && err.name === 'AbortError')) throw err;
    }
  }

  async function runPhase(count: number): Promise<void> {
    const end = n + count;
    const workers = Array.from({ length: options.concurrency }, async () => {
      while (n < end) await cancelOne(n++);
    });
    await Promise.all(workers);
  }

  async function settle(): Promise<void> {
    const deadline = Date.now() + options.settleTimeoutMs;
    while (Date.now() < deadline) {
      const s = engine.stats();
      if (s.activeSequences === 0 && s.queuedRequests === 0) return;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  const started = Date.now();
  try {
    await runPhase(options.warmup);
    await settle();
    const rssBaselineBytes = await settledRss(gc);
    await runPhase(options.cancels);
    await settle();
    const rssAfterBytes = await settledRss(gc);
    const s = engine.stats();
    return {
      cancels: options.cancels,
      warmup: options.warmup,
      concurrency: options.concurrency,
      endedEarly,
      activeSequencesAfter: s.activeSequences,
      queuedRequestsAfter: s.queuedRequests,
      totalRequests: s.totalRequests,
      rssBaselineBytes,
      rssAfterBytes,
      rssGrowthPercent: ((rssAfterBytes - rssBaselineBytes) / rssBaselineBytes) * 100,
      heapUsedAfterBytes: process.memoryUsage().heapUsed,
      elapsedMs: Date.now() - started,
    };
  } finally {
    for (const c of [...retired, channel]) c.close();
    await stack.stop();
    await engine.close();
  }
}
