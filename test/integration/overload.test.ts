import assert from 'node:assert/strict';
import { Metadata, Status } from 'nice-grpc';
import { parseConfig } from '../../services/common/parseConfig';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, failure, generateRequest, generationClient } from '../../harness/grpcClients';
import { startStack, waitFor } from '../../harness/startStack';

describe('overload', () => {
  it('RESOURCE_EXHAUSTED with RetryInfo once in-flight slots and the queue are full; queued calls run later', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 5 });
    const stack = await startStack({ fake: engine }, { maxInFlightPerBackend: 1, maxQueued: 1, retryAfterMs: 1234 });
    const { client, channel } = generationClient(stack.router.address);
    const { admission } = stack.router.router;
    const running = new AbortController();
    try {
      // One call holds the only slot...
      const first = (async () => {
        for await (const _ of client.generate(generateRequest({ prompt: 'a', maxTokens: 10_000 }), { signal: running.signal }));
      })().catch(() => undefined);
      await engine.whenActive(1);
      // ...one waits in the queue...
      const queued = drain(client.generate(generateRequest({ prompt: 'b', maxTokens: 3 })));
      await waitFor(admission, 'change', () => admission.queued === 1);
      // ...and the next is refused at once.
      const f = await failure((o) => drain(client.generate(generateRequest({ prompt: 'c', maxTokens: 3 }), o)));
      assert.equal(f.code, Status.RESOURCE_EXHAUSTED);
      assert.equal(f.statusDetails?.retryDelayMs, 1234);
      running.abort();
      await first;
      assert.equal((await queued).tokens.length, 3);
    } finally {
      running.abort();
      channel.close();
      await stack.stop();
    }
  });

  it("by default queues calls beyond the engine's parallelism in the router, not the engine, and runs them as slots free", async () => {
    const engine = new FakeEngine({ tokenDelayMs: 5, parallel: 2 });
    const { maxInFlightPerBackend, maxQueued, maxQueueWaitMs, queueBurstMs } = parseConfig([], {}).router;
    const stack = await startStack({ fake: engine }, { maxInFlightPerBackend, maxQueued, maxQueueWaitMs, queueBurstMs });
    const { client, channel } = generationClient(stack.router.address);
    const { admission } = stack.router.router;
    const running = new AbortController();
    try {
      const holders = ['a', 'b'].map((prompt) =>
        (async () => {
          for await (const _ of client.generate(generateRequest({ prompt, maxTokens: 10_000 }), { signal: running.signal }));
        })().catch(() => undefined),
      );
      await engine.whenActive(2);
      const queued = drain(client.generate(generateRequest({ prompt: 'c', maxTokens: 3 })));
      await waitFor(admission, 'change', () => admission.queued === 1);
      // Waiting in the router, where it holds nothing of the engine's.
      assert.equal(engine.stats().queuedRequests, 0);
      running.abort();
      await Promise.all(holders);
      const result = await queued;
      assert.equal(result.tokens.length, 3);
      const complete = result.responses.at(-1)?.event;
      assert.equal(complete?.$case, 'complete');
      assert.ok(complete.value.timings && complete.value.timings.routerQueueMs > 0, 'the complete message says how long the call was queued');
    } finally {
      running.abort();
      channel.close();
      await stack.stop();
    }
  });

  it('a burst of 300 concurrent calls at the defaults is served in full', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 1, parallel: 4 });
    const { maxInFlightPerBackend, maxQueued, maxQueueWaitMs, queueBurstMs } = parseConfig([], {}).router;
    const stack = await startStack({ fake: engine }, { maxInFlightPerBackend, maxQueued, maxQueueWaitMs, queueBurstMs });
    const { client, channel } = generationClient(stack.router.address);
    const { admission } = stack.router.router;
    let deepest = 0;
    admission.on('change', () => (deepest = Math.max(deepest, admission.queued)));
    try {
      const results = await Promise.all(
        Array.from({ length: 300 }, (_, i) => drain(client.generate(generateRequest({ prompt: `burst ${i}`, maxTokens: 8 })))),
      );
      assert.deepEqual(new Set(results.map((r) => r.tokens.length)), new Set([8]));
      assert.ok(deepest > 100, `the burst queued (${deepest} calls at most)`);
      assert.equal(admission.queued, 0);
    } finally {
      channel.close();
      await stack.stop();
    }
  });

  it('shares the queue between callers: a small caller behind a large burst is served in turn, not after it', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 2, parallel: 2 });
    // Callers are told apart by their API keys.
    const keys = { large: 'large-caller-key-0123456789', small: 'small-caller-key-0123456789' };
    const stack = await startStack({ fake: engine }, { maxInFlightPerBackend: undefined, maxQueued: 1024, apiKeys: Object.values(keys) });
    const { admission } = stack.router.router;
    const { client, channel } = generationClient(stack.router.address);
    const finished: string[] = [];
    const call = (caller: keyof typeof keys, name: string) =>
      drain(client.generate(generateRequest({ prompt: name, maxTokens: 4 }), { metadata: Metadata({ authorization: `Bearer ${keys[caller]}` }) })).then(() =>
        finished.push(name),
      );
    try {
      const burst = Array.from({ length: 100 }, (_, i) => call('large', `large${i}`));
      await waitFor(admission, 'change', () => admission.queued >= 90);
      const few = Array.from({ length: 10 }, (_, i) => call('small', `small${i}`));
      await Promise.all([...burst, ...few]);
      const lastSmall = finished.indexOf('small9');
      // Alternating from the moment it arrived, the small caller is done within ~2 x 10 calls of arriving; behind
      // the burst it would finish last (index 109).
      const largeBefore = finished.slice(0, lastSmall).filter((n) => n.startsWith('large')).length;
      assert.ok(largeBefore < 10 + 25, `${largeBefore} of the large caller's calls finished before the small caller's last`);
    } finally {
      channel.close();
      await stack.stop();
    }
  });
});
