import assert from 'node:assert/strict';
import { Status } from 'nice-grpc';
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
});
