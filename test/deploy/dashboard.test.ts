/**
 * The Grafana dashboard (deploy/grafana/moeflash-dashboard.json) parses and every metric its queries use is one the
 * services export: checked against live /metrics scrapes of a router, an inference process (real engine, expert
 * cache on, hints to an expert-store) and that expert-store, after traffic that exercises each series (one call
 * refused, so the refusals counter exists).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { repoRoot } from '../../services/engine/loadAddon';
import { spawnExpertStore, type SpawnedExpertStore } from '../expert-store/spawnExpertStore';
import { until } from '../expert-store/writeTestGguf';
import { drain, failure, generateRequest, generationClient } from '../../harness/grpcClients';
import { spawnService, type SpawnedService } from '../../harness/spawnService';
import { testModel } from '../../harness/testModels';
import { freePort } from '../helpers/freePort';

interface Dashboard {
  panels: { title: string; targets: { expr: string }[] }[];
}

/**
 * Metric names a PromQL expression reads: the identifiers in the services' namespaces (gen_ai_*, moeflash_*) that
 * are not label names (inside braces or by/without lists), histogram suffixes dropped.
 */
export function metricsOf(expr: string): string[] {
  const outsideLabels = expr.replace(/\{[^}]*\}/g, ' ').replace(/\b(by|without)\s*\([^)]*\)/g, ' ');
  const names = [...outsideLabels.matchAll(/\b((?:gen_ai|moeflash)_[a-z0-9_]+)\b/g)].map((m) => m[1]);
  return [...new Set(names.map((n) => n.replace(/_(bucket|sum|count)$/, '')))];
}

/** Metric family names of a Prometheus text exposition (# TYPE lines; _total kept as exported). */
function families(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.add(m[2] === 'counter' && !m[1].endsWith('_total') ? `${m[1]}_total` : m[1]);
  // counters are exposed with their _total samples
  for (const m of text.matchAll(/^([a-z_][a-z0-9_]*_total)[{ ]/gm)) out.add(m[1]);
  return out;
}

describe('deploy: the Grafana dashboard', function () {
  const dashboard = JSON.parse(readFileSync(join(repoRoot(), 'deploy', 'grafana', 'moeflash-dashboard.json'), 'utf8')) as Dashboard;
  const dir = mkdtempSync(join(tmpdir(), 'moeflash-dash-'));
  const hintChannel = `moeflash-test-dash-${process.pid}`;
  const ports = { router: 0, inference: 0, store: 0 };
  let inference: SpawnedService | undefined;
  let router: SpawnedService | undefined;
  let store: SpawnedExpertStore | undefined;

  before(async () => {
    for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
    const model = await testModel('tiny');
    const modelsFile = join(dir, 'models.json');
    writeFileSync(modelsFile, JSON.stringify({ tiny: { path: model, options: { hintChannel, threads: 1, parallel: 1, contextSize: 256, expertCache: { slots: 4 } } } }));
    inference = await spawnService(join(repoRoot(), 'dist', 'services', 'inference', 'main.js'), {
      MOEFLASH_MODELS: modelsFile,
      MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0',
      MOEFLASH_METRICS_ADDR: `127.0.0.1:${ports.inference}`,
    });
    await inference.waitForLog((l) => l.msg === 'model ready');
    store = await spawnExpertStore(model, join(dir, 'state'), hintChannel, { MOEFLASH_WARM_ON_START: 'none', MOEFLASH_EXPERT_STORE_HTTP_ADDR: `127.0.0.1:${ports.store}` });
    await until('the expert-store to attach', async () => (await store!.client.stats({})).hintChannelAttached, 20_000);
    // One call at a time and no queue, so that a second concurrent call is refused.
    router = await spawnService(join(repoRoot(), 'dist', 'services', 'router', 'main.js'), {
      MOEFLASH_ROUTER_ADDR: '127.0.0.1:0',
      MOEFLASH_BACKENDS: `127.0.0.1:${inference.port}`,
      MOEFLASH_METRICS_ADDR: `127.0.0.1:${ports.router}`,
      MOEFLASH_ROUTER_MAX_IN_FLIGHT: '1',
      MOEFLASH_ROUTER_MAX_QUEUED: '0',
    });
    await router.waitForLog((l) => l.msg === 'backend health' && l.serving === true);
    const { client, channel } = generationClient(`127.0.0.1:${router.port}`);
    try {
      const long = drain(client.generate(generateRequest({ model: 'tiny', prompt: 'The quick brown fox', maxTokens: 64, sampling: { temperature: 0 } })));
      await until('the first call to be admitted', async () => (await fetch(`http://127.0.0.1:${ports.router}/metrics`).then((r) => r.text())).includes('moeflash_router_in_flight{server_address'), 10_000);
      await failure((o) => drain(client.generate(generateRequest({ model: 'tiny', prompt: 'refused', maxTokens: 4 }), o)));
      await long;
    } finally {
      channel.close();
    }
    await until('the store to see the routing', async () => Number((await store!.client.stats({})).hintsReceived) > 0, 10_000);
  });

  after(async () => {
    for (const s of [router, inference, store?.service]) {
      if (s && s.child.exitCode === null && s.child.signalCode === null) {
        s.child.kill('SIGTERM');
        await s.exited;
      }
    }
    store?.channel.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('queries only metrics that the router, inference and expert-store export', async () => {
    const exported = new Set<string>();
    for (const port of Object.values(ports)) for (const name of families(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text())) exported.add(name);
    const used = dashboard.panels.flatMap((p) => p.targets.flatMap((t) => metricsOf(t.expr).map((m) => ({ panel: p.title, metric: m }))));
    assert.ok(used.length >= 14, `the dashboard reads ${used.length} metrics`);
    // the check can fail: a metric no service exports is caught
    assert.ok(!exported.has(metricsOf('rate(moeflash_router_nonexistent_total[5m])')[0]));
    const missing = used.filter((u) => !exported.has(u.metric));
    assert.deepEqual(missing, [], `exported: ${[...exported].sort().join(', ')}`);
  });
});
