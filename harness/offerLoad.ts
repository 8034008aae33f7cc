import { setTimeout as delay } from 'node:timers/promises';
import { Status } from 'nice-grpc';
import type { GenerateRequest } from '../gen/moeflash/v1/generation';
import { decodeStatusDetails } from '../services/common/StatusDetails';
import { UpstreamError } from '../services/common/UpstreamError';
import type { rawGenerationClient } from './grpcClients';

export type GenerationClient = ReturnType<typeof rawGenerationClient>['client'];

/** How one Generate call ended: its status, the time from sending it to its end, and the tokens received. */
export interface CallOutcome {
  code: Status;
  ms: number;
  tokens: number;
  /** A completed call's wait in the router queue, and the wait the router predicted for it (GenerationTimings). */
  queuedMs?: number;
  expectedQueueMs?: number;
  /** A refused call's RetryInfo. */
  retryDelayMs?: number;
}

/** One Generate call drained to its end, with a deadline sent on the wire; never throws for a gRPC status. */
export async function timedGenerate(client: GenerationClient, request: GenerateRequest, deadlineMs: number, headers?: Record<string, string>): Promise<CallOutcome> {
  const started = performance.now();
  let tokens = 0;
  try {
    let queuedMs: number | undefined;
    let expectedQueueMs: number | undefined;
    for await (const r of client.serverStream('generate', request, { deadline: Date.now() + deadlineMs, headers })) {
      if (r.event?.$case === 'chunk') tokens += r.event.value.tokenIds.length;
      if (r.event?.$case === 'complete' && r.event.value.timings) ({ routerQueueMs: queuedMs, routerExpectedQueueMs: expectedQueueMs } = r.event.value.timings);
    }
    return { code: Status.OK, ms: performance.now() - started, tokens, queuedMs, expectedQueueMs };
  } catch (err) {
    if (!(err instanceof UpstreamError)) throw err;
    const retryDelayMs = err.statusDetails ? decodeStatusDetails(err.statusDetails).retryDelayMs : undefined;
    return { code: err.code, ms: performance.now() - started, tokens, retryDelayMs };
  }
}

/** `count` calls one after another: the unloaded figure. */
export async function sequentialCalls(
  client: GenerationClient,
  request: (i: number) => GenerateRequest,
  count: number,
  deadlineMs: number,
  headers?: Record<string, string>,
): Promise<CallOutcome[]> {
  const outcomes: CallOutcome[] = [];
  for (let i = 0; i < count; i++) outcomes.push(await timedGenerate(client, request(i), deadlineMs, headers));
  return outcomes;
}

/**
 * `concurrency` callers, each starting its next call when the last one ends, for `durationMs`: the stack at its
 * capacity when `concurrency` is the admission limit. Resolves with every outcome and the seconds it took.
 */
export async function closedLoop(
  client: GenerationClient,
  request: (i: number) => GenerateRequest,
  concurrency: number,
  durationMs: number,
  deadlineMs: number,
  headers?: Record<string, string>,
): Promise<{ outcomes: CallOutcome[]; seconds: number }> {
  const outcomes: CallOutcome[] = [];
  const started = performance.now();
  const end = started + durationMs;
  let n = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) outcomes.push(await timedGenerate(client, request(n++), deadlineMs, headers));
    }),
  );
  return { outcomes, seconds: (performance.now() - started) / 1000 };
}

/**
 * An open loop: calls start at `perSecond`, evenly spaced, for `durationMs` whatever happens to the earlier ones
 * (a late timer starts the overdue calls at once), so the offered load does not fall when the stack slows down.
 * Bounded: exactly round(perSecond * durationMs / 1000) calls; resolves when the last one has ended.
 */
export async function openLoop(
  client: GenerationClient,
  request: (i: number) => GenerateRequest,
  perSecond: number,
  durationMs: number,
  deadlineMs: number,
  headers?: Record<string, string>,
): Promise<CallOutcome[]> {
  const count = Math.round((perSecond * durationMs) / 1000);
  const started = performance.now();
  const calls: Promise<CallOutcome>[] = [];
  for (let i = 0; i < count; i++) {
    const wait = started + (i * 1000) / perSecond - performance.now();
    if (wait > 1) await delay(wait);
    calls.push(timedGenerate(client, request(i), deadlineMs, headers));
  }
  return Promise.all(calls);
}
