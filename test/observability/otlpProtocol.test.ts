import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { otlpProtocol } from '../../services/common/telemetry/otlpExporters';
import { repoRoot } from '../../services/engine/loadAddon';

describe('observability: OTLP protocol settings', () => {
  it("follows the specification: the signal's variable, then the general one, then http/protobuf", () => {
    for (const signal of ['traces', 'metrics'] as const) {
      const own = `OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_PROTOCOL`;
      assert.equal(otlpProtocol({}, signal), 'http/protobuf');
      assert.equal(otlpProtocol({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, signal), 'grpc');
      assert.equal(otlpProtocol({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', [own]: 'http/json' }, signal), 'http/json');
    }
    // one signal's variable leaves the other alone
    assert.equal(otlpProtocol({ OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'grpc' }, 'traces'), 'http/protobuf');
  });

  /** Starts the router with `env` added and returns how it failed. */
  async function routerFailure(env: Record<string, string>): Promise<{ code: number; stderr: string }> {
    const run = promisify(execFile);
    return run(process.execPath, [join(repoRoot(), 'dist', 'services', 'router', 'main.js')], {
      env: { ...process.env, MOEFLASH_ROUTER_ADDR: '127.0.0.1:0', MOEFLASH_METRICS_ADDR: 'off', ...env },
    }).then(
      () => assert.fail('the router started'),
      (e: { code: number; stderr: string }) => e,
    );
  }

  it('an unknown protocol or exporter stops the service at start, exit 2, naming the variable', async () => {
    const traces = await routerFailure({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'carrier-pigeon' });
    assert.equal(traces.code, 2);
    assert.match(traces.stderr, /moeflash router: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: unsupported protocol 'carrier-pigeon' \(grpc, http\/protobuf, http\/json\)/);
    const metrics = await routerFailure({ OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'smoke-signals' });
    assert.equal(metrics.code, 2);
    assert.match(metrics.stderr, /moeflash router: OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol 'smoke-signals'/);
    const exporter = await routerFailure({ OTEL_METRICS_EXPORTER: 'statsd' });
    assert.match(exporter.stderr, /OTEL_METRICS_EXPORTER: unsupported exporter 'statsd' \(otlp, prometheus, console, none\)/);
  });
});
