import assert from 'node:assert/strict';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, generateRequest, generationClient } from '../../harness/grpcClients';
import { startStack } from '../../harness/startStack';
import { MAX_MESSAGE_BYTES } from '../../services/common/ServiceServer';
import { allowedCodes, FuzzCases, RawGenerateClient } from '../../harness/requestFuzz';

const CASES = Number(process.env.MOEFLASH_FUZZ_CASES ?? 300);
const SEED = Number(process.env.MOEFLASH_FUZZ_SEED ?? 7);
const CONCURRENCY = 8;

describe('hardening: request fuzzing through the router', () => {
  it(`${CASES} random Generate requests end OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED or NOT_FOUND, never INTERNAL, and the stack keeps serving`, async function () {
    this.timeout(Math.max(60_000, CASES * 50));
    const engine = new FakeEngine({ contextSize: 65_536 });
    const stack = await startStack({ fake: engine }, { maxInFlightPerBackend: 4, maxQueued: 4 });
    const raw = new RawGenerateClient(stack.router.address);
    const { client, channel } = generationClient(stack.router.address);
    const nextCase = FuzzCases(SEED, 'fake', MAX_MESSAGE_BYTES);
    const tally = new Map<string, number>();
    const bad: string[] = [];
    try {
      for (let start = 0; start < CASES; start += CONCURRENCY) {
        const batch = Array.from({ length: Math.min(CONCURRENCY, CASES - start) }, (_, k) => ({ i: start + k, c: nextCase(start + k) }));
        const outcomes = await Promise.all(batch.map(({ c }) => raw.call(c.bytes)));
        outcomes.forEach((o, k) => {
          const { i, c } = batch[k];
          const key = `${c.kind}:${GrpcStatus[o.code]}`;
          tally.set(key, (tally.get(key) ?? 0) + 1);
          if (!allowedCodes(c.kind).includes(o.code)) bad.push(`case ${i} [${c.label}] -> ${GrpcStatus[o.code]}: ${o.details}`);
        });
        // The servers still answer a well-formed request after every batch.
        if (start % (CONCURRENCY * 10) === 0) assert.equal((await drain(client.generate(generateRequest({ prompt: 'alive?', maxTokens: 2 })))).tokens.length, 2);
      }
      assert.deepEqual(bad.slice(0, 20), [], `unexpected statuses (${bad.length}); tally ${JSON.stringify(Object.fromEntries(tally))}`);
      assert.ok((tally.get('typed:OK') ?? 0) > 0 && (tally.get('typed:INVALID_ARGUMENT') ?? 0) > 0, `a mix of outcomes: ${JSON.stringify(Object.fromEntries(tally))}`);
      await engine.whenIdle();
      assert.equal(engine.stats().activeSequences, 0);
      assert.equal((await drain(client.generate(generateRequest({ prompt: 'still alive', maxTokens: 3 })))).tokens.length, 3);
      if (process.env.MOEFLASH_FUZZ_REPORT) console.log(JSON.stringify({ cases: CASES, seed: SEED, tally: Object.fromEntries(tally) }));
    } finally {
      raw.close();
      channel.close();
      await stack.stop();
    }
  });
});
