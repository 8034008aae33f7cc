import { metrics, trace, type Meter, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';

import { otlpMetricExporter, otlpTraceExporter } from './otlpExporters';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ConsoleMetricExporter, MeterProvider, PeriodicExportingMetricReader, type MetricReader } from '@opentelemetry/sdk-metrics';
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  NodeTracerProvider,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-node';
import { traceJoiningIdGenerator } from './traceJoiningIdGenerator';

/** The services that run telemetry, and their default Prometheus endpoints (shared/INTERFACES.md). */
export const METRICS_PORTS = { router: 9464, inference: 9465, 'expert-store': 9466 } as const;
export type TelemetryService = keyof typeof METRICS_PORTS;

/**
 * Health checks and load polls run every few hundred ms: tracing them would bury the requests. ListRecentRequests
 * is how one looks at requests (trace-summary): tracing it would add a trace per look.
 */
const UNTRACED_GRPC_METHODS = ['Check', 'Watch', 'GetLoad', 'ServerReflectionInfo', 'ListRecentRequests'];

export interface TelemetryOptions {
  service: TelemetryService;
  env?: NodeJS.ProcessEnv;
  /** Extra span exporters (tests: an in-memory one), each behind a SimpleSpanProcessor. */
  spanExporters?: SpanExporter[];
  /** Extra metric readers (tests: an in-memory one). */
  metricReaders?: MetricReader[];
  /**
   * Serve the Prometheus text from an existing HTTP server (the expert-store's) instead of the exporter's own:
   * the exporter is created without a server, and `prometheus.getMetricsRequestHandler` answers /metrics.
   */
  prometheusWithoutServer?: boolean;
}

export interface Telemetry {
  readonly serviceName: string;
  readonly tracer: Tracer;
  readonly meter: Meter;
  /** Undefined when MOEFLASH_METRICS_ADDR=off or OTEL_METRICS_EXPORTER leaves prometheus out. */
  readonly prometheus?: PrometheusExporter;
  /** host:port the Prometheus exporter serves (or would serve, without its own server). */
  readonly metricsAddress?: string;
  /** Which trace exporters OTEL_TRACES_EXPORTER configured ([] for none). */
  readonly traceExporters: string[];
  /** Which metric exporters OTEL_METRICS_EXPORTER configured ([] for none). */
  readonly metricExporters: string[];
  /** Flushes pending spans and stops the exporters. Idempotent. */
  shutdown(): Promise<void>;
}

/** A comma-separated OTEL_*_EXPORTER list without 'none'; an exporter not in `known` is an error naming the variable. */
function exporterList(env: NodeJS.ProcessEnv, name: string, fallback: string, known: readonly string[]): string[] {
  const kinds = (env[name] || fallback)
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s && s !== 'none');
  for (const kind of kinds) if (!known.includes(kind)) throw new Error(`${name}: unsupported exporter '${kind}' (${[...known, 'none'].join(', ')})`);
  return kinds;
}

function positiveMs(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms <= 0) throw new Error(`${name}: expected a positive number of milliseconds, got '${raw}'`);
  return ms;
}

function parseHostPort(value: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(value);
  if (!m) throw new Error(`MOEFLASH_METRICS_ADDR must be host:port or 'off', got '${value}'`);
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}

/**
 * Starts OpenTelemetry for one service process, from the standard OTEL_* variables only:
 * OTEL_SERVICE_NAME (default moeflash-<service>), OTEL_TRACES_EXPORTER (otlp | console | none, comma-separated;
 * default none), OTEL_METRICS_EXPORTER (prometheus | otlp | console | none; default prometheus, where the
 * specification says otlp: a scrape needs no collector), OTEL_EXPORTER_OTLP_PROTOCOL / _TRACES_PROTOCOL /
 * _METRICS_PROTOCOL (grpc, http/protobuf or http/json; default http/protobuf), OTEL_EXPORTER_OTLP_ENDPOINT and the
 * per-signal endpoints (read by the exporters), OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT, OTEL_TRACES_SAMPLER / _ARG
 * (read by the SDK). W3C trace context propagates through instrumentation-grpc's client and server spans. The
 * Prometheus exporter serves on loopback (shared/INTERFACES.md ports; MOEFLASH_METRICS_ADDR=host:port overrides,
 * 'off' disables).
 *
 * Must run before @grpc/grpc-js is first required, or gRPC calls are not traced: load it through the service's
 * `register` module (each main.ts's first import). OTLP exporters are required lazily for the same reason.
 */
