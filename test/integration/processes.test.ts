import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { Status } from 'nice-grpc';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, failure, generateRequest, generationClient } from '../../harness/grpcClients';
import { spawnService } from '../../harness/spawnService';
import { routerReady, startInference, startRouter, waitFor } from '../../harness/startStack';

const dist = path.resolve(__dirname, '..', '..');
const ROUTER_MAIN = path.join(dist, 'services', 'router', 'main.js');
const FAKE_INFERENCE_MAIN = path.join(dist, 'test', 'helpers', 'fakeInferenceMain.js');
const INFERENCE_MAIN = path.join(dist, 'services', 'inference', 'main.js');
const run = promisify(execFile);

describe('services as processes', () => {
  it('a killed backend process gives UNAVAILABLE, and service resumes when it is back on the same port', async () => {
    const first = await spawnService(FAKE_INFERENCE_MAIN, { MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0', FAKE_TOKEN_DELAY_MS: '5' });
    const backend = `127.0.0.1:${first.port}`;
    const router = await startRouter([backend]);
    const { client, channel } = generationClient(router.address);
    let second: Awaited<ReturnType<typeof spawnService>> | undefined;
    try {
      await routerReady(router.router, 'fake');
      // Killed mid-stream: the tokens already sent cannot be replayed, so the stream fails rather than retries.
      let chunks = 0;
      const midStream = await failure(async (o) => {
        for await (const _ of client.generate(generateRequest({ prompt: 'a', maxTokens: 10_000 }), o))
          if (++chunks === 2) first.child.kill('SIGKILL');
      });
      assert.equal(midStream.code, Status.UNAVAILABLE);
      assert.equal(await first.exited, 'SIGKILL');
      await waitFor(router.router.pool, 'change', () => router.router.pool.candidates('fake').length === 0);
      const down = await failure((o) => drain(client.generate(generateRequest({ prompt: 'a', maxTokens: 2 }), o)));
      assert.equal(down.code, Status.UNAVAILABLE);

      second = await spawnService(FAKE_INFERENCE_MAIN, { MOEFLASH_INFERENCE_ADDR: backend });
      await routerReady(router.router, 'fake');
      assert.equal((await drain(client.generate(generateRequest({ prompt: 'a', maxTokens: 2 })))).tokens.length, 2);
    } finally {
      channel.close();
      await router.stop();
      first.child.kill('SIGKILL');
      second?.child.kill('SIGKILL');
      await second?.exited;
    }
  });

  it('the router process serves, then on SIGTERM ends what outlives the grace period with UNAVAILABLE and exits 0', async () => {
    const engine = new FakeEngine({ tokenDelayMs: 5 });
    const inference = await startInference({ fake: engine });
    const router = await spawnService(ROUTER_MAIN, {
      MOEFLASH_ROUTER_ADDR: '127.0.0.1:0',
      MOEFLASH_BACKENDS: inference.address,
      MOEFLASH_SHUTDOWN_GRACE_MS: '100',
    });
    const { client, channel } = generationClient(`127.0.0.1:${router.port}`);
    try {
      // The router routes once it has seen its backend healthy (and learnt its models, which comes first).
      await router.waitForLog((l) => l.msg === 'backend health' && l.serving === true);
      assert.equal((await drain(client.generate(generateRequest({ prompt: 'a', maxTokens: 3 })))).tokens.length, 3);

      let chunks = 0;
      const f = await failure(async (o) => {
        for await (const _ of client.generate(generateRequest({ prompt: 'a', maxTokens: 10_000 }), o))
          if (++chunks === 1) router.child.kill('SIGTERM');
      });
      assert.equal(f.code, Status.UNAVAILABLE);
      assert.equal(await router.exited, 0);
      await engine.whenIdle();
      assert.equal(engine.finals[engine.finals.length - 1].finishReason, 'cancelled');
    } finally {
      channel.close();
      router.child.kill('SIGKILL');
      await inference.server.shutdown(0);
    }
  });

  it('a service given a bad setting exits 2 naming it', async () => {
    await assert.rejects(run(process.execPath, [ROUTER_MAIN, '--max-in-flight', '0'], { env: { ...process.env, MOEFLASH_BACKENDS: 'nohost' } }), (err: { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr ?? '', /--max-in-flight \(MOEFLASH_ROUTER_MAX_IN_FLIGHT\): must be an integer in \[1, /);
      assert.match(err.stderr ?? '', /--backends \(MOEFLASH_BACKENDS\): must be host:port, got 'nohost'/);
      return true;
    });
  });

  it('the inference process serves while loading, and exits 1 when no model loads', async () => {
    const inference = await spawnService(INFERENCE_MAIN, { MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0', MOEFLASH_MODEL: '/nonexistent/missing-model.gguf' });
    try {
      assert.equal(await inference.exited, 1);
      const failed = inference.logs.find((l) => l.msg === 'model failed to load');
      assert.equal(failed?.model, 'missing-model');
      assert.ok(inference.logs.some((l) => l.msg === 'no model loaded'));
    } finally {
      inference.child.kill('SIGKILL');
    }
  });
});
