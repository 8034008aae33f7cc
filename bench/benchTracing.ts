/**
 * npm run bench:tracing — what tracing costs a generation: decode speed of the inference service (a separate
 * process, real engine, loopback gRPC) in three telemetry configurations, measured in alternating rounds:
 *   off      OTEL_TRACES_SAMPLER=always_off, no exporter: spans are not even recorded
 *   default  no exporter (what a deployment gets without OTEL_* settings): spans recorded for log and hint
 *            correlation, then dropped
 *   on       OTEL_TRACES_SAMPLER=always_on, OTLP/gRPC export to a receiver in this process (batch every second)
 * Per configuration: decode tokens/s as the client sees it (between the first and the last streamed token), as the
 * engine reports it, and time to first token. The engine runs greedy on the generated `small` model (32 experts).
 * The cost is the median over rounds of each round's slowdown against `off` (paired: a round runs every
 * configuration back to back, so load from other processes that drifts over minutes cancels out).
 * Env: BENCH_MODEL=<gguf> (default the small test model)  BENCH_ROUNDS=20  BENCH_REQUESTS=2 (per configuration and
 * round)  BENCH_TOKENS=128  BENCH_THREADS=1 (one compute thread leaves a core to the event loop, where tracing
 * runs, and avoids llama.cpp's spinning thread barrier, which turns any preemption on a shared machine into noise)
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { createChannel, createClient, type Channel } from 'nice-grpc';

import { InferenceServiceDefinition, type InferenceServiceClient } from '../gen/moeflash/v1/inference';
import { repoRoot } from '../services/engine/loadAddon';
import { generateRequest } from '../harness/grpcClients';
import { spawnService, type SpawnedService } from '../harness/spawnService';
import { testModel } from '../harness/testModels';
import { OtlpReceiver } from '../harness/OtlpReceiver';
import { median, printTable, writeResult } from './benchTable';

const rounds = Number(process.env.BENCH_ROUNDS ?? 20);
const requestsPerRound = Number(process.env.BENCH_REQUESTS ?? 2);
const tokens = Number(process.env.BENCH_TOKENS ?? 128);
const threads = Number(process.env.BENCH_THREADS ?? 1);
const PROMPT = 'The quick brown fox jumps over the lazy dog';

type ConfigName = 'off' | 'default' | 'on';

interface Backend {
  name: ConfigName;
  service: SpawnedService;
  channel: Channel;
  client: InferenceServiceClient;
  clientTps: number[];
  engineTps: number[];
  ttftMs: number[];
  /** Median client decode t/s of each round. */
  roundTps: number[];
  /** CPU time the process spent on the measured requests (robust to other load, unlike the speeds). */
  cpuMs: number;
}

