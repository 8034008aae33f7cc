/**
 * `moeflash serve` (real engine, generated tiny model) under load, kill -9 of each service in turn, as issue 7 asks:
 * the expert-store (generations complete with identical tokens), the inference (calls end UNAVAILABLE within their
 * deadline, the supervisor restarts it and the router serves again), the router (the supervisor restarts it and the
 * client's same channel reconnects); then SIGTERM drains everything and serve exits 0.
 * MOEFLASH_FAULT_REPORT=1 prints the recovery times.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createChannel, createClient, Status } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { HealthCheckResponse_ServingStatus } from 'nice-grpc-server-health/lib/proto/grpc/health/v1/health';

import { generateRequest, rawGenerationClient } from '../../harness/grpcClients';
import { testModel } from '../../harness/testModels';
import { copyModel, until } from '../expert-store/writeTestGguf';
import { timedGenerate } from '../../harness/offerLoad';
import { spawnServe, type ServeProcess, type ServiceName } from './spawnServe';

const PROMPTS = ['The quick brown fox', 'Once upon a time', 'In a hole in the ground', 'It was a bright cold day'];
const TOKENS = 64;
/** Deadline of the calls that a kill ends: they must end UNAVAILABLE well before it. */
const DEADLINE_MS = 10_000;
/** Deadline of the calls that must complete: generous, the machine may be shared (2 cores). */
const PATIENT_MS = 60_000;
/** How soon after a kill the calls it cut must have ended. */
const NOTICED_MS = 2_000;

