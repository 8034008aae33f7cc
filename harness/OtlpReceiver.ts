import { EventEmitter } from 'node:events';
import { createServer } from 'node:http';
import { join } from 'node:path';

import * as grpc from '@grpc/grpc-js';
// proto-loader is grpc-js's own dependency: the receiver reads OTLP from a .proto at run time, no generated code.
import { loadSync } from '@grpc/proto-loader';
// protobufjs, proto-loader's own parser, decodes the HTTP/protobuf bodies from the same .proto
import * as protobuf from 'protobufjs';

import { repoRoot } from '../services/engine/loadAddon';

/** OTLP span kinds (the wire numbering, not the JS API's). */
export const OTLP_KIND = { internal: 1, server: 2, client: 3 } as const;

export type AttributeValue = string | number | boolean | AttributeValue[] | null;

/** One span as the receiver got it, ids in lowercase hex, with its resource's service.name. */
export interface ReceivedSpan {
  service: string;
  scope: string;
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  kind: number;
  startMs: number;
  endMs: number;
  attributes: Record<string, AttributeValue>;
  events: { name: string; attributes: Record<string, AttributeValue> }[];
  links: { traceId: string; spanId: string }[];
  status: { code: number; message: string };
}

// Decoded message shapes (proto-loader: camelCase fields, bytes as Buffer, 64-bit integers as strings, oneofs named).
interface WireAnyValue {
  value?: 'stringValue' | 'boolValue' | 'intValue' | 'doubleValue' | 'arrayValue' | 'kvlistValue' | 'bytesValue';
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string;
  doubleValue?: number;
  arrayValue?: { values: WireAnyValue[] };
  bytesValue?: Buffer;
}
interface WireKeyValue {
  key: string;
  value?: WireAnyValue;
}
interface WireSpan {
  traceId: Buffer;
  spanId: Buffer;
  parentSpanId: Buffer;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: WireKeyValue[];
  events: { name: string; attributes: WireKeyValue[] }[];
  links: { traceId: Buffer; spanId: Buffer }[];
  status?: { code: number; message: string };
}
interface WireExport {
  resourceSpans: { resource?: { attributes: WireKeyValue[] }; scopeSpans: { scope?: { name: string }; spans: WireSpan[] }[] }[];
}

function valueOf(v: WireAnyValue | undefined): AttributeValue {
  switch (v?.value) {
    case 'stringValue':
      return v.stringValue ?? '';
    case 'boolValue':
      return v.boolValue ?? false;
    case 'intValue':
      return Number(v.intValue);
    case 'doubleValue':
      return v.doubleValue ?? 0;
    case 'arrayValue':
      return (v.arrayValue?.values ?? []).map(valueOf);
    case 'bytesValue':
      return (v.bytesValue ?? Buffer.alloc(0)).toString('hex');
    default:
      return null;
  }
}

const attributesOf = (list: WireKeyValue[]) => Object.fromEntries(list.map((kv) => [kv.key, valueOf(kv.value)]));
const nanosToMs = (n: string) => Number(BigInt(n) / 1000n) / 1000;

const TRACE_PROTO = () => join(repoRoot(), 'harness', 'otlp', 'trace_service.proto');
const METRICS_PROTO = () => join(repoRoot(), 'harness', 'otlp', 'metrics_service.proto');

/** One metric of one export as the receiver got it: the sending service, the name, how many data points. */
export interface ReceivedMetric {
  service: string;
  name: string;
  points: number;
}

interface WireMetricsExport {
  resourceMetrics: { resource?: { attributes: { key: string; value?: { stringValue?: string } }[] }; scopeMetrics: { metrics: WireMetric[] }[] }[];
}
interface WireMetric {
  name: string;
  gauge?: { dataPoints: unknown[] };
  sum?: { dataPoints: unknown[] };
  histogram?: { dataPoints: unknown[] };
}

