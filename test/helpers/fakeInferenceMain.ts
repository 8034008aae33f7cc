/**
 * An inference process hosting a FakeEngine as model "fake", for tests that need a backend in another process
 * (to kill it). Same configuration and life cycle as services/inference/main.ts; FAKE_TOKEN_DELAY_MS sets the
 * engine's per-token time.
 */
import { runService } from '../../services/common/runService';
import { createInferenceServer } from '../../services/inference/createInferenceServer';
import { EngineHost } from '../../services/inference/EngineHost';
import { FakeEngine } from '../../harness/FakeEngine';

runService('inference', async (config, log) => {
  const host = new EngineHost();
  host.setReady('fake', new FakeEngine({ tokenDelayMs: Number(process.env.FAKE_TOKEN_DELAY_MS ?? 0) }));
  const server = createInferenceServer({ host, log });
  await server.listen(config.inferenceAddr);
  return async () => {
    await server.shutdown(config.shutdownGraceMs);
    await host.close();
  };
});