const report = (what: string, ms: number) => process.env.MOEFLASH_FAULT_REPORT && console.log(`      ${what}: ${ms.toFixed(0)} ms`);

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('serve: kill -9 of each service under load, then SIGTERM', function () {
  let dir: string;
  let serve: ServeProcess;
  let client: ReturnType<typeof rawGenerationClient>['client'];
  let channel: ReturnType<typeof rawGenerationClient>['channel'];
  let reference: number[][];
  const pids = {} as Record<ServiceName, number>;

  const request = (prompt: string, maxTokens = TOKENS) => generateRequest({ model: 'tiny', prompt, maxTokens, sampling: { temperature: 0 } });

  /** Generations of every prompt at once; `onAllStreaming` runs once each has received a chunk. */
  async function concurrentGenerations(maxTokens: number, deadlineMs: number, onAllStreaming: () => void): Promise<{ tokens: number[]; code: Status; endedAt: number }[]> {
    let streaming = 0;
    return Promise.all(
      PROMPTS.map(async (prompt) => {
        const tokens: number[] = [];
        try {
          for await (const r of client.serverStream('generate', request(prompt, maxTokens), { deadline: Date.now() + deadlineMs })) {
            if (r.event?.$case !== 'chunk') continue;
            if (tokens.length === 0 && ++streaming === PROMPTS.length) onAllStreaming();
            tokens.push(...r.event.value.tokenIds);
          }
          return { tokens, code: Status.OK, endedAt: performance.now() };
        } catch (err) {
          return { tokens, code: (err as { code: Status }).code, endedAt: performance.now() };
        }
      }),
    );
  }

  /**
   * Each prompt's generation, one after another (one sequence in flight: batching sequences together changes
   * llama.cpp's float rounding, so tokens are comparable only one at a time); `onFirstChunk` runs at the first chunk.
   */
  async function backToBack(onFirstChunk: () => void): Promise<number[][]> {
    const out: number[][] = [];
    for (const p of PROMPTS) {
      const tokens: number[] = [];
      for await (const r of client.serverStream('generate', request(p), { deadline: Date.now() + PATIENT_MS })) {
        if (r.event?.$case !== 'chunk') continue;
        if (out.length === 0 && tokens.length === 0) onFirstChunk();
        tokens.push(...r.event.value.tokenIds);
      }
      out.push(tokens);
    }
    return out;
  }

  /** Polls (a short generation, failing fast while there is no route) until the router serves again. */
  function servedAgain(): Promise<void> {
    return until('a generation through the router', async () => (await timedGenerate(client, request(PROMPTS[0], 8), PATIENT_MS)).code === Status.OK, PATIENT_MS);
  }

  /**
   * Kills `service` once all prompts' long generations are streaming, and checks that every one of them ends
   * UNAVAILABLE soon after (far inside its deadline). Resolves with the kill's time and the log position before it.
   */
  async function killWhileStreaming(service: ServiceName): Promise<{ killed: number; killedAt: number; from: number }> {
    const from = serve.lines.length;
    const killed = pids[service];
    let killedAt = 0;
    const outcomes = await concurrentGenerations(4000, DEADLINE_MS, () => {
      killedAt = performance.now();
      process.kill(killed, 'SIGKILL');
    });
    for (const o of outcomes) {
      assert.equal(o.code, Status.UNAVAILABLE);
      assert.ok(o.endedAt - killedAt < NOTICED_MS, `ended ${(o.endedAt - killedAt).toFixed(0)} ms after the kill (deadline ${DEADLINE_MS} ms)`);
    }
    report(`calls through the killed ${service} ended UNAVAILABLE within`, Math.max(...outcomes.map((o) => o.endedAt - killedAt)));
    return { killed, killedAt, from };
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-serve-faults-'));
    // A private copy: the hint channel between inference and expert-store is named after the model's path.
    const model = copyModel(await testModel('tiny'), join(dir, 'tiny.gguf'));
    serve = await spawnServe(model, join(dir, 'state'), { MOEFLASH_WARM_ON_START: 'none', MOEFLASH_SHUTDOWN_GRACE_MS: String(PATIENT_MS) });
    for (const s of ['expert-store', 'inference', 'router'] as const) pids[s] = await serve.listening(s);
    await serve.waitForLine((l) => l.name === 'router' && l.msg === 'backend health' && l.serving === true);
    ({ client, channel } = rawGenerationClient(serve.addresses.router));
    reference = await backToBack(() => undefined);
    for (const tokens of reference) assert.equal(tokens.length, TOKENS);
  });

  after(async () => {
    channel?.close();
    if (serve && serve.child.exitCode === null && serve.child.signalCode === null) {
      serve.child.kill('SIGKILL');
      await serve.exited;
    }
    for (const pid of Object.values(pids)) if (isRunning(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('expert-store: generations going on complete with identical tokens; serve restarts it', async () => {
    const from = serve.lines.length;
    const killed = pids['expert-store'];
    let killedAt = 0;
    const generated = await backToBack(() => {
      killedAt = performance.now();
      process.kill(killed, 'SIGKILL');
    });
    assert.ok(killedAt > 0);
    assert.deepEqual(generated, reference);
    pids['expert-store'] = await serve.listening('expert-store', from);
    assert.notEqual(pids['expert-store'], killed);
    const storeChannel = createChannel(serve.addresses['expert-store']);
    try {
      const health = createClient(HealthDefinition, storeChannel);
      await until('the restarted expert-store to be SERVING', async () => {
        const { status } = await health.check({ service: '' }).catch(() => ({ status: undefined }));
        return status === HealthCheckResponse_ServingStatus.SERVING;
      });
    } finally {
      storeChannel.close();
    }
    report('expert-store back (SERVING) after kill -9', performance.now() - killedAt);
  });

  it('inference: calls end UNAVAILABLE within their deadline; serve restarts it; the router serves the same tokens', async () => {
    const { killed, killedAt, from } = await killWhileStreaming('inference');
    // With no backend left, a new call is refused UNAVAILABLE at once rather than held until its deadline.
    const refused = await timedGenerate(client, request(PROMPTS[0], 8), 2_000);
    assert.equal(refused.code, Status.UNAVAILABLE);
    assert.ok(refused.ms < NOTICED_MS, `refused after ${refused.ms.toFixed(0)} ms`);

    pids.inference = await serve.listening('inference', from);
    assert.notEqual(pids.inference, killed);
    await servedAgain();
    report('inference back (router serves) after kill -9', performance.now() - killedAt);
    assert.deepEqual(await backToBack(() => undefined), reference);
  });

  it('router: calls on it end UNAVAILABLE; serve restarts it and the same client channel reconnects', async () => {
    const { killed, killedAt, from } = await killWhileStreaming('router');
    pids.router = await serve.listening('router', from);
    assert.notEqual(pids.router, killed);
    await servedAgain();
    report('client reconnected through the restarted router after kill -9', performance.now() - killedAt);
  });

  it('SIGTERM: a generation under way completes, the three services stop, serve exits 0', async () => {
    let signalledAt = 0;
    const outcomes = await concurrentGenerations(TOKENS, PATIENT_MS, () => {
      signalledAt = performance.now();
      serve.child.kill('SIGTERM');
    });
    assert.deepEqual(outcomes.map((o) => [o.code, o.tokens.length]), PROMPTS.map(() => [Status.OK, TOKENS]));
    assert.equal(await serve.exited, 0);
    report('serve exited 0 after SIGTERM, 4 generations drained', performance.now() - signalledAt);
    for (const [service, pid] of Object.entries(pids)) assert.equal(isRunning(pid), false, `${service} (${pid}) still running`);
  });
});
