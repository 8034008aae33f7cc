import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { otlpTraceProtocol } from '../../services/common/telemetry/otlpTraceExporter';
import { repoRoot } from '../../services/engine/loadAddon';

describe('observability: OTLP protocol settings', () => {
  it('follows the specification: the traces variable, then the general one, then http/protobuf', () => {
    assert.equal(otlpTraceProtocol({}), 'http/protobuf');
    assert.equal(otlpTraceProtocol({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }), 'grpc');
    assert.equal(otlpTraceProtocol({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' }), 'http/json');
  });

  it('an unknown protocol stops the service at start, exit 2, naming the variable', async () => {
    const run = promisify(execFile);
    const err = await run(process.execPath, [join(repoRoot(), 'dist', 'services', 'router', 'main.js')], {
      env: { ...process.env, OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'carrier-pigeon', MOEFLASH_ROUTER_ADDR: '127.0.0.1:0', MOEFLASH_METRICS_ADDR: 'off' },
    }).then(
      () => assert.fail('the router started'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(err.code, 2);
    assert.match(err.stderr, /moeflash router: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: unsupported protocol 'carrier-pigeon' \(grpc, http\/protobuf, http\/json\)/);
  });
});
