import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename } from 'node:path';

import type { Logger } from 'pino';

import type { ExpertStore } from './ExpertStore';
import { heatMapViewOf, renderHeatMapSvg } from './renderHeatMapSvg';

export interface ExpertStoreHttp {
  server: Server;
  /** host:port actually bound. */
  address: string;
  close(): Promise<void>;
}

/** The store's counters in the Prometheus text format. */
function metricsText(store: ExpertStore): string {
  const s = store.stats();
  const h = s.hints;
  const lines: string[] = [];
  const metric = (name: string, type: 'counter' | 'gauge', help: string, value: number) =>
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`);
  metric('moeflash_expert_store_warm_requests_total', 'counter', 'Warm calls served.', s.warmRequests);
  metric('moeflash_expert_store_warmed_bytes_total', 'counter', 'Bytes read by warm-ups.', s.bytesWarmed);
  metric('moeflash_expert_store_evicted_bytes_total', 'counter', 'Bytes evicted.', s.bytesEvicted);
  metric('moeflash_expert_store_routing_observations_total', 'counter', 'Routing observations in the heat map.', s.routingObservations);
  metric('moeflash_expert_store_hint_channel_attached', 'gauge', 'Whether the hint channel is attached.', h?.attached ? 1 : 0);
  metric('moeflash_expert_store_hints_received_total', 'counter', 'Valid hint records received.', h?.hints ?? 0);
  metric('moeflash_expert_store_hints_dropped_total', 'counter', 'Hint records overwritten before they were read.', h?.dropped ?? 0);
  metric('moeflash_expert_store_hints_malformed_total', 'counter', 'Hint records rejected.', h?.malformed ?? 0);
  metric('moeflash_expert_store_prefetched_experts_total', 'counter', 'Experts read ahead because of hints.', h?.prefetchedExperts ?? 0);
  metric('moeflash_expert_store_prefetched_bytes_total', 'counter', 'Bytes read ahead because of hints.', h?.prefetchedBytes ?? 0);
  metric('moeflash_expert_store_prefetch_useful_total', 'counter', 'Prefetched experts a later hint used.', h?.useful ?? 0);
  metric('moeflash_expert_store_prefetch_late_total', 'counter', 'Hints for experts still being prefetched.', h?.late ?? 0);
  return `${lines.join('\n')}\n`;
}

/**
 * The expert-store's HTTP endpoint (loopback by default): /heatmap.svg (layers x experts, colour = use, dot =
 * resident), /heatmap.json, /metrics (Prometheus text: the OpenTelemetry exporter's when given, else the store's
 * counters) and /healthz.
 */
export async function startExpertStoreHttp(
  store: ExpertStore | undefined,
  address: string,
  log: Logger,
  /** Serves /metrics instead of the built-in text: the process's OpenTelemetry Prometheus exporter. */
  metricsHandler?: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<ExpertStoreHttp> {
  const m = /^(.*):(\d+)$/.exec(address);
  if (!m) throw new Error(`HTTP address must be host:port, got '${address}'`);
  const host = m[1].replace(/^\[(.*)\]$/, '$1');
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/metrics' && metricsHandler) {
      metricsHandler(req, res);
      return;
    }
    if (!store) {
      res.writeHead(503, { 'content-type': 'text/plain' }).end('no model configured\n');
      return;
    }
    if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metricsText(store));
      return;
    }
    if (path === '/heatmap.svg' || path === '/heatmap.json') {
      const [heat, residency] = [store.heatReport(), await store.residency()];
      if (path === '/heatmap.json') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ heat, residency }));
        return;
      }
      const title = `${store.index.name} (${basename(store.index.modelPath)}): ${(residency.residentFraction * 100).toFixed(1)}% of expert bytes resident`;
      res.writeHead(200, { 'content-type': 'image/svg+xml', 'cache-control': 'no-store' }).end(renderHeatMapSvg(heatMapViewOf(heat, residency, title)));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /heatmap.svg, /heatmap.json, /metrics\n');
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err }, 'http request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error; see the server log\n');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(m[2]), host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const boundAddress = `${host.includes(':') ? `[${host}]` : host}:${bound.port}`;
  log.info({ http: boundAddress }, 'http endpoint (heatmap.svg, metrics) listening');
  return {
    server,
    address: boundAddress,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
