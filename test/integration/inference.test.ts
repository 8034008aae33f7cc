import assert from 'node:assert/strict';
import { Status, createChannel, createClient } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { HealthCheckResponse_ServingStatus as ServingStatus } from 'nice-grpc-server-health/lib/proto/grpc/health/v1/health';
import { InferenceServiceDefinition, ModelState } from '../../gen/moeflash/v1/inference';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, failure, generateRequest } from '../../harness/grpcClients';
import { startInference } from '../../harness/startStack';

describe('inference service', () => {
  it('is NOT_SERVING while its models load, reports them LOADING, and refuses them with UNAVAILABLE', async () => {
    const inference = await startInference({});
    inference.host.setLoading('fake');
    const channel = createChannel(inference.address);
    try {
      const health = createClient(HealthDefinition, channel);
      const client = createClient(InferenceServiceDefinition, channel);
      const watch = health.watch({ service: 'moeflash.v1.InferenceService' })[Symbol.asyncIterator]();
      assert.equal((await watch.next()).value?.status, ServingStatus.NOT_SERVING);
      assert.equal((await health.check({ service: '' })).status, ServingStatus.SERVING);
      assert.deepEqual((await client.getLoad({})).models, [
        { model: 'fake', state: ModelState.MODEL_STATE_LOADING, activeSequences: 0, queuedRequests: 0, capacity: 0, error: '', expertResidency: -1 },
      ]);
      const f = await failure((o) => drain(client.generate(generateRequest({ prompt: 'a' }), o)));
      assert.equal(f.code, Status.UNAVAILABLE);

      inference.host.setReady('fake', new FakeEngine());
      assert.equal((await watch.next()).value?.status, ServingStatus.SERVING);
      await watch.return?.();
      assert.equal((await drain(client.generate(generateRequest({ prompt: 'a', maxTokens: 2 })))).tokens.length, 2);
    } finally {
      channel.close();
      await inference.server.shutdown(0);
    }
  });

  it('GetLoad reports active and queued sequences against capacity', async () => {
    const engine = new FakeEngine({ parallel: 1, tokenDelayMs: 5 });
    const inference = await startInference({ fake: engine });
    const channel = createChannel(inference.address);
    const running = new AbortController();
    try {
      const client = createClient(InferenceServiceDefinition, channel);
      const streams = [0, 1].map(() =>
        drain(client.generate(generateRequest({ prompt: 'a', maxTokens: 10_000 }), { signal: running.signal })).catch(() => undefined),
      );
      await engine.whenActive(1);
      await new Promise<void>((resolve) => {
        const check = () => engine.stats().queuedRequests === 1 && (engine.off('change', check), resolve());
        engine.on('change', check);
        check();
      });
      assert.deepEqual((await client.getLoad({})).models, [
        { model: 'fake', state: ModelState.MODEL_STATE_READY, activeSequences: 1, queuedRequests: 1, capacity: 1, error: '', expertResidency: -1 },
      ]);
      running.abort();
      await Promise.all(streams);
      await engine.whenIdle();
    } finally {
      running.abort();
      channel.close();
      await inference.server.shutdown(0);
    }
  });
});
