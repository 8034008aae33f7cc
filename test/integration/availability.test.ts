import assert from 'node:assert/strict';
import { Status } from 'nice-grpc';
import { UnavailableError } from '../../services/common/errors';
import type { GenerateOptions, GenerationEvent } from '../../services/engine/types';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, failure, generateRequest, generationClient } from '../../harness/grpcClients';
import { routerReady, startInference, startRouter, TEST_ROUTER_CONFIG, waitFor } from '../../harness/startStack';

/** A FakeEngine that fails with UNAVAILABLE: before its first token, or after `afterTokens` of them. */
class FlakyEngine extends FakeEngine {
  calls = 0;
  constructor(private readonly afterTokens = 0) {
    super();
  }
  override generate(options: GenerateOptions): AsyncIterable<GenerationEvent> {
    this.calls++;
    const inner = super.generate({ ...options, maxTokens: 100 });
    const after = this.afterTokens;
    return (async function* () {
      let n = 0;
      for await (const event of inner) {
        if (n++ >= after) throw new UnavailableError('flaky backend');
        yield event;
      }
    })();
  }
}

/** Two inference backends serving "fake" (the first one flaky) behind a router that routes to both. */
async function twoBackends(flaky: FlakyEngine, good: FakeEngine) {
  const a = await startInference({ fake: flaky });
  const b = await startInference({ fake: good });
  const router = await startRouter([a.address, b.address]);
  const { client, channel } = generationClient(router.address);
  return {
    router: router.router,
    client,
    async stop() {
      channel.close();
      await router.stop();
      await a.server.shutdown(0);
      await b.server.shutdown(0);
    },
  };
}

describe('backend availability', () => {
  it('a stopped backend gives UNAVAILABLE, and service resumes when it returns on the same port', async () => {
    const first = await startInference({ fake: new FakeEngine() });
    const router = await startRouter([first.address]);
    const { client, channel } = generationClient(router.address);
    try {
      await routerReady(router.router, 'fake');
      assert.equal((await drain(client.generate(generateRequest({ prompt: 'a', maxTokens: 2 })))).tokens.length, 2);

      // Abruptly, like a crash: connections cut, no goodbye.
      first.server.server.forceShutdown();
      await waitFor(router.router.pool, 'change', () => router.router.pool.candidates('fake').length === 0);
      const down = await failure((o) => drain(client.generate(generateRequest({ prompt: 'a', maxTokens: 2 }), o)));
      assert.equal(down.code, Status.UNAVAILABLE);
      // when to look again (a backend may be starting: scaled up from zero, loading, warming)
      assert.equal(down.statusDetails?.retryDelayMs, TEST_ROUTER_CONFIG.retryAfterMs);

      const second = await startInference({ fake: new FakeEngine() }, first.port);
      try {
        await routerReady(router.router, 'fake');
        assert.equal((await drain(client.generate(generateRequest({ prompt: 'a', maxTokens: 2 })))).tokens.length, 2);
      } finally {
        await second.server.shutdown(0);
      }
    } finally {
      channel.close();
      await router.stop();
    }
  });

  it('UNAVAILABLE before the first token is retried on another backend', async () => {
    const flaky = new FlakyEngine(0);
    const { router, client, stop } = await twoBackends(flaky, new FakeEngine());
    try {
      for (let i = 0; i < 5 && flaky.calls === 0; i++) {
        await routerReady(router, 'fake', 2);
        const { tokens } = await drain(client.generate(generateRequest({ prompt: 'a', maxTokens: 3 })));
        assert.equal(tokens.length, 3);
      }
      assert.ok(flaky.calls > 0, 'the flaky backend was never tried');
    } finally {
      await stop();
    }
  });

  it('UNAVAILABLE after the first token is not retried', async () => {
    const flaky = new FlakyEngine(2);
    const good = new FakeEngine();
    const { router, client, stop } = await twoBackends(flaky, good);
    try {
      let failed = false;
      // Whichever backend a request lands on, one that reaches the flaky one must fail there and go nowhere else.
      for (let i = 0; i < 5 && !failed; i++) {
        await routerReady(router, 'fake', 2);
        const before = { flaky: flaky.calls, good: good.stats().totalRequests };
        const tokens: number[] = [];
        try {
          for await (const r of client.generate(generateRequest({ prompt: 'a', maxTokens: 50 })))
            if (r.event?.$case === 'chunk') tokens.push(...r.event.value.tokenIds);
        } catch (err) {
          failed = true;
          assert.equal((err as { code?: Status }).code, Status.UNAVAILABLE);
          assert.equal(tokens.length, 2);
          assert.equal(flaky.calls, before.flaky + 1);
          assert.equal(good.stats().totalRequests, before.good);
        }
      }
      assert.ok(failed, 'no request reached the flaky backend');
    } finally {
      await stop();
    }
  });
});
