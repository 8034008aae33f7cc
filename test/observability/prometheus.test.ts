import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { repoRoot } from '../../services/engine/loadAddon';
import { spawnExpertStore, type SpawnedExpertStore } from '../expert-store/spawnExpertStore';
import { drain, generateRequest, generationClient } from '../../harness/grpcClients';
import { spawnService, type SpawnedService } from '../../harness/spawnService';
import { testModel } from '../../harness/testModels';
import { freePort } from '../helpers/freePort';

const PROMETHEUS = '/usr/bin/prometheus';

/** A port free right now on 127.0.0.1 (for endpoints that cannot report the port they bound). */
/** Re-checks `check` until it returns a value, within `ms` (Prometheus scrapes on its own clock). */
async function poll<T>(what: string, check: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 100)); // poll interval, not synchronisation: the deadline bounds it
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await exited;
}

describe('observability: a real Prometheus scrapes router, inference and expert-store', function () {
  if (!existsSync(PROMETHEUS)) {
    it.skip(`${PROMETHEUS} is missing: run scripts/install-system-deps.sh`);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'moeflash-prom-'));
  const ports = { router: 0, inference: 0, expertStore: 0, prometheus: 0 };
  let inference: SpawnedService;
  let router: SpawnedService;
  let store: SpawnedExpertStore;
  let prometheus: ChildProcess;

  before(async () => {
    for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
    inference = await spawnService(join(repoRoot(), 'dist', 'test', 'observability', 'tracedInferenceMain.js'), {
      MOEFLASH_SERVICE: 'inference',
      MOEFLASH_INFERENCE_ADDR: '127.0.0.1:0',
      MOEFLASH_METRICS_ADDR: `127.0.0.1:${ports.inference}`,
    });
    router = await spawnService(join(repoRoot(), 'dist', 'services', 'router', 'main.js'), {
      MOEFLASH_ROUTER_ADDR: '127.0.0.1:0',
      MOEFLASH_BACKENDS: `127.0.0.1:${inference.port}`,
      MOEFLASH_METRICS_ADDR: `127.0.0.1:${ports.router}`,
    });
    store = await spawnExpertStore(await testModel('tiny'), join(dir, 'state'), 'off', {
      MOEFLASH_EXPERT_STORE_HTTP_ADDR: `127.0.0.1:${ports.expertStore}`,
      MOEFLASH_WARM_ON_START: 'none',
    });
    const config = join(dir, 'prometheus.yml');
    const targets = [ports.router, ports.inference, ports.expertStore].map((p) => `'127.0.0.1:${p}'`).join(', ');
    writeFileSync(config, `global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\nscrape_configs:\n  - job_name: moeflash\n    static_configs:\n      - targets: [${targets}]\n`);
    prometheus = spawn(PROMETHEUS, [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${ports.prometheus}`], {
      stdio: 'ignore',
    });
  });

  after(async () => {
    await Promise.all([prometheus && stopChild(prometheus), router && stopChild(router.child), inference && stopChild(inference.child), store && stopChild(store.service.child)]);
    store?.channel.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function query(promql: string): Promise<{ metric: Record<string, string>; value: [number, string] }[] | undefined> {
    const res = await fetch(`http://127.0.0.1:${ports.prometheus}/api/v1/query?query=${encodeURIComponent(promql)}`);
    if (!res.ok) return undefined;
    const body = (await res.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    return body.data.result;
  }

  it('PromQL returns the GenAI, router, engine and expert-store series after a Generate', async () => {
    const { client, channel } = generationClient(`127.0.0.1:${router.port}`);
    try {
      // the router may not have seen the backend's health yet: retry the first call briefly
      await poll('a Generate through the router', async () => (await drain(client.generate(generateRequest({ model: 'fake', prompt: 'hi', maxTokens: 4 })))) ?? true, 10_000);
    } finally {
      channel.close();
    }
    const up = await poll('all three targets up', async () => {
      const r = await query('up{job="moeflash"} == 1');
      return r && r.length === 3 ? r : undefined;
    });
    assert.equal(up.length, 3);
    const count = await poll('gen_ai_server_request_duration_count', async () => {
      const r = await query('sum(gen_ai_server_request_duration_count{gen_ai_request_model="fake"})');
      return r && r.length === 1 && Number(r[0].value[1]) >= 1 ? Number(r[0].value[1]) : undefined;
    });
    assert.equal(count, 1);
    const tokens = await poll('gen_ai_client_token_usage_sum', async () => {
      const r = await query('gen_ai_client_token_usage_sum{gen_ai_token_type="output"}');
      return r && r.length === 1 ? Number(r[0].value[1]) : undefined;
    });
    assert.equal(tokens, 4);
    for (const series of ['moeflash_router_queue_depth', 'moeflash_engine_active_sequences', 'moeflash_expert_store_hints_received_total', 'moeflash_expert_store_resident_ratio']) {
      const r = await poll(series, async () => {
        const v = await query(series);
        return v && v.length > 0 ? v : undefined;
      });
      assert.ok(r.length >= 1, series);
    }
  });
});
