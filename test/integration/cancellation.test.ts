import assert from 'node:assert/strict';
import { Status } from 'nice-grpc';
import { callDeadline } from '../../services/common/deadlineInterceptor';
import { ServiceServer } from '../../services/common/ServiceServer';
import { InferenceServiceDefinition } from '../../gen/moeflash/v1/inference';
import { ModelState } from '../../gen/moeflash/v1/inference';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, failure, generateRequest, generationClient, rawGenerationClient } from '../../harness/grpcClients';
import { routerReady, startRouter, startStack, testLog } from '../../harness/startStack';

describe('cancellation and deadlines', () => {
  it('cancel mid-stream frees the sequence, and the next request succeeds', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 5 });
    const stack = await startStack({ fake: engine });
    const { client, channel } = generationClient(stack.router.address);
    try {
      const controller = new AbortController();
      let chunks = 0;
      await assert.rejects(async () => {
        for await (const _ of client.generate(generateRequest({ prompt: 'long', maxTokens: 10_000 }), { signal: controller.signal })) {
          if (++chunks === 3) controller.abort();
        }
      }, { name: 'AbortError' });
      await engine.whenIdle();
      assert.equal(engine.stats().activeSequences, 0);
      assert.equal(engine.finals.length, 1);
      assert.equal(engine.finals[0].finishReason, 'cancelled');
      assert.ok(engine.finals[0].completionTokens < 10_000);
      const next = await drain(client.generate(generateRequest({ prompt: 'again', maxTokens: 4 })));
      assert.equal(next.tokens.length, 4);
    } finally {
      channel.close();
      await stack.stop();
    }
  });

  it('a client deadline ends the call with DEADLINE_EXCEEDED and stops decoding', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 5 });
    const stack = await startStack({ fake: engine });
    const { client, channel } = rawGenerationClient(stack.router.address);
    try {
      const f = await failure(() => drain(client.serverStream('generate', generateRequest({ prompt: 'x', maxTokens: 10_000 }), { deadline: Date.now() + 150 })));
      assert.equal(f.code, Status.DEADLINE_EXCEEDED);
      await engine.whenIdle();
      assert.equal(engine.finals[0].finishReason, 'cancelled');
    } finally {
      channel.close();
      await stack.stop();
    }
  });

  it("forwards the client's deadline to the backend", async () => {
    // A stand-in backend that reports back the deadline its call arrived with.
    const seen: (number | undefined)[] = [];
    const backend = ServiceServer({ log: testLog, serviceNames: ['moeflash.v1.InferenceService'] });
    backend.server.add(InferenceServiceDefinition, {
      async *generate(_request, context) {
        seen.push(callDeadline(context.metadata));
        yield { event: { $case: 'chunk', value: { tokenIds: [1], text: 'a', usage: undefined } } };
      },
      tokenize: async () => ({ tokenIds: [] }),
      detokenize: async () => ({ text: '' }),
      listModels: async () => ({ models: [] }),
      getModel: async () => ({ model: undefined }),
      getLoad: async () => ({ models: [{ model: 'm', state: ModelState.MODEL_STATE_READY, activeSequences: 0, queuedRequests: 0, capacity: 1 }] }),
    });
    backend.health.setReady(true);
    const port = await backend.listen('127.0.0.1:0');
    const router = await startRouter([`127.0.0.1:${port}`]);
    await routerReady(router.router, 'm');
    const { client, channel } = rawGenerationClient(router.address);
    try {
      const deadline = Date.now() + 30_000;
      await drain(client.serverStream('generate', generateRequest({ model: 'm', prompt: 'x' }), { deadline }));
      await drain(client.serverStream('generate', generateRequest({ model: 'm', prompt: 'x' })));
      assert.equal(seen.length, 2);
      // grpc-timeout is relative: each hop re-anchors it on arrival, so it drifts by the transit time.
      assert.ok(seen[0] !== undefined && Math.abs(seen[0] - deadline) < 1_000, `backend deadline ${seen[0]} vs ${deadline}`);
      assert.equal(seen[1], undefined);
    } finally {
      channel.close();
      await router.stop();
      await backend.shutdown(0);
    }
  });
});