/** OTLP/JSON to the shape proto-loader decodes protobuf into: ids hex -> bytes, the AnyValue oneof named. */
function fromJson(body: unknown): WireExport {
  const bytes = (hex: unknown) => Buffer.from(typeof hex === 'string' ? hex : '', 'hex');
  const anyValue = (v: Record<string, unknown> | undefined): WireAnyValue | undefined => {
    if (!v) return undefined;
    const key = Object.keys(v)[0] as WireAnyValue['value'];
    if (key === 'arrayValue') return { value: key, arrayValue: { values: ((v.arrayValue as { values?: Record<string, unknown>[] }).values ?? []).map((x) => anyValue(x)!) } };
    if (key === 'intValue') return { value: key, intValue: String(v.intValue) };
    return { value: key, ...v } as WireAnyValue;
  };
  const kvs = (list: unknown) => ((list as { key: string; value?: Record<string, unknown> }[] | undefined) ?? []).map((kv) => ({ key: kv.key, value: anyValue(kv.value) }));
  const json = body as { resourceSpans?: { resource?: { attributes?: unknown }; scopeSpans?: { scope?: { name: string }; spans?: Record<string, unknown>[] }[] }[] };
  return {
    resourceSpans: (json.resourceSpans ?? []).map((rs) => ({
      resource: { attributes: kvs(rs.resource?.attributes) },
      scopeSpans: (rs.scopeSpans ?? []).map((ss) => ({
        scope: ss.scope,
        spans: (ss.spans ?? []).map((sp) => ({
          traceId: bytes(sp.traceId),
          spanId: bytes(sp.spanId),
          parentSpanId: bytes(sp.parentSpanId),
          name: String(sp.name),
          kind: Number(sp.kind ?? 0),
          startTimeUnixNano: String(sp.startTimeUnixNano),
          endTimeUnixNano: String(sp.endTimeUnixNano),
          attributes: kvs(sp.attributes),
          events: ((sp.events as { name: string; attributes?: unknown }[] | undefined) ?? []).map((e) => ({ name: e.name, attributes: kvs(e.attributes) })),
          links: ((sp.links as { traceId: string; spanId: string }[] | undefined) ?? []).map((l) => ({ traceId: bytes(l.traceId), spanId: bytes(l.spanId) })),
          status: sp.status as { code: number; message: string } | undefined,
        })),
      })),
    })),
  };
}

/**
 * A minimal OTLP receiver on 127.0.0.1 over any of the specification's protocols: gRPC (the collector's
 * TraceService/Export and MetricsService/Export), or HTTP POST /v1/traces and /v1/metrics with a protobuf or JSON
 * body. It keeps every span and metric it is sent: what a collector would see from the services' OTLP exporters.
 */
