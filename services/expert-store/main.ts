import { telemetry } from '../common/telemetry/register';
import { loadDescriptorSet } from '../common/loadDescriptorSet';
import { runService } from '../common/runService';
import { serverCredentials, transportSettings } from '../common/tls';
import { createExpertStoreServer } from './createExpertStoreServer';
import { ExpertStore } from './ExpertStore';
import { ExpertStoreMetrics } from './metrics';
import { PrefetchSpans } from './PrefetchSpans';
import { readyAfterWarm } from './readyAfterWarm';
import { traceWarm } from './traceWarm';
import { expertStoreSettings } from './expertStoreSettings';
import { startExpertStoreHttp, type ExpertStoreHttp } from './startExpertStoreHttp';

/**
 * The expert-store process: gRPC on MOEFLASH_EXPERT_STORE_ADDR (127.0.0.1:50071) for the model MOEFLASH_MODEL
 * (--model), heat maps under MOEFLASH_STATE_DIR, the heat map SVG and metrics on MOEFLASH_EXPERT_STORE_HTTP_ADDR
 * (127.0.0.1:9466), hints from the engine's shared-memory channel. Warms from the heat map on start.
 */
runService('expert-store', async (config, log) => {
  const settings = expertStoreSettings();
  const transport = transportSettings();
  const modelPath = config.inference.model;
  let store: ExpertStore | undefined;
  if (modelPath) {
    store = await ExpertStore.open({
      modelPath,
      stateDir: settings.stateDir,
      log,
      hintChannel: settings.hintChannel,
      ioMode: settings.ioMode,
      queueDepth: settings.queueDepth,
      halfLifeMs: settings.halfLifeMs,
      budgetBytes: settings.budgetBytes,
      headroomBytes: settings.headroomBytes,
    });
    const { index } = store;
    log.info(
      { model: index.modelPath, files: index.files.length, layers: index.nLayer, experts: index.nExpert, expertBytes: index.expertBytes, hintChannel: store.hintChannel || 'off', heatMap: store.heatMapPath },
      'expert index ready',
    );
  } else {
    log.warn('no model configured (MOEFLASH_MODEL or --model): serving health and Stats only');
  }
  const server = createExpertStoreServer({ log, store, descriptorSet: loadDescriptorSet() });
  let http: ExpertStoreHttp | undefined;
  if (store && telemetry.prometheus) ExpertStoreMetrics(store);
  const hinted = store?.hintChannel ? store : undefined;
  const prefetchSpans = hinted && PrefetchSpans(() => hinted.hintStats(), { intervalMs: settings.prefetchSpanIntervalMs });
  // The OpenTelemetry Prometheus exporter has no server of its own here: this HTTP server serves its /metrics.
  const prometheus = telemetry.prometheus;
  if (settings.httpAddr) http = await startExpertStoreHttp(store, settings.httpAddr, log, prometheus && ((req, res) => prometheus.getMetricsRequestHandler(req, res)));
  await server.listen(config.expertStoreAddr, serverCredentials(transport.server));
  if (transport.healthAddr) await server.listenHealth(transport.healthAddr);

  const warmAbort = new AbortController();
  if (store && settings.warmOnStart !== 'none') {
    const started = Date.now();
    const warming = store;
    // Not ready while the startup warm runs, up to the budget: the pod joins the Service (and the router) warm.
    const gate = settings.warmReadyBudgetMs > 0 ? readyAfterWarm(server, settings.warmReadyBudgetMs, log) : undefined;
    void (async () => {
      let last;
      for await (const p of traceWarm(warming.warm({ onlyUsed: settings.warmOnStart === 'heat' }, warmAbort.signal), { trigger: 'startup' })) last = p;
      log.info({ bytes: last?.bytesDone, experts: last?.expertsWarmed, ms: Date.now() - started, ioMode: last?.ioMode, budget: last?.budgetBytes }, 'startup warm done');
    })()
      .catch((err: unknown) => {
        if (!warmAbort.signal.aborted) log.error({ err }, 'startup warm failed');
      })
      .finally(() => gate?.ready('startup warm done'));
  }

  return async () => {
    warmAbort.abort();
    await server.shutdown(config.shutdownGraceMs);
    await http?.close();
    prefetchSpans?.stop(); // the last batch, while the consumer and the exporters still run
    await store?.close();
    await telemetry.shutdown();
  };
});
