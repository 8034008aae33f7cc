import { Status } from 'nice-grpc';
import type { GenerateRequest } from '../gen/moeflash/v1/generation';
import { latencySummary, type LatencySummary } from './latencySummary';
import { closedLoop, openLoop, sequentialCalls, type CallOutcome, type GenerationClient } from './offerLoad';
import { processCpuSeconds } from './processCpuSeconds';
import { processMemory, sampleRss } from './processMemory';

export interface OverloadOptions {
  client: GenerationClient;
  /** The i-th request of a phase; every request should cost the same. */
  request(i: number): GenerateRequest;
  /** Calls made one at a time for the unloaded figure (after `warmupCalls` not counted). */
  unloadedCalls: number;
  warmupCalls: number;
  /** Callers of the capacity phase: the router's admission limit (in flight over all backends). */
  concurrency: number;
  capacityMs: number;
  /** The overload phase offers this multiple of the measured capacity, for overloadMs. */
  factor: number;
  overloadMs: number;
  deadlineMs: number;
  /** Processes whose memory is reported, by name. */
  processes: Record<string, number>;
  /** Request headers of every call (an API key). */
  headers?: Record<string, string>;
}

export interface ProcessFigures {
  /** RSS before the overload phase (bytes). */
  before: number;
  /** Highest RSS sampled during it. */
  peak: number;
  /** RSS once every call of it has ended. */
  after: number;
  /** CPU used during the overload phase, in % of one core. */
  cpuPercent: number;
}

export interface OverloadReport {
  unloaded: LatencySummary;
  atCapacity: { latency: LatencySummary; callsPerSecond: number; failures: Record<string, number> };
  overload: {
    offeredPerSecond: number;
    offered: number;
    admitted: LatencySummary;
    admittedPerSecond: number;
    /** RESOURCE_EXHAUSTED calls and how long the refusal took. */
    rejected: LatencySummary;
    /** The admitted calls' waits in the router queue, and the refused calls' RetryInfo. */
    queueWait: LatencySummary;
    retryDelay: LatencySummary;
    /** Any other status, by name. */
    failures: Record<string, number>;
  };
  /** Admitted p50 and p99 under overload over the unloaded ones (1.1 = 10% slower). */
  p50Ratio: number;
  p99Ratio: number;
  processes: Record<string, ProcessFigures>;
}

function failures(outcomes: readonly CallOutcome[], allowed: readonly Status[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of outcomes) if (!allowed.includes(o.code)) out[Status[o.code]] = (out[Status[o.code]] ?? 0) + 1;
  return out;
}

const latencies = (outcomes: readonly CallOutcome[], code: Status) => outcomes.filter((o) => o.code === code).map((o) => o.ms);

/**
 * The load test of issue 7: the unloaded latency (calls one at a time), the capacity (callers at the admission
 * limit, closed loop), then `factor` x that capacity offered open-loop. Reports the admitted calls' latency
 * against the unloaded figure, how many calls were refused and how fast, and the processes' memory and CPU.
 */
export async function runOverload(o: OverloadOptions): Promise<OverloadReport> {
  await sequentialCalls(o.client, o.request, o.warmupCalls, o.deadlineMs, o.headers);
  const unloaded = await sequentialCalls(o.client, o.request, o.unloadedCalls, o.deadlineMs, o.headers);
  const capacity = await closedLoop(o.client, o.request, o.concurrency, o.capacityMs, o.deadlineMs, o.headers);
  const callsPerSecond = latencies(capacity.outcomes, Status.OK).length / capacity.seconds;

  const names = Object.keys(o.processes);
  const pids = names.map((n) => o.processes[n]);
  const before = pids.map((pid) => processMemory(pid).rss);
  const cpuBefore = pids.map(processCpuSeconds);
  const sampler = sampleRss(pids);
  const offeredPerSecond = callsPerSecond * o.factor;
  const started = performance.now();
  const overload = await openLoop(o.client, o.request, offeredPerSecond, o.overloadMs, o.deadlineMs, o.headers);
  const seconds = (performance.now() - started) / 1000;
  const peaks = sampler.stop();
  const after = pids.map((pid) => processMemory(pid).rss);
  const cpuPercent = pids.map((pid, i) => ((processCpuSeconds(pid) - cpuBefore[i]) / seconds) * 100);

  const unloadedLatency = latencySummary(latencies(unloaded, Status.OK));
  const admitted = latencySummary(latencies(overload, Status.OK));
  return {
    unloaded: unloadedLatency,
    atCapacity: { latency: latencySummary(latencies(capacity.outcomes, Status.OK)), callsPerSecond, failures: failures(capacity.outcomes, [Status.OK]) },
    overload: {
      offeredPerSecond,
      offered: overload.length,
      admitted,
      admittedPerSecond: admitted.count / seconds,
      rejected: latencySummary(latencies(overload, Status.RESOURCE_EXHAUSTED)),
      queueWait: latencySummary(overload.flatMap((o) => (o.code === Status.OK && o.queuedMs !== undefined ? [o.queuedMs] : []))),
      retryDelay: latencySummary(overload.flatMap((o) => (o.retryDelayMs !== undefined ? [o.retryDelayMs] : []))),
      failures: failures(overload, [Status.OK, Status.RESOURCE_EXHAUSTED]),
    },
    p50Ratio: admitted.p50 / unloadedLatency.p50,
    p99Ratio: admitted.p99 / unloadedLatency.p99,
    processes: Object.fromEntries(names.map((n, i) => [n, { before: before[i], peak: peaks[i], after: after[i], cpuPercent: cpuPercent[i] }])),
  };
}
