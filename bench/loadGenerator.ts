/**
 * npm run bench:load — the load tests of issues 7 and 20 on the real engine, loopback only, bounded (stops by
 * itself): an inference process (generated tiny model by default) and a router process, then for each router
 * admission setting:
 *   overload  — the unloaded latency (calls one at a time), the capacity (closed loop with as many callers as the
 *               engine decodes at once), and `LOAD_FACTOR` x that capacity offered open-loop for LOAD_SECONDS: the
 *               admitted calls' p50/p99 against the at-capacity ones, refusals and how fast, their RetryInfo, RSS
 *   burst     — LOAD_BURST calls (LOAD_BURST_TOKENS tokens each, 60 s deadlines) sent at once: how many succeed,
 *               their queue waits, and the real wait over the wait the router predicted (what RetryInfo carries)
 *   fairness  — two API keys in closed loops, one keeping 10x as many calls in flight as the other: each one's
 *               share of the calls served
 * Prints a table and writes bench/results/load.json.
 *
 * Admission settings compared:
 *   defaults — the router's defaults: in flight = the capacity the backend reports (the engine's parallel
 *              sequences), then the deadline-aware fair queue
 *   no-queue — the former defaults: the same limit, MOEFLASH_ROUTER_MAX_QUEUED = 0 (refuse beyond it)
 *   serial   — one call in flight, none queued: no batching, so admitted calls run exactly as unloaded ones
 * Env: LOAD_MODEL=<path|tiny> LOAD_SECONDS=20 (overload phase) LOAD_FACTOR=2 LOAD_MAX_TOKENS=32 LOAD_PARALLEL=4
 *      LOAD_THREADS=1 LOAD_SETTINGS=defaults,no-queue LOAD_BURST=300 LOAD_BURST_TOKENS=64 LOAD_FAIR_SECONDS=10
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { join } from 'node:path';

import { repoRoot } from '../services/engine/loadAddon';
import { generateRequest, rawGenerationClient } from '../harness/grpcClients';
import { spawnService, type SpawnedService } from '../harness/spawnService';
import { runOverload, type OverloadReport } from '../harness/runOverload';
import { benchModel } from './benchModel';
import { runBurst, runFairness, type BurstReport, type FairnessReport } from './loadPhases';
import { printTable, writeResult } from './benchTable';

/** A router admission setting: its environment, and how many callers load the stack to its capacity. */
interface AdmissionSetting {
  env(parallel: number): Record<string, string>;
  callers(parallel: number): number;
}

const SETTINGS: Record<string, AdmissionSetting> = {
  defaults: { env: () => ({}), callers: (parallel) => parallel },
  'no-queue': { env: () => ({ MOEFLASH_ROUTER_MAX_QUEUED: '0' }), callers: (parallel) => parallel },
  serial: { env: () => ({ MOEFLASH_ROUTER_MAX_IN_FLIGHT: '1', MOEFLASH_ROUTER_MAX_QUEUED: '0' }), callers: () => 1 },
};

/** The router runs with API keys so that the fairness phase has two callers; the other phases use the first. */
const KEYS = { load: 'bench-load-key-0123456789', large: 'bench-large-key-0123456789', small: 'bench-small-key-0123456789' };

interface SettingReport {
  overload: OverloadReport;
  burst: BurstReport;
  fairness: FairnessReport;
}

const env = (name: string, fallback: string) => process.env[name] || fallback;
const MiB = 1 << 20;

async function stop(service: SpawnedService): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  service.child.kill('SIGTERM');
  await service.exited;
}

interface LoadOptions {
  parallel: number;
  seconds: number;
  factor: number;
  maxTokens: number;
  burst: number;
  burstTokens: number;
  fairSeconds: number;
}

