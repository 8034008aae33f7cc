import type { SpanExporter } from '@opentelemetry/sdk-trace-base';

/** The OTLP transports the specification defines, and the package that speaks each. */
const PROTOCOLS = ['grpc', 'http/protobuf', 'http/json'] as const;
export type OtlpProtocol = (typeof PROTOCOLS)[number];

/**
 * The protocol for traces: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf
 * (the specification's default). An unknown value is an error naming the variable, not a silent fallback.
 */
export function otlpTraceProtocol(env: NodeJS.ProcessEnv): OtlpProtocol {
  for (const name of ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL']) {
    const value = env[name]?.trim();
    if (!value) continue;
    if (!(PROTOCOLS as readonly string[]).includes(value)) throw new Error(`${name}: unsupported protocol '${value}' (${PROTOCOLS.join(', ')})`);
    return value as OtlpProtocol;
  }
  return 'http/protobuf';
}

/**
 * An OTLP span exporter for the configured protocol. Endpoints follow the specification too, read by the exporters
 * themselves: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces over HTTP);
 * defaults localhost:4317 (gRPC) and localhost:4318/v1/traces (HTTP). Required lazily: the gRPC exporter loads
 * grpc-js, which instrumentation must patch first.
 */
export function otlpTraceExporter(env: NodeJS.ProcessEnv): SpanExporter {
  /* eslint-disable @typescript-eslint/no-require-imports */
  switch (otlpTraceProtocol(env)) {
    case 'grpc':
      return new (require('@opentelemetry/exporter-trace-otlp-grpc') as typeof import('@opentelemetry/exporter-trace-otlp-grpc')).OTLPTraceExporter();
    case 'http/protobuf':
      return new (require('@opentelemetry/exporter-trace-otlp-proto') as typeof import('@opentelemetry/exporter-trace-otlp-proto')).OTLPTraceExporter();
    case 'http/json':
      return new (require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter();
  }
}
