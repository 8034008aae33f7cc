/**
 * npm run bench:load — the load test of issue 7 on the real engine, loopback only, bounded (stops by itself):
 * an inference process (generated tiny model by default) and a router process, then for each router admission
 * setting: the unloaded latency (calls one at a time), the capacity (closed loop with as many callers as the engine
 * decodes at once), and 2x that capacity offered open-loop. Reports the admitted calls' p50/p99 against the unloaded
 * figure, the calls refused with RESOURCE_EXHAUSTED and how fast, and each process's RSS; prints a table and writes
 * bench/results/load.json.
 *
 * Admission settings compared (capacity: the throughput with as many callers as the router admits, at most parallel):
 *   defaults — the router's defaults: in flight = the capacity the backend reports (the engine's parallel
 *              sequences), no queue
 *   bounded  — the same set explicitly: MOEFLASH_ROUTER_MAX_IN_FLIGHT = parallel, MOEFLASH_ROUTER_MAX_QUEUED = 0
 *   serial   — one call in flight, none queued: no batching, so admitted calls run exactly as unloaded ones
 *   previous — the router's former defaults (256 in flight per backend, 1024 queued), for comparison
 * Env: LOAD_MODEL=<path|tiny> LOAD_SECONDS=20 (overload phase) LOAD_FACTOR=2 LOAD_MAX_TOKENS=32 LOAD_PARALLEL=4
 *      LOAD_THREADS=1 LOAD_SETTINGS=defaults,serial,previous
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

import { repoRoot } from '../services/engine/loadAddon';
import { generateRequest, rawGenerationClient } from '../test/helpers/grpcClients';
import { spawnService, type SpawnedService } from '../test/helpers/spawnService';
import { runOverload, type OverloadReport } from '../test/hardening/runOverload';
import { benchModel } from './benchModel';
import { printTable, writeResult } from './benchTable';

/** A router admission setting: its environment, and how many callers load the stack to its capacity. */
interface AdmissionSetting {
  env(parallel: number): Record<string, string>;
  callers(parallel: number): number;
}

const SETTINGS: Record<string, AdmissionSetting> = {
  bounded: { env: (parallel) => ({ MOEFLASH_ROUTER_MAX_IN_FLIGHT: String(parallel), MOEFLASH_ROUTER_MAX_QUEUED: '0' }), callers: (parallel) => parallel },
  serial: { env: () => ({ MOEFLASH_ROUTER_MAX_IN_FLIGHT: '1', MOEFLASH_ROUTER_MAX_QUEUED: '0' }), callers: () => 1 },
  defaults: { env: () => ({}), callers: (parallel) => parallel },
  previous: { env: () => ({ MOEFLASH_ROUTER_MAX_IN_FLIGHT: '256', MOEFLASH_ROUTER_MAX_QUEUED: '1024' }), callers: (parallel) => parallel },
};

const env = (name: string, fallback: string) => process.env[name] || fallback;
const MiB = 1 << 20;

async function stop(service: SpawnedService): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  service.child.kill('SIGTERM');
  await service.exited;
}

/** One admission setting: fresh processes, the three phases, the processes stopped. */
async function runSetting(name: string, modelsFile: string, o: { parallel: number; seconds: number; factor: number; maxTokens: number }): Promise<OverloadReport> {
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
      ...SETTINGS[name].env(o.parallel),
    });
    await router.waitForLog((l) => l.msg === 'backend health' && l.serving === true);
    const { client, channel } = rawGenerationClient(`127.0.0.1:${router.port}`);
    try {
      console.log(`${name}: measuring (overload phase ${o.seconds} s) ...`);
      return await runOverload({
        client,
        request: (i) => generateRequest({ model: 'm', prompt: `Request ${i % 100}: the quick brown fox`, maxTokens: o.maxTokens, sampling: { temperature: 0 } }),
        warmupCalls: 5,
        unloadedCalls: 200,
        concurrency: SETTINGS[name].callers(o.parallel),
        capacityMs: 10_000,
        factor: o.factor,
        overloadMs: o.seconds * 1000,
        deadlineMs: 120_000,
        processes: { router: router.child.pid!, inference: inference.child.pid!, generator: process.pid },
      });
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
  };
  const threads = Number(env('LOAD_THREADS', '1'));
  const settings = env('LOAD_SETTINGS', 'defaults,serial,previous').split(',');
  for (const s of settings) if (!SETTINGS[s]) throw new Error(`LOAD_SETTINGS: unknown setting '${s}' (${Object.keys(SETTINGS).join(', ')})`);
  const model = await benchModel(env('LOAD_MODEL', 'tiny'));
  const dir = mkdtempSync(join(tmpdir(), 'moeflash-load-'));
  const modelsFile = join(dir, 'models.json');
  writeFileSync(modelsFile, JSON.stringify({ m: { path: model, options: { parallel: o.parallel, threads, contextSize: 512 } } }));

  const reports: Record<string, OverloadReport> = {};
  // Other work on the machine moves every figure: its load average is printed with them.
  const loadBefore = loadavg()[0];
  try {
    for (const s of settings) reports[s] = await runSetting(s, modelsFile, o);
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
      ['unloaded p50 / p99 ms', ...settings.map((s) => `${ms(reports[s].unloaded.p50)} / ${ms(reports[s].unloaded.p99)}`)],
      ['capacity calls/s', ...settings.map((s) => reports[s].atCapacity.callsPerSecond.toFixed(1))],
      ['at capacity p50 / p99 ms', ...settings.map((s) => `${ms(reports[s].atCapacity.latency.p50)} / ${ms(reports[s].atCapacity.latency.p99)}`)],
      ['offered calls/s (calls)', ...settings.map((s) => `${reports[s].overload.offeredPerSecond.toFixed(1)} (${reports[s].overload.offered})`)],
      ['admitted calls (per s)', ...settings.map((s) => `${reports[s].overload.admitted.count} (${reports[s].overload.admittedPerSecond.toFixed(1)})`)],
      ['admitted p50 / p99 ms', ...settings.map((s) => `${ms(reports[s].overload.admitted.p50)} / ${ms(reports[s].overload.admitted.p99)}`)],
      ['admitted / unloaded p50, p99', ...settings.map((s) => `${reports[s].p50Ratio.toFixed(2)}, ${reports[s].p99Ratio.toFixed(2)}`)],
      ['admitted / at-capacity p50, p99', ...settings.map((s) => `${(reports[s].overload.admitted.p50 / reports[s].atCapacity.latency.p50).toFixed(2)}, ${(reports[s].overload.admitted.p99 / reports[s].atCapacity.latency.p99).toFixed(2)}`)],
      ['RESOURCE_EXHAUSTED calls', ...settings.map((s) => reports[s].overload.rejected.count)],
      ['refusal p50 / p99 ms', ...settings.map((s) => (reports[s].overload.rejected.count ? `${ms(reports[s].overload.rejected.p50)} / ${ms(reports[s].overload.rejected.p99)}` : '-'))],
      ['other failures', ...settings.map((s) => JSON.stringify(reports[s].overload.failures))],
      ...['router', 'inference', 'generator'].map((p) => [
        `${p} RSS MiB before / peak / after`,
        ...settings.map((s) => {
          const m = reports[s].processes[p];
          return `${(m.before / MiB).toFixed(0)} / ${(m.peak / MiB).toFixed(0)} / ${(m.after / MiB).toFixed(0)}`;
        }),
      ]),
      ...['router', 'inference', 'generator'].map((p) => [`${p} CPU % of a core (overload)`, ...settings.map((s) => reports[s].processes[p].cpuPercent.toFixed(0))]),
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