/** One admission setting: fresh processes, the phases, the processes stopped. */
async function runSetting(name: string, modelsFile: string, o: LoadOptions): Promise<SettingReport> {
  const dist = join(repoRoot(), 'dist', 'services');
  const quiet = { MOEFLASH_METRICS_ADDR: 'off', MOEFLASH_HINTS: '0', MOEFLASH_LOG_LEVEL: 'warn' };
  const inference = await spawnService(join(dist, 'inference', 'main.js'), { ...quiet, MOEFLASH_LOG_LEVEL: 'info', MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0', MOEFLASH_MODELS: modelsFile });
  let router: SpawnedService | undefined;
  try {
    router = await spawnService(join(dist, 'router', 'main.js'), {
      ...quiet,
      MOEFLASH_LOG_LEVEL: 'info',
      MOEFLASH_ROUTER_ADDR: '127.0.0.1:0',
      MOEFLASH_BACKENDS: `127.0.0.1:${inference.port}`,
      MOEFLASH_API_KEYS: Object.values(KEYS).join(','),
      ...SETTINGS[name].env(o.parallel),
    });
    await router.waitForLog((l) => l.msg === 'backend health' && l.serving === true);
    const { client, channel } = rawGenerationClient(`127.0.0.1:${router.port}`);
    const request = (maxTokens: number) => (i: number) =>
      generateRequest({ model: 'm', prompt: `Request ${i % 100}: the quick brown fox`, maxTokens, sampling: { temperature: 0 } });
    try {
      console.log(`${name}: measuring (overload phase ${o.seconds} s) ...`);
      const overload = await runOverload({
        client,
        headers: { authorization: `Bearer ${KEYS.load}` },
        request: request(o.maxTokens),
        warmupCalls: 5,
        unloadedCalls: 200,
        concurrency: SETTINGS[name].callers(o.parallel),
        capacityMs: 10_000,
        factor: o.factor,
        overloadMs: o.seconds * 1000,
        deadlineMs: 120_000,
        processes: { router: router.child.pid!, inference: inference.child.pid!, generator: process.pid },
      });
      // Each phase starts from an idle router: a second without calls (4x the burst time) between them, so that a
      // burst is not taken for the tail of the overload before it.
      await delay(1_000);
      console.log(`${name}: a burst of ${o.burst} calls ...`);
      const burst = await runBurst(client, request(o.burstTokens), o.burst, 60_000, { authorization: `Bearer ${KEYS.load}` });
      await delay(1_000);
      console.log(`${name}: fairness (${o.fairSeconds} s) ...`);
      const fairness = await runFairness(client, request(o.maxTokens), {
        keys: KEYS,
        smallInFlight: o.parallel,
        ratio: 10,
        durationMs: o.fairSeconds * 1000,
        deadlineMs: 120_000,
      });
      return { overload, burst, fairness };
    } finally {
      channel.close();
    }
  } finally {
    if (router) await stop(router);
    await stop(inference);
  }
}

async function main(): Promise<void> {
  const o = {
    parallel: Number(env('LOAD_PARALLEL', '4')),
    seconds: Number(env('LOAD_SECONDS', '20')),
    factor: Number(env('LOAD_FACTOR', '2')),
    maxTokens: Number(env('LOAD_MAX_TOKENS', '32')),
    burst: Number(env('LOAD_BURST', '300')),
    burstTokens: Number(env('LOAD_BURST_TOKENS', '64')),
    fairSeconds: Number(env('LOAD_FAIR_SECONDS', '10')),
  };
  const threads = Number(env('LOAD_THREADS', '1'));
  const settings = env('LOAD_SETTINGS', 'defaults,no-queue').split(',');
  for (const s of settings) if (!SETTINGS[s]) throw new Error(`LOAD_SETTINGS: unknown setting '${s}' (${Object.keys(SETTINGS).join(', ')})`);
  const model = await benchModel(env('LOAD_MODEL', 'tiny'));
  const dir = mkdtempSync(join(tmpdir(), 'moeflash-load-'));
  const modelsFile = join(dir, 'models.json');
  writeFileSync(modelsFile, JSON.stringify({ m: { path: model, options: { parallel: o.parallel, threads, contextSize: 512 } } }));

  const reports: Record<string, SettingReport> = {};
  const overloads: Record<string, OverloadReport> = {};
  // Other work on the machine moves every figure: its load average is printed with them.
  const loadBefore = loadavg()[0];
  try {
    for (const s of settings) {
      reports[s] = await runSetting(s, modelsFile, o);
      overloads[s] = reports[s].overload;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const loadAfter = loadavg()[0];
  const ms = (n: number) => n.toFixed(1);
  console.log(`\nbench:load — ${model}, ${o.maxTokens} tokens a call, engine parallel ${o.parallel}, threads ${threads}; ${o.factor}x capacity for ${o.seconds} s`);
  console.log(`machine: ${availableParallelism()} cores, 1-minute load average ${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after\n`);
  printTable(
    ['measure', ...settings],
    [
      ['unloaded p50 / p99 ms', ...settings.map((s) => `${ms(overloads[s].unloaded.p50)} / ${ms(overloads[s].unloaded.p99)}`)],
      ['capacity calls/s', ...settings.map((s) => overloads[s].atCapacity.callsPerSecond.toFixed(1))],
      ['at capacity p50 / p99 ms', ...settings.map((s) => `${ms(overloads[s].atCapacity.latency.p50)} / ${ms(overloads[s].atCapacity.latency.p99)}`)],
      ['offered calls/s (calls)', ...settings.map((s) => `${overloads[s].overload.offeredPerSecond.toFixed(1)} (${overloads[s].overload.offered})`)],
      ['admitted calls (per s)', ...settings.map((s) => `${overloads[s].overload.admitted.count} (${overloads[s].overload.admittedPerSecond.toFixed(1)})`)],
      ['admitted p50 / p99 ms', ...settings.map((s) => `${ms(overloads[s].overload.admitted.p50)} / ${ms(overloads[s].overload.admitted.p99)}`)],
      ['admitted / unloaded p50, p99', ...settings.map((s) => `${overloads[s].p50Ratio.toFixed(2)}, ${overloads[s].p99Ratio.toFixed(2)}`)],
      ['admitted / at-capacity p50, p99', ...settings.map((s) => `${(overloads[s].overload.admitted.p50 / overloads[s].atCapacity.latency.p50).toFixed(2)}, ${(overloads[s].overload.admitted.p99 / overloads[s].atCapacity.latency.p99).toFixed(2)}`)],
      ['RESOURCE_EXHAUSTED calls', ...settings.map((s) => overloads[s].overload.rejected.count)],
      ['refusal p50 / p99 ms', ...settings.map((s) => (overloads[s].overload.rejected.count ? `${ms(overloads[s].overload.rejected.p50)} / ${ms(overloads[s].overload.rejected.p99)}` : '-'))],
      ['admitted queue wait p50 / p99 ms', ...settings.map((s) => `${ms(overloads[s].overload.queueWait.p50)} / ${ms(overloads[s].overload.queueWait.p99)}`)],
      ['refusals\' RetryInfo p50 / p99 ms', ...settings.map((s) => (overloads[s].overload.retryDelay.count ? `${ms(overloads[s].overload.retryDelay.p50)} / ${ms(overloads[s].overload.retryDelay.p99)}` : '-'))],
      ['other failures', ...settings.map((s) => JSON.stringify(overloads[s].overload.failures))],
      [`burst of ${o.burst}: status counts`, ...settings.map((s) => JSON.stringify(reports[s].burst.codes))],
      ['burst: seconds, p50 / p99 ms', ...settings.map((s) => `${reports[s].burst.seconds.toFixed(1)}, ${ms(reports[s].burst.latency.p50)} / ${ms(reports[s].burst.latency.p99)}`)],
      ['burst: queue wait p50 / p99 ms', ...settings.map((s) => `${ms(reports[s].burst.queueWait.p50)} / ${ms(reports[s].burst.queueWait.p99)}`)],
      ['burst: real / predicted wait p50, p90', ...settings.map((s) => `${reports[s].burst.waitOverPredicted.p50.toFixed(2)}, ${reports[s].burst.waitOverPredicted.p90.toFixed(2)}`)],
      ...(['large', 'small'] as const).map((c) => [
        `fairness: ${c} caller (in flight) calls/s, share, retries, failures`,
        ...settings.map((s) => {
          const f = reports[s].fairness.callers[c];
          return `(${f.inFlight}) ${f.callsPerSecond.toFixed(1)}, ${(f.share * 100).toFixed(0)}%, ${f.retries}, ${f.failures}`;
        }),
      ]),
      ...['router', 'inference', 'generator'].map((p) => [
        `${p} RSS MiB before / peak / after`,
        ...settings.map((s) => {
          const m = overloads[s].processes[p];
          return `${(m.before / MiB).toFixed(0)} / ${(m.peak / MiB).toFixed(0)} / ${(m.after / MiB).toFixed(0)}`;
        }),
      ]),
      ...['router', 'inference', 'generator'].map((p) => [`${p} CPU % of a core (overload)`, ...settings.map((s) => overloads[s].processes[p].cpuPercent.toFixed(0))]),
    ],
  );
  const machine = { cores: availableParallelism(), loadAverageBefore: loadBefore, loadAverageAfter: loadAfter };
  const out = writeResult('load', { date: new Date().toISOString(), model, threads, ...o, machine, reports });
  console.log(`\nwritten ${out}`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
