import assert from 'node:assert/strict';
import { Status } from 'nice-grpc';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, failure, generateRequest, generationClient } from '../../harness/grpcClients';
import { startStack } from '../../harness/startStack';

describe('graceful shutdown', () => {
  it('lets a stream in flight finish within the grace period', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 2 });
    const stack = await startStack({ fake: engine });
    const { client, channel } = generationClient(stack.router.address);
    try {
      const stream = client.generate(generateRequest({ prompt: 'a', maxTokens: 40 }))[Symbol.asyncIterator]();
      const first = await stream.next();
      assert.equal(first.value?.event?.$case, 'chunk');
      const stopped = stack.router.router.shutdown(30_000);
      const rest = await drain({ [Symbol.asyncIterator]: () => stream });
      assert.equal(rest.responses[rest.responses.length - 1].event?.$case, 'complete');
      await stopped;
      // The router accepts nothing new once it is stopping.
      const f = await failure((o) => drain(client.generate(generateRequest({ prompt: 'a', maxTokens: 1 }), o)));
      assert.equal(f.code, Status.UNAVAILABLE);
    } finally {
      channel.close();
      await stack.stop();
    }
  });

  it('ends streams still running after the grace period with UNAVAILABLE and frees their sequences', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 5 });
    const stack = await startStack({ fake: engine });
    const { client, channel } = generationClient(stack.router.address);
    try {
      let chunks = 0;
      const f = await failure(async (o) => {
        for await (const _ of client.generate(generateRequest({ prompt: 'a', maxTokens: 10_000 }), o))
          if (++chunks === 1) void stack.router.router.shutdown(50);
      });
      assert.equal(f.code, Status.UNAVAILABLE);
      await engine.whenIdle();
      assert.equal(engine.finals[0].finishReason, 'cancelled');
    } finally {
      channel.close();
      await stack.stop();
    }
  });
});
