import { setTimeout as delay } from 'node:timers/promises';
import { Status } from 'nice-grpc';
import type { GenerateRequest } from '../gen/moeflash/v1/generation';
import { latencySummary, percentile, type LatencySummary } from '../harness/latencySummary';
import { timedGenerate, type CallOutcome, type GenerationClient } from '../harness/offerLoad';

export interface BurstReport {
  calls: number;
  /** Status name -> calls; all OK is the goal. */
  codes: Record<string, number>;
  seconds: number;
  latency: LatencySummary;
  queueWait: LatencySummary;
  /** Over the calls that queued: real wait / predicted wait (the estimate RetryInfo carries), p50 and p90. */
  waitOverPredicted: { p50: number; p90: number };
}

/** `calls` Generate calls sent at once, each with `deadlineMs`; every outcome counted. */
export async function runBurst(
  client: GenerationClient,
  request: (i: number) => GenerateRequest,
  calls: number,
  deadlineMs: number,
  headers?: Record<string, string>,
): Promise<BurstReport> {
  const started = performance.now();
  const outcomes = await Promise.all(Array.from({ length: calls }, (_, i) => timedGenerate(client, request(i), deadlineMs, headers)));
  const seconds = (performance.now() - started) / 1000;
  const codes: Record<string, number> = {};
  for (const o of outcomes) codes[Status[o.code]] = (codes[Status[o.code]] ?? 0) + 1;
  const ok = outcomes.filter((o) => o.code === Status.OK);
  const ratios = ok.flatMap((o) => (o.expectedQueueMs && o.queuedMs !== undefined ? [o.queuedMs / o.expectedQueueMs] : []));
  return {
    calls,
    codes,
    seconds,
    latency: latencySummary(ok.map((o) => o.ms)),
    queueWait: latencySummary(ok.map((o) => o.queuedMs ?? 0)),
    waitOverPredicted: { p50: percentile(ratios, 50), p90: percentile(ratios, 90) },
  };
}

/** The most attempts of a call, as in deploy/client/service-config.json. */
const MAX_ATTEMPTS = 5;

/**
 * A call as a client with the published service config makes it: a RESOURCE_EXHAUSTED attempt is tried again after
 * its RetryInfo, up to MAX_ATTEMPTS; `ms` spans all attempts, `attempts` counts them.
 */
async function callWithRetry(client: GenerationClient, request: GenerateRequest, deadlineMs: number, headers?: Record<string, string>): Promise<CallOutcome & { attempts: number }> {
  const started = performance.now();
  for (let attempt = 1; ; attempt++) {
    const outcome = await timedGenerate(client, request, deadlineMs, headers);
    if (outcome.code !== Status.RESOURCE_EXHAUSTED || attempt === MAX_ATTEMPTS) return { ...outcome, ms: performance.now() - started, attempts: attempt };
    await delay(outcome.retryDelayMs ?? 1000);
  }
}

export interface FairnessReport {
  /** Per caller: calls it keeps in flight, and what it got (failures: calls that failed after every retry). */
  callers: Record<string, { inFlight: number; callsPerSecond: number; share: number; latency: LatencySummary; failures: number; retries: number }>;
}

/**
 * Two callers (API keys) in closed loops at once, one keeping `ratio` times as many calls in flight as the other,
 * for `durationMs`, each retrying refused calls after their RetryInfo: with fair queueing both get about half the
 * calls served while both have calls queued; served first come first served, each would get a share in proportion
 * to its calls in flight.
 */
export async function runFairness(
  client: GenerationClient,
  request: (i: number) => GenerateRequest,
  o: { keys: { large: string; small: string }; smallInFlight: number; ratio: number; durationMs: number; deadlineMs: number },
): Promise<FairnessReport> {
  const inFlight = { large: o.smallInFlight * o.ratio, small: o.smallInFlight };
  const names = ['large', 'small'] as const;
  const started = performance.now();
  const end = started + o.durationMs;
  let n = 0;
  const runs = await Promise.all(
    names.map(async (name) => {
      const outcomes: (CallOutcome & { attempts: number })[] = [];
      const headers = { authorization: `Bearer ${o.keys[name]}` };
      await Promise.all(
        Array.from({ length: inFlight[name] }, async () => {
          while (performance.now() < end) outcomes.push(await callWithRetry(client, request(n++), o.deadlineMs, headers));
        }),
      );
      return { outcomes, seconds: (performance.now() - started) / 1000 };
    }),
  );
  const served = runs.map((r) => r.outcomes.filter((x) => x.code === Status.OK));
  const total = served[0].length + served[1].length;
  return {
    callers: Object.fromEntries(
      names.map((name, i) => [
        name,
        {
          inFlight: inFlight[name],
          callsPerSecond: served[i].length / runs[i].seconds,
          share: served[i].length / total,
          latency: latencySummary(served[i].map((x) => x.ms)),
          failures: runs[i].outcomes.length - served[i].length,
          retries: runs[i].outcomes.reduce((sum, x) => sum + x.attempts - 1, 0),
        },
      ]),
    ),
  };
}
