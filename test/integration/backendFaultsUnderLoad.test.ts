/**
 * One of two inference processes fails while both are busy: kill -9 (its calls end UNAVAILABLE at once, well within
 * their deadline; the calls on the other complete; the next call is served by the other at once), and SIGTERM (it
 * drains: its calls complete, new calls go to the other, and no call fails). MOEFLASH_FAULT_REPORT=1 prints the times.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { Status } from 'nice-grpc';

import { generateRequest, rawGenerationClient } from '../../harness/grpcClients';
import { spawnService, type SpawnedService } from '../../harness/spawnService';
import { routerReady, startRouter, waitFor, type RouterInstance } from '../../harness/startStack';
import { timedGenerate, type CallOutcome, type GenerationClient } from '../../harness/offerLoad';

const FAKE_INFERENCE_MAIN = path.resolve(__dirname, '..', 'helpers', 'fakeInferenceMain.js');
const TOKEN_MS = 5;
/** fakeInferenceMain's engine decodes 4 sequences at once; the router admits as many per backend. */
const ENGINE_PARALLEL = 4;
const DEADLINE_MS = 10_000;

/** How a call ended, and when (performance.now()). */
type EndedCall = CallOutcome & { endedAt: number };

/** `n` concurrent calls of `tokens` tokens; `streaming` resolves once each has received its first chunk. */
function callsUnderWay(client: GenerationClient, n: number, tokens: number): { streaming: Promise<void>; outcomes: Promise<EndedCall[]> } {
  let resolveStreaming!: () => void;
  const streaming = new Promise<void>((resolve) => (resolveStreaming = resolve));
  let started = 0;
  const outcomes = Promise.all(
    Array.from({ length: n }, async (_, i): Promise<EndedCall> => {
      const t0 = performance.now();
      let received = 0;
      const ended = (code: Status) => ({ code, ms: performance.now() - t0, tokens: received, endedAt: performance.now() });
      try {
        for await (const r of client.serverStream('generate', generateRequest({ prompt: `busy ${i}`, maxTokens: tokens }), { deadline: Date.now() + DEADLINE_MS }))
          if (r.event?.$case === 'chunk') {
            if (received === 0 && ++started === n) resolveStreaming();
            received += r.event.value.tokenIds.length;
          }
        return ended(Status.OK);
      } catch (err) {
        if (started < n) resolveStreaming(); // a call failed before streaming: let the test see it
        return ended((err as { code: Status }).code);
      }
    }),
  );
  return { streaming, outcomes };
}

describe('inference faults under load (two backend processes)', function () {
  const backends: SpawnedService[] = [];
  let router: RouterInstance | undefined;

  async function start(env: Record<string, string> = {}) {
    for (let i = 0; i < 2; i++)
      backends.push(
        await spawnService(FAKE_INFERENCE_MAIN, { MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0', FAKE_TOKEN_DELAY_MS: String(TOKEN_MS), MOEFLASH_METRICS_ADDR: 'off', ...env }),
      );
    const addresses = backends.map((b) => `127.0.0.1:${b.port}`);
    router = await startRouter(addresses, { maxInFlightPerBackend: ENGINE_PARALLEL, maxQueued: 16 });
    await routerReady(router.router, 'fake', 2);
    return { addresses, router: router.router, ...rawGenerationClient(router.address) };
  }

  afterEach(async () => {
    await router?.stop();
    router = undefined;
    for (const b of backends.splice(0)) {
      b.child.kill('SIGKILL');
      await b.exited;
    }
  });

  it('kill -9 of one: its calls end UNAVAILABLE at once, the others complete, the next call is served by the other', async () => {
    const { addresses, router, client, channel } = await start();
    try {
      // Six calls of about 1 s, spread 3 and 3 (least loaded first): the survivor has a free sequence for the next.
      const load = callsUnderWay(client, 6, 200);
      await load.streaming;
      const onKilled = router.admission.inFlight(addresses[0]);
      assert.deepEqual([onKilled, router.admission.inFlight(addresses[1])], [3, 3]);

      const killedAt = performance.now();
      backends[0].child.kill('SIGKILL');
      // The router may not have noticed yet: a call that lands on the dead backend fails before its first token
      // and is retried on the other.
      const next = await timedGenerate(client, generateRequest({ prompt: 'next', maxTokens: 3 }), DEADLINE_MS);
      assert.deepEqual([next.code, next.tokens], [Status.OK, 3]);
      assert.ok(next.ms < 1_000, `the next call took ${next.ms.toFixed(0)} ms`);

      const outcomes = await load.outcomes;
      const failed = outcomes.filter((o) => o.code !== Status.OK);
      assert.equal(failed.length, onKilled, 'exactly the calls on the killed backend fail');
      for (const f of failed) {
        assert.equal(f.code, Status.UNAVAILABLE);
        assert.ok(f.tokens > 0 && f.tokens < 200, `${f.tokens} tokens before the kill`);
        // Ended by the kill, not by their deadline (10 s): within a second of it.
        assert.ok(f.endedAt - killedAt < 1_000, `failed ${(f.endedAt - killedAt).toFixed(0)} ms after the kill`);
      }
      for (const o of outcomes.filter((x) => x.code === Status.OK)) assert.equal(o.tokens, 200);
      await waitFor(router.pool, 'change', () => router.pool.candidates('fake').join() === addresses[1]);
      assert.equal(await backends[0].exited, 'SIGKILL');
      if (process.env.MOEFLASH_FAULT_REPORT)
        console.log(`      ${onKilled} calls on the killed backend ended UNAVAILABLE within ${Math.max(...failed.map((f) => f.endedAt - killedAt)).toFixed(0)} ms; the next call took ${next.ms.toFixed(0)} ms`);
    } finally {
      channel.close();
    }
  });

  it('SIGTERM of one: it drains its calls, new calls go to the other, no call fails, and it exits 0', async () => {
    const { addresses, router, client, channel } = await start({ MOEFLASH_SHUTDOWN_GRACE_MS: String(DEADLINE_MS) });
    try {
      const load = callsUnderWay(client, 6, 100); // about 0.5 s each
      await load.streaming;
      assert.ok(router.admission.inFlight(addresses[0]) > 0 && router.admission.inFlight(addresses[1]) > 0, 'both backends busy');

      backends[0].child.kill('SIGTERM');
      const during = await Promise.all(Array.from({ length: 8 }, (_, i) => timedGenerate(client, generateRequest({ prompt: `during ${i}`, maxTokens: 20 }), DEADLINE_MS)));
      const outcomes = await load.outcomes;
      assert.deepEqual(outcomes.map((o) => [o.code, o.tokens]), outcomes.map(() => [Status.OK, 100]));
      assert.deepEqual(during.map((o) => [o.code, o.tokens]), during.map(() => [Status.OK, 20]));
      assert.equal(await backends[0].exited, 0);
      await waitFor(router.pool, 'change', () => router.pool.candidates('fake').join() === addresses[1]);
    } finally {
      channel.close();
    }
  });
});