export function startTelemetry(options: TelemetryOptions): Telemetry {
  const env = options.env ?? process.env;
  const serviceName = env.OTEL_SERVICE_NAME || `moeflash-${options.service}`;
  const resource = resourceFromAttributes({ 'service.name': serviceName, 'service.namespace': 'moeflash' });

  const readers: MetricReader[] = [...(options.metricReaders ?? [])];
  const metricExporters = exporterList(env, 'OTEL_METRICS_EXPORTER', 'prometheus', ['otlp', 'prometheus', 'console']);
  const metricsAddr = env.MOEFLASH_METRICS_ADDR ?? `127.0.0.1:${METRICS_PORTS[options.service]}`;
  let prometheus: PrometheusExporter | undefined;
  let metricsAddress: string | undefined;
  if (metricExporters.includes('prometheus') && metricsAddr !== 'off') {
    const { host, port } = parseHostPort(metricsAddr);
    prometheus = new PrometheusExporter({ host, port, preventServerStart: options.prometheusWithoutServer ?? false, withoutScopeInfo: true });
    metricsAddress = metricsAddr;
    readers.push(prometheus);
  }
  // OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT as the specification names them (60 s / 30 s by default)
  const interval = positiveMs(env, 'OTEL_METRIC_EXPORT_INTERVAL', 60_000);
  const timeout = Math.min(interval, positiveMs(env, 'OTEL_METRIC_EXPORT_TIMEOUT', 30_000));
  for (const kind of metricExporters.filter((k) => k !== 'prometheus')) {
    const exporter = kind === 'otlp' ? otlpMetricExporter(env) : new ConsoleMetricExporter();
    readers.push(new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: interval, exportTimeoutMillis: timeout }));
  }
  const meterProvider = new MeterProvider({ resource, readers });
  metrics.setGlobalMeterProvider(meterProvider);

  // Before grpc-js loads: instrumentation-grpc patches it as it is required. Its spans go to the global tracer
  // provider, registered below once the (grpc-js based) OTLP exporter may be loaded.
  registerInstrumentations({
    meterProvider,
    instrumentations: [new GrpcInstrumentation({ ignoreGrpcMethods: UNTRACED_GRPC_METHODS })],
  });

  const traceExporters = exporterList(env, 'OTEL_TRACES_EXPORTER', 'none', ['otlp', 'console']);
  const processors: SpanProcessor[] = (options.spanExporters ?? []).map((e) => new SimpleSpanProcessor(e));
  for (const kind of traceExporters) {
    if (kind === 'console') processors.push(new SimpleSpanProcessor(new ConsoleSpanExporter()));
    else processors.push(new BatchSpanProcessor(otlpTraceExporter(env)));
  }
  // Always registered, exporter or not: trace ids still reach the logs and the expert-store hint records.
  // The joining id generator lets the expert-store put its spans into a request's trace (startSpanInTrace).
  const tracerProvider = new NodeTracerProvider({ resource, spanProcessors: processors, idGenerator: traceJoiningIdGenerator });
  tracerProvider.register({ propagator: new W3CTraceContextPropagator() });

  let stopped: Promise<void> | undefined;
  return {
    serviceName,
    tracer: trace.getTracer('moeflash'),
    meter: metrics.getMeter('moeflash'),
    prometheus,
    metricsAddress,
    traceExporters,
    metricExporters,
    shutdown() {
      stopped ??= Promise.allSettled([tracerProvider.shutdown(), meterProvider.shutdown()]).then(() => undefined);
      return stopped;
    },
  };
}
