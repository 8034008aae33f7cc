/**
 * An inference process hosting a FakeEngine as model "fake", with telemetry on (MOEFLASH_SERVICE=inference,
 * MOEFLASH_METRICS_ADDR, OTEL_*): what services/inference/main.ts does, without a real model.
 */
import '../../services/common/telemetry/register';
import { runService } from '../../services/common/runService';
import { createInferenceServer } from '../../services/inference/createInferenceServer';
import { EngineHost } from '../../services/inference/EngineHost';
import { FakeEngine } from '../../harness/FakeEngine';

runService('inference', async (config, log) => {
  const host = new EngineHost();
  host.setReady('fake', new FakeEngine());
  const server = createInferenceServer({ host, log });
  await server.listen(config.inferenceAddr);
  return async () => {
    await server.shutdown(config.shutdownGraceMs);
    await host.close();
  };
});
