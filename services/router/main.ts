import { telemetry } from '../common/telemetry/register';
import { loadDescriptorSet } from '../common/loadDescriptorSet';
import { runService } from '../common/runService';
import { backendCredentials, serverCredentials, transportSettings } from '../common/tls';
import { createRouterServer } from './createRouterServer';

/** The router process: GenerationService on MOEFLASH_ROUTER_ADDR (127.0.0.1:50051) over MOEFLASH_BACKENDS. */
runService('router', async (config, log) => {
  const transport = transportSettings();
  const router = createRouterServer({ log, config: config.router, descriptorSet: loadDescriptorSet(), backendCredentials: backendCredentials(transport.backend) });
  await router.listen(config.routerAddr, serverCredentials(transport.server));
  if (transport.healthAddr) await router.listenHealth(transport.healthAddr);
  const { backends, maxInFlightPerBackend, maxQueued } = config.router;
  log.info({ backends, maxInFlightPerBackend: maxInFlightPerBackend ?? 'reported capacity', maxQueued }, 'routing');
  return async () => {
    await router.shutdown(config.shutdownGraceMs);
    router.close();
    await telemetry.shutdown();
  };
});
