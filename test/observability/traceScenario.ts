/**
 * Child process of observability.test.ts: telemetry must start before grpc-js loads, which a mocha process that
 * already ran other suites cannot guarantee. Starts telemetry (in-memory span exporter and metric reader, no
 * Prometheus), a router and an inference server in this process over a FakeEngine, runs `SCENARIO_REQUESTS`
 * Generates, then prints {spans, engineTraceIds, metrics} as one JSON line on stdout.
 */
import { startTelemetry } from '../../services/common/telemetry/startTelemetry';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { AggregationTemporality, MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';

class CollectingReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

const spans = new InMemorySpanExporter();
const reader = new CollectingReader();
const telemetry = startTelemetry({ service: 'inference', env: { MOEFLASH_METRICS_ADDR: 'off' }, spanExporters: [spans], metricReaders: [reader] });

/** What the metrics look like in the JSON: name -> list of {attributes, value | sum/count/buckets}. */
function flatten(rm: ResourceMetrics): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const scope of rm.scopeMetrics)
    for (const m of scope.metrics) out[m.descriptor.name] = m.dataPoints.map((p) => ({ attributes: p.attributes, value: p.value }));
  return out;
}

async function main(): Promise<void> {
  const { FakeEngine } = await import('../../harness/FakeEngine');
  const { startStack } = await import('../../harness/startStack');
  const { generationClient, drain, generateRequest } = await import('../../harness/grpcClients');
  const engineTraceIds: (string | undefined)[] = [];
  // The FakeEngine reports no experts nor where it sampled: add both as the real engine does, and note the trace id.
  const engine = new FakeEngine({
    finalExtra: (options) => {
      engineTraceIds.push(options.traceId);
      return { expertsPerLayer: [2, 3], sampling: 'graph' as const };
    },
  });
  const stack = await startStack({ fake: engine });
  const { client, channel } = generationClient(stack.router.address);
  const n = Number(process.env.SCENARIO_REQUESTS ?? 1);
  try {
    for (let i = 0; i < n; i++) await drain(client.generate(generateRequest({ model: 'fake', prompt: 'hello', maxTokens: 5, requestId: `req-${i}` })));
  } finally {
    channel.close();
    await stack.stop();
  }
  const { resourceMetrics } = await reader.collect();
  const finished = spans.getFinishedSpans().map((s) => ({
    name: s.name,
    kind: s.kind,
    traceId: s.spanContext().traceId,
    spanId: s.spanContext().spanId,
    parentSpanId: s.parentSpanContext?.spanId,
    attributes: s.attributes,
    events: s.events.map((e) => ({ name: e.name, attributes: e.attributes })),
    startMs: s.startTime[0] * 1e3 + s.startTime[1] / 1e6,
    endMs: s.endTime[0] * 1e3 + s.endTime[1] / 1e6,
  }));
  await telemetry.shutdown(); // (clears the in-memory exporter)
  process.stdout.write(`${JSON.stringify({ spans: finished, engineTraceIds, metrics: flatten(resourceMetrics) })}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
