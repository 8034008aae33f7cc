import { telemetry } from '../common/telemetry/register';
import { loadDescriptorSet } from '../common/loadDescriptorSet';
import { runService } from '../common/runService';
import { serverCredentials, transportSettings } from '../common/tls';
import { checkEngineBuild } from './checkEngineBuild';
import { createInferenceServer } from './createInferenceServer';
import { EngineHost } from './EngineHost';
import { FirstDecodeGuard } from './FirstDecodeGuard';
import { loadEngine } from './loadEngine';
import { resolveModelSpecs } from './resolveModelSpecs';

/**
 * The inference process: InferenceService on MOEFLASH_INFERENCE_ADDR (127.0.0.1:50061), hosting the models of
 * MOEFLASH_MODEL / MOEFLASH_MODELS. It serves (NOT_SERVING) from the start so the router sees it loading, checks
 * that the engine build runs on this CPU (the install's probe record, or a probe in a child process), then loads the
 * models one after another; if none loads, it exits 1. A failure a restart cannot fix (an engine build the CPU
 * cannot run, a model that crashed the process in its first decode before) is reported as the model's failure
 * while the process stays up, so its supervisor does not restart it in a loop.
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
    const build = await checkEngineBuild(log);
    if (!build.ok) {
      for (const spec of specs) host.setFailed(spec.name, build.reason);
      return;
    }
    const guard = new FirstDecodeGuard(config.inference.stateDir, build.build, process.env.MOEFLASH_PREVIOUS_EXIT);
    if (guard.disabled) log.warn({ reason: guard.disabled }, 'first-decode crash markers off: the state folder is not writable');
    let crashedBefore = false;
    for (const spec of specs) {
      const started = Date.now();
      const crashed = guard.crashedBefore(spec.name, spec.options.path);
      if (crashed) {
        crashedBefore = true;
        host.setFailed(spec.name, crashed);
        log.error({ model: spec.name, path: spec.options.path, reason: crashed }, 'model not loaded: it crashed the engine before');
        continue;
      }
      // load includes the warm-up decode: the first time the CPU runs this model's kernels
      guard.begin(spec.name, spec.options.path);
      // fault injection for the crash-recovery test: die as an unsupported instruction would
      if (process.env.MOEFLASH_FAILPOINT === `first-decode:${spec.name}`) process.kill(process.pid, 'SIGILL');
      try {
        const engine = await loadEngine(spec.options);
        if (host.isClosing) {
          await engine.close();
          return;
        }
        host.setReady(spec.name, engine);
        log.info({ model: spec.name, path: spec.options.path, loadMs: Date.now() - started, info: engine.info }, 'model ready');
        if (engine.info.hintChannelError) log.warn({ model: spec.name, reason: engine.info.hintChannelError }, 'serving without expert-store hints');
      } catch (err) {
        host.setFailed(spec.name, (err as Error).message);
        log.error({ model: spec.name, path: spec.options.path, err }, 'model failed to load');
      } finally {
        guard.end(spec.options.path);
      }
    }
    if (!host.list().some((m) => m.status === 'ready') && !host.isClosing && !crashedBefore) {
      log.fatal('no model loaded');
      await stop();
      process.exit(1);
    }
  })().catch(async (err: unknown) => {
    log.fatal({ err }, 'model loading failed unexpectedly');
    await stop();
    process.exit(1);
  });
  return stop;
});