export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly metrics: ReceivedMetric[] = [];
  private readonly received = new EventEmitter<{ export: [] }>();

  private constructor(
    private readonly stopServer: () => Promise<void>,
    /** `http://127.0.0.1:<port>`: the value for OTEL_EXPORTER_OTLP_ENDPOINT. */
    readonly endpoint: string,
  ) {}

  static async start(protocol: 'grpc' | 'http/protobuf' | 'http/json' = 'grpc'): Promise<OtlpReceiver> {
    return protocol === 'grpc' ? OtlpReceiver.startGrpc() : OtlpReceiver.startHttp();
  }

  private static async startHttp(): Promise<OtlpReceiver> {
    const request = protobuf.loadSync(TRACE_PROTO()).lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest');
    const metricsRequest = protobuf.loadSync(METRICS_PROTO()).lookupType('opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest');
    const decode = (type: protobuf.Type, body: Buffer) => type.toObject(type.decode(body), { longs: String, oneofs: true, defaults: true, bytes: Buffer });
    let receiver: OtlpReceiver | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const json = (req.headers['content-type'] ?? '').includes('json');
        if (req.method !== 'POST' || (req.url !== '/v1/traces' && req.url !== '/v1/metrics')) {
          res.writeHead(404).end();
          return;
        }
        if (req.url === '/v1/metrics')
          receiver?.acceptMetrics(json ? (JSON.parse(body.toString('utf8')) as WireMetricsExport) : (decode(metricsRequest, body) as WireMetricsExport));
        else receiver?.accept(json ? fromJson(JSON.parse(body.toString('utf8'))) : (decode(request, body) as WireExport));
        res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' }).end(json ? '{}' : undefined);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    receiver = new OtlpReceiver(() => new Promise((resolve) => server.close(() => resolve())), `http://127.0.0.1:${port}`);
    return receiver;
  }

  private static async startGrpc(): Promise<OtlpReceiver> {
    const definition = loadSync(TRACE_PROTO(), { longs: String, oneofs: true, defaults: true });
    const service = (definition['opentelemetry.proto.collector.trace.v1.TraceService'] as grpc.ServiceDefinition);
    const metricsDefinition = loadSync(METRICS_PROTO(), { longs: String, oneofs: true, defaults: true });
    const metricsService = metricsDefinition['opentelemetry.proto.collector.metrics.v1.MetricsService'] as grpc.ServiceDefinition;
    const server = new grpc.Server();
    let receiver: OtlpReceiver | undefined;
    server.addService(service, {
      Export(call: grpc.ServerUnaryCall<WireExport, object>, callback: grpc.sendUnaryData<object>) {
        receiver?.accept(call.request);
        callback(null, {});
      },
    });
    server.addService(metricsService, {
      Export(call: grpc.ServerUnaryCall<WireMetricsExport, object>, callback: grpc.sendUnaryData<object>) {
        receiver?.acceptMetrics(call.request);
        callback(null, {});
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    receiver = new OtlpReceiver(() => new Promise((resolve) => server.tryShutdown(() => resolve())), `http://127.0.0.1:${port}`);
    return receiver;
  }

  private accept(request: WireExport): void {
    for (const rs of request.resourceSpans) {
      const service = String(attributesOf(rs.resource?.attributes ?? [])['service.name'] ?? '');
      for (const ss of rs.scopeSpans) {
        for (const s of ss.spans) {
          this.spans.push({
            service,
            scope: ss.scope?.name ?? '',
            traceId: s.traceId.toString('hex'),
            spanId: s.spanId.toString('hex'),
            parentSpanId: s.parentSpanId.toString('hex'),
            name: s.name,
            kind: s.kind,
            startMs: nanosToMs(s.startTimeUnixNano),
            endMs: nanosToMs(s.endTimeUnixNano),
            attributes: attributesOf(s.attributes),
            events: s.events.map((e) => ({ name: e.name, attributes: attributesOf(e.attributes) })),
            links: s.links.map((l) => ({ traceId: l.traceId.toString('hex'), spanId: l.spanId.toString('hex') })),
            status: { code: s.status?.code ?? 0, message: s.status?.message ?? '' },
          });
        }
      }
    }
    this.received.emit('export');
  }

  /** OTLP/JSON and decoded protobuf have the same shape here (camelCase, the data oneof as its field). */
  private acceptMetrics(request: WireMetricsExport): void {
    for (const rm of request.resourceMetrics ?? []) {
      const service = rm.resource?.attributes.find((a) => a.key === 'service.name')?.value?.stringValue ?? '';
      for (const sm of rm.scopeMetrics ?? [])
        for (const m of sm.metrics ?? []) this.metrics.push({ service, name: m.name, points: (m.gauge ?? m.sum ?? m.histogram)?.dataPoints?.length ?? 0 });
    }
    this.received.emit('export');
  }

  /** Resolves with the first metric `check` accepts, re-checked as exports arrive; rejects after `ms` naming `what`. */
  async waitForMetric(what: string, check: (m: ReceivedMetric) => boolean, ms = 30_000): Promise<ReceivedMetric> {
    return this.waitFor(what, () => this.metrics.find(check), ms);
  }

  /**
   * Resolves with `check`'s first non-undefined result, re-checked whenever an export arrives; rejects after `ms`
   * naming `what` and the spans received so far.
   */
  async waitFor<T>(what: string, check: (spans: ReceivedSpan[]) => T | undefined, ms = 30_000): Promise<T> {
    const found = check(this.spans);
    if (found !== undefined) return found;
    return new Promise<T>((resolve, reject) => {
      const onExport = () => {
        const value = check(this.spans);
        if (value === undefined) return;
        done();
        resolve(value);
      };
      const timer = setTimeout(() => {
        done();
        const seen = this.spans.map((s) => `${s.service}:${s.name}@${s.traceId.slice(0, 8)}`).join(', ');
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; received: ${seen || 'nothing'}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.received.off('export', onExport);
      };
      this.received.on('export', onExport);
    });
  }

  close(): Promise<void> {
    return this.stopServer();
  }
}
