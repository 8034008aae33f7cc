import { telemetry } from '../common/telemetry/register';
import { loadDescriptorSet } from '../common/loadDescriptorSet';
import { runService } from '../common/runService';
import { serverCredentials, transportSettings } from '../common/tls';
import { createInferenceServer } from './createInferenceServer';
import { EngineHost } from './EngineHost';
import { loadEngine } from './loadEngine';
import { resolveModelSpecs } from './resolveModelSpecs';

/**
 * The inference process: InferenceService on MOEFLASH_INFERENCE_ADDR (127.0.0.1:50061), hosting the models of
 * MOEFLASH_MODEL / MOEFLASH_MODELS. It serves (NOT_SERVING) from the start so the router sees it loading, then
 * loads the models one after another; if none loads, it exits 1.
 */
runService('inference', async (config, log) => {
  const specs = resolveModelSpecs(config.inference);
  const transport = transportSettings();
  const host = new EngineHost();
  for (const spec of specs) host.setLoading(spec.name);
  const server = createInferenceServer({ host, log, descriptorSet: loadDescriptorSet() });
  await server.listen(config.inferenceAddr, serverCredentials(transport.server));
  if (transport.healthAddr) await server.listenHealth(transport.healthAddr);
  const stop = async () => {
    await server.shutdown(config.shutdownGraceMs);
    await host.close();
    await telemetry.shutdown();
  };
  void (async () => {
    for (const spec of specs) {
      const started = Date.now();
      try {
        const engine = await loadEngine(spec.options);
        if (host.isClosing) {
          await engine.close();
          return;
        }
        host.setReady(spec.name, engine);
        log.info({ model: spec.name, path: spec.options.path, loadMs: Date.now() - started, info: engine.info }, 'model ready');
      } catch (err) {
        host.setFailed(spec.name, (err as Error).message);
        log.error({ model: spec.name, path: spec.options.path, err }, 'model failed to load');
      }
    }
    if (!host.list().some((m) => m.status === 'ready') && !host.isClosing) {
      log.fatal('no model loaded');
      await stop();
      process.exit(1);
    }
  })();
  return stop;
});
