import { Client, credentials, Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { GenerateResponse } from '../gen/moeflash/v1/generation';

/**
 * Request-validation fuzzing of GenerationService.Generate, over the wire: each case is raw protobuf bytes built
 * here (so it can hold what a typed client cannot send: invalid UTF-8, NaN and out-of-range floats, wrong wire
 * types, unknown fields, truncated or garbage messages, messages over the size limit). Deterministic for a seed.
 */

/** Mulberry32: small, fast, seedable. */
export function Prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Writer {
  private readonly parts: Buffer[] = [];
  varint(v: bigint | number): this {
    let n = BigInt.asUintN(64, BigInt(v));
    const bytes: number[] = [];
    do {
      let b = Number(n & 0x7fn);
      n >>= 7n;
      if (n > 0n) b |= 0x80;
      bytes.push(b);
    } while (n > 0n);
    this.parts.push(Buffer.from(bytes));
    return this;
  }
  tag(field: number, wire: number): this {
    return this.varint((field << 3) | wire);
  }
  bytes(field: number, b: Buffer): this {
    this.tag(field, 2).varint(b.length);
    this.parts.push(b);
    return this;
  }
  float(field: number, f: number): this {
    const b = Buffer.alloc(4);
    b.writeFloatLE(f);
    this.tag(field, 5);
    this.parts.push(b);
    return this;
  }
  uint(field: number, v: bigint | number): this {
    return this.tag(field, 0).varint(v);
  }
  raw(b: Buffer): this {
    this.parts.push(b);
    return this;
  }
  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export type CaseKind = 'typed' | 'wire-garbage' | 'oversized';

export interface FuzzCase {
  kind: CaseKind;
  bytes: Buffer;
  /** Short description for failure messages. */
  label: string;
}

const INVALID_UTF8 = [Buffer.from([0xff]), Buffer.from([0xc3, 0x28]), Buffer.from([0xe2, 0x82]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80])];

/** Builds random GenerateRequests for model `model` (the one the stack serves; others get NOT_FOUND). */
export function FuzzCases(seed: number, model: string, maxMessageBytes: number): (i: number) => FuzzCase {
  const rnd = Prng(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const chance = (p: number) => rnd() < p;

  function text(maxLen: number): Buffer {
    const r = rnd();
    if (r < 0.15) return Buffer.alloc(0);
    if (r < 0.3) return Buffer.concat([Buffer.from('ab'), pick(INVALID_UTF8), Buffer.from('cd')]);
    if (r < 0.4) return Buffer.from(Array.from({ length: 1 + int(64) }, () => int(256)));
    if (r < 0.5) return Buffer.from('\u0000\u{1F600}\uFFFD\u202E', 'utf8');
    const len = chance(0.1) ? maxLen : 1 + int(Math.min(maxLen, 64));
    return Buffer.alloc(len, pick(['a', 'hello ', 'ж', '\n']));
  }

  const FLOATS = [NaN, Infinity, -Infinity, -1, -0, 0, 1e-45, 0.5, 1, 2, 3.4e38, -3.4e38, 100, 101, 1e9];
  const UINTS: (number | bigint)[] = [0, 1, 7, 40, 257, 258, 65_535, 65_536, 65_537, 2 ** 31, 2 ** 32 - 1, 2n ** 64n - 1n];

  function sampling(): Buffer {
    const w = new Writer();
    for (const field of [1, 3, 4, 5, 6, 7]) if (chance(0.4)) w.float(field, chance(0.5) ? pick(FLOATS) : rnd() * 4 - 1);
    for (const field of [2, 8]) if (chance(0.4)) w.uint(field, pick(UINTS));
    if (chance(0.05)) w.uint(99, 1); // an unknown field
    return w.finish();
  }

  return (i) => {
    if (i % 97 === 96) {
      // Over the server's receive limit: the transport refuses it (RESOURCE_EXHAUSTED) before any handler runs.
      return { kind: 'oversized', label: 'oversized', bytes: new Writer().bytes(1, Buffer.from(model)).bytes(2, Buffer.alloc(maxMessageBytes + 1024, 'a')).finish() };
    }
    if (i % 23 === 22) {
      // Not a valid protobuf message: truncated length, bad wire type, or random bytes.
      const v = int(3);
      const bytes =
        v === 0 ? new Writer().tag(2, 2).varint(1000).raw(Buffer.from('short')).finish()
        : v === 1 ? new Writer().tag(1, 7).raw(Buffer.from('xx')).finish()
        : Buffer.from(Array.from({ length: 1 + int(200) }, () => int(256)));
      return { kind: 'wire-garbage', label: `wire-garbage#${v}`, bytes };
    }
    const w = new Writer();
    const labels: string[] = [];
    if (chance(0.9)) w.bytes(1, Buffer.from(model));
    else w.bytes(1, text(300)), labels.push('model');
    if (chance(0.85)) {
      const huge = chance(0.05);
      w.bytes(2, huge ? Buffer.alloc(70_000 + int(200_000), 'x') : text(4096));
      labels.push(huge ? 'huge-prompt' : 'prompt');
    }
    if (chance(0.2)) {
      const ids = Array.from({ length: int(20) }, () => pick(UINTS));
      const packed = new Writer();
      for (const id of ids) packed.varint(id);
      w.bytes(3, packed.finish());
      labels.push('token-ids');
    }
    if (chance(0.8)) w.uint(4, chance(0.7) ? 1 + int(8) : pick(UINTS)), labels.push('max_tokens');
    if (chance(0.6)) w.bytes(5, sampling()), labels.push('sampling');
    if (chance(0.3)) for (let s = int(20); s > 0; s--) w.bytes(6, text(300)), labels.push('stop');
    if (chance(0.3)) w.bytes(7, chance(0.5) ? text(200) : Buffer.alloc(129, 'r')), labels.push('request_id');
    if (chance(0.05)) w.tag(4, 2).varint(3).raw(Buffer.from('abc')), labels.push('max_tokens-wrong-wire-type');
    if (chance(0.05)) w.bytes(1234, Buffer.from('unknown')), labels.push('unknown-field');
    return { kind: 'typed', label: labels.join(','), bytes: w.finish() };
  };
}

export interface FuzzOutcome {
  code: number;
  details: string;
  messages: number;
}

const GENERATE_PATH = '/moeflash.v1.GenerationService/Generate';

/** A grpc-js client sending pre-encoded bytes to Generate; reads at most `maxMessages` responses, then cancels. */
export class RawGenerateClient {
  private readonly client: Client;
  constructor(address: string) {
    this.client = new Client(address, credentials.createInsecure(), { 'grpc.max_send_message_length': -1 });
  }

  call(bytes: Buffer, maxMessages = 16, metadata = new Metadata()): Promise<FuzzOutcome> {
    return new Promise((resolve) => {
      let messages = 0;
      const stream = this.client.makeServerStreamRequest(GENERATE_PATH, (b: Buffer) => b, (b: Buffer) => GenerateResponse.decode(b), bytes, metadata);
      stream.on('data', () => {
        if (++messages === maxMessages) stream.cancel();
      });
      stream.on('error', (err: ServiceError) => resolve({ code: err.code, details: err.details, messages }));
      stream.on('status', (s) => {
        if (s.code === GrpcStatus.OK) resolve({ code: s.code, details: s.details, messages });
      });
    });
  }

  close(): void {
    this.client.close();
  }
}

/** Codes a Generate call may end with under fuzzing; anything else (INTERNAL, UNKNOWN, UNAVAILABLE...) is a bug. */
export function allowedCodes(kind: CaseKind): number[] {
  const handler = [GrpcStatus.OK, GrpcStatus.INVALID_ARGUMENT, GrpcStatus.RESOURCE_EXHAUSTED, GrpcStatus.NOT_FOUND, GrpcStatus.CANCELLED];
  if (kind === 'oversized') return [GrpcStatus.RESOURCE_EXHAUSTED];
  return handler;
}
