import type { PushMetricExporter } from '@opentelemetry/sdk-metrics';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';

/** The OTLP transports the specification defines. */
const PROTOCOLS = ['grpc', 'http/protobuf', 'http/json'] as const;
export type OtlpProtocol = (typeof PROTOCOLS)[number];
export type OtlpSignal = 'traces' | 'metrics';

/**
 * The protocol for a signal: OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL, else
 * http/protobuf (the specification's default). An unknown value is an error naming the variable, not a silent
 * fallback.
 */
export function otlpProtocol(env: NodeJS.ProcessEnv, signal: OtlpSignal): OtlpProtocol {
  for (const name of [`OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_PROTOCOL`, 'OTEL_EXPORTER_OTLP_PROTOCOL']) {
    const value = env[name]?.trim();
    if (!value) continue;
    if (!(PROTOCOLS as readonly string[]).includes(value)) throw new Error(`${name}: unsupported protocol '${value}' (${PROTOCOLS.join(', ')})`);
    return value as OtlpProtocol;
  }
  return 'http/protobuf';
}

/*
 * Endpoints follow the specification too, read by the exporters themselves: OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT as
 * is, or OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces or /v1/metrics over HTTP); defaults localhost:4317 (gRPC) and
 * localhost:4318 (HTTP). Required lazily: the gRPC exporters load grpc-js, which instrumentation must patch first.
 */
/* eslint-disable @typescript-eslint/no-require-imports */

/** An OTLP span exporter for the configured protocol. */
export function otlpTraceExporter(env: NodeJS.ProcessEnv): SpanExporter {
  switch (otlpProtocol(env, 'traces')) {
    case 'grpc':
      return new (require('@opentelemetry/exporter-trace-otlp-grpc') as typeof import('@opentelemetry/exporter-trace-otlp-grpc')).OTLPTraceExporter();
    case 'http/protobuf':
      return new (require('@opentelemetry/exporter-trace-otlp-proto') as typeof import('@opentelemetry/exporter-trace-otlp-proto')).OTLPTraceExporter();
    case 'http/json':
      return new (require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter();
  }
}

/** An OTLP metric exporter for the configured protocol (cumulative temporality, the exporters' default). */
export function otlpMetricExporter(env: NodeJS.ProcessEnv): PushMetricExporter {
  switch (otlpProtocol(env, 'metrics')) {
    case 'grpc':
      return new (require('@opentelemetry/exporter-metrics-otlp-grpc') as typeof import('@opentelemetry/exporter-metrics-otlp-grpc')).OTLPMetricExporter();
    case 'http/protobuf':
      return new (require('@opentelemetry/exporter-metrics-otlp-proto') as typeof import('@opentelemetry/exporter-metrics-otlp-proto')).OTLPMetricExporter();
    case 'http/json':
      return new (require('@opentelemetry/exporter-metrics-otlp-http') as typeof import('@opentelemetry/exporter-metrics-otlp-http')).OTLPMetricExporter();
  }
}
