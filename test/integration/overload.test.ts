import assert from 'node:assert/strict';
import { Status } from 'nice-grpc';
import { parseConfig } from '../../services/common/parseConfig';
import { FakeEngine } from '../helpers/FakeEngine';
import { drain, failure, generateRequest, generationClient } from '../helpers/grpcClients';
import { startStack, waitFor } from '../helpers/startStack';

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

  it("by default admits as many calls as the backend's engine decodes at once and refuses the next at once", async () => {
    const engine = new FakeEngine({ tokenDelayMs: 5, parallel: 2 });
    const { maxInFlightPerBackend, maxQueued } = parseConfig([], {}).router;
    const stack = await startStack({ fake: engine }, { maxInFlightPerBackend, maxQueued });
    const { client, channel } = generationClient(stack.router.address);
    const running = new AbortController();
    try {
      const holders = ['a', 'b'].map((prompt) =>
        (async () => {
          for await (const _ of client.generate(generateRequest({ prompt, maxTokens: 10_000 }), { signal: running.signal }));
        })().catch(() => undefined),
      );
      await engine.whenActive(2);
      const started = performance.now();
      const f = await failure((o) => drain(client.generate(generateRequest({ prompt: 'c', maxTokens: 3 }), o)));
      const ms = performance.now() - started;
      assert.equal(f.code, Status.RESOURCE_EXHAUSTED);
      // Refused by the router, not queued in the engine behind two endless calls.
      assert.equal(engine.stats().queuedRequests, 0);
      assert.ok(ms < 1_000, `refused after ${ms.toFixed(0)} ms`);
      running.abort();
      await Promise.all(holders);
      const { admission } = stack.router.router;
      await waitFor(admission, 'change', () => admission.inFlight(stack.inference.address) === 0);
      // The slots are free again.
      assert.equal((await drain(client.generate(generateRequest({ prompt: 'd', maxTokens: 3 })))).tokens.length, 3);
    } finally {
      running.abort();
      channel.close();
      await stack.stop();
    }
  });
});