/** User + system CPU time of a process so far, in ms (/proc/<pid>/stat; clock ticks of 10 ms, Linux's USER_HZ). */
function cpuMs(pid: number): number {
  // the command name (field 2) may hold spaces: count fields after its closing parenthesis
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** One greedy generation: client-side decode t/s and TTFT, and the engine's own decode t/s. */
async function generateOnce(client: InferenceServiceClient): Promise<{ clientTps: number; engineTps: number; ttftMs: number }> {
  const start = performance.now();
  let first = 0;
  let last = 0;
  let n = 0;
  let engineTps = NaN;
  for await (const r of client.generate(generateRequest({ model: 'm', prompt: PROMPT, maxTokens: tokens, sampling: { temperature: 0 } }))) {
    if (r.event?.$case === 'chunk') {
      last = performance.now();
      if (!first) first = last;
      n += r.event.value.tokenIds.length;
    } else if (r.event?.$case === 'complete') {
      engineTps = r.event.value.timings?.decodeTokensPerSecond ?? NaN;
    }
  }
  if (n !== tokens) throw new Error(`expected ${tokens} tokens, got ${n}`);
  return { clientTps: (n - 1) / ((last - first) / 1000), engineTps, ttftMs: first - start };
}

async function main(): Promise<void> {
  const model = process.env.BENCH_MODEL ?? (await testModel('small'));
  const dir = mkdtempSync(join(tmpdir(), 'moeflash-bench-tracing-'));
  const modelsFile = join(dir, 'models.json');
  // no hint channel: the expert-store is not part of this measure
  writeFileSync(modelsFile, JSON.stringify({ m: { path: model, options: { threads, parallel: 1, contextSize: 512 } } }));
  const receiver = await OtlpReceiver.start();
  const env: Record<ConfigName, Record<string, string>> = {
    off: { OTEL_TRACES_EXPORTER: 'none', OTEL_TRACES_SAMPLER: 'always_off' },
    default: { OTEL_TRACES_EXPORTER: 'none' },
    on: { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_TRACES_SAMPLER: 'always_on', OTEL_BSP_SCHEDULE_DELAY: '1000' },
  };
  const backends: Backend[] = [];
  try {
    for (const name of ['off', 'default', 'on'] as const) {
      const service = await spawnService(join(repoRoot(), 'dist', 'services', 'inference', 'main.js'), {
        MOEFLASH_LOG_LEVEL: 'info',
        MOEFLASH_MODELS: modelsFile,
        MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0',
        MOEFLASH_METRICS_ADDR: 'off',
        MOEFLASH_HINTS: '0',
        OTEL_TRACES_SAMPLER: 'parentbased_always_on',
        ...env[name],
      });
      await service.waitForLog((l) => l.msg === 'model ready');
      const channel = createChannel(`127.0.0.1:${service.port}`);
      const client = createClient(InferenceServiceDefinition, channel);
      await generateOnce(client); // warm-up: first-call costs (connection, pages of the model) out of the rounds
      backends.push({ name, service, channel, client, clientTps: [], engineTps: [], ttftMs: [], roundTps: [], cpuMs: 0 });
    }
    for (let round = 0; round < rounds; round++) {
      // rotate the order so that no configuration always runs first (or right after another) in a round
      const order = backends.map((_, i) => backends[(i + round) % backends.length]);
      for (const b of order) {
        const tps: number[] = [];
        for (let i = 0; i < requestsPerRound; i++) {
          const cpuBefore = cpuMs(b.service.child.pid!);
          const r = await generateOnce(b.client);
          b.cpuMs += cpuMs(b.service.child.pid!) - cpuBefore;
          tps.push(r.clientTps);
          b.clientTps.push(r.clientTps);
          b.engineTps.push(r.engineTps);
          b.ttftMs.push(r.ttftMs);
        }
        b.roundTps.push(median(tps));
      }
      process.stderr.write(`round ${round + 1}/${rounds} done\n`);
    }
    const measured = rounds * requestsPerRound;
    // the traced process exports every second: wait for the rounds' spans rather than guess a delay; one trace per
    // request (the warm-up's included)
    const spansPerRequest = await receiver
      .waitFor('the traced rounds to be exported', (spans) => {
        const traces = new Set(spans.filter((s) => s.name === 'text_completion m').map((s) => s.traceId));
        return traces.size >= measured + 1 ? spans.length / traces.size : undefined;
      }, 15_000)
      .catch(() => NaN);

    const off = backends.find((b) => b.name === 'off')!;
    // paired per round: (off - config) / off, then the median over rounds
    const slowdown = (b: Backend) => median(b.roundTps.map((tps, round) => (off.roundTps[round] - tps) / off.roundTps[round]));
    const pct = (v: number) => `${v >= 0 ? '+' : ''}${(v * 100).toFixed(1)}%`;
    const cpuPerToken = (b: Backend) => (b.cpuMs * 1000) / (measured * tokens);
    const rows = backends.map((b) => {
      const tps = median(b.clientTps);
      const cpu = b === off ? '' : ` (${pct(cpuPerToken(b) / cpuPerToken(off) - 1)})`;
      return [b.name, tps, median(b.engineTps), 1000 / tps, median(b.ttftMs), b === off ? '-' : pct(slowdown(b)), `${cpuPerToken(b).toFixed(0)}${cpu}`];
    });
    console.log(`\nbench:tracing — inference process, ${tokens}-token greedy generations, ${rounds} rounds x ${requestsPerRound} requests per configuration, ${threads} threads, ${cpus()[0]?.model ?? 'cpu'}\n`);
    printTable(['tracing', 'client decode t/s', 'engine decode t/s', 'client ms/token', 'TTFT ms', 'slowdown vs off (paired median)', 'process CPU us/token'], rows);
    console.log(`\nspans exported per request with tracing on: ${spansPerRequest.toFixed(1)} (${receiver.spans.length} received in all)`);
    const out = writeResult('tracing-cost', {
      date: new Date().toISOString(),
      model,
      tokens,
      rounds,
      requestsPerRound,
      threads,
      cpu: cpus()[0]?.model,
      spansPerRequest,
      configurations: Object.fromEntries(
        backends.map((b) => [
          b.name,
          {
            env: env[b.name],
            medianClientTps: median(b.clientTps),
            medianEngineTps: median(b.engineTps),
            medianTtftMs: median(b.ttftMs),
            slowdownVsOff: b === off ? 0 : slowdown(b),
            cpuMsMeasured: b.cpuMs,
            cpuUsPerToken: cpuPerToken(b),
            roundTps: b.roundTps,
            clientTps: b.clientTps,
            engineTps: b.engineTps,
            ttftMs: b.ttftMs,
          },
        ]),
      ),
    });
    console.log(`written ${out}`);
  } finally {
    for (const b of backends) {
      b.channel.close();
      const exited = once(b.service.child, 'exit');
      b.service.child.kill('SIGTERM');
      await exited;
    }
    await receiver.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
