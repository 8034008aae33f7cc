import { closeSync, copyFileSync, fsyncSync, openSync, writeFileSync } from 'node:fs';

/** A metadata value: strings, or numbers written as the given GGUF type. */
export type GgufValue = string | { u16: number } | { u32: number } | { i32: number };

export interface TestTensor {
  name: string;
  /** ggml ne (innermost first); written as F32. */
  ne: number[];
}

const GGUF_TYPE = { u16: 2, u32: 4, i32: 5, string: 8 };
const GGML_TYPE_F32 = 0;

/**
 * Writes a GGUF v3 file of F32 tensors (each filled with its index) and the given metadata, aligned to 32 bytes as
 * ggml's default: enough to exercise the expert index on shapes and splits the model maker does not produce.
 */
export function writeTestGguf(path: string, metadata: Record<string, GgufValue>, tensors: TestTensor[]): void {
  const parts: Buffer[] = [];
  const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16LE(n); return b; };
  const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
  const i32 = (n: number) => { const b = Buffer.alloc(4); b.writeInt32LE(n); return b; };
  const u64 = (n: number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(n)); return b; };
  const str = (s: string) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);
  parts.push(Buffer.from('GGUF'), u32(3), u64(tensors.length), u64(Object.keys(metadata).length));
  for (const [key, value] of Object.entries(metadata)) {
    parts.push(str(key));
    if (typeof value === 'string') parts.push(u32(GGUF_TYPE.string), str(value));
    else if ('u16' in value) parts.push(u32(GGUF_TYPE.u16), u16(value.u16));
    else if ('u32' in value) parts.push(u32(GGUF_TYPE.u32), u32(value.u32));
    else parts.push(u32(GGUF_TYPE.i32), i32(value.i32));
  }
  const align = 32;
  const pad = (n: number) => (align - (n % align)) % align;
  let offset = 0;
  const data: Buffer[] = [];
  tensors.forEach((t, i) => {
    parts.push(str(t.name), u32(t.ne.length), ...t.ne.map((n) => u64(n)), u32(GGML_TYPE_F32), u64(offset));
    const bytes = Buffer.alloc(4 * t.ne.reduce((a, b) => a * b, 1));
    for (let k = 0; k < bytes.length; k += 4) bytes.writeFloatLE(i, k);
    data.push(bytes, Buffer.alloc(pad(bytes.length)));
    offset += bytes.length + pad(bytes.length);
  });
  const header = Buffer.concat(parts);
  writeFileSync(path, Buffer.concat([header, Buffer.alloc(pad(header.length)), ...data]));
}

/** Copies a model and fsyncs the copy, so its pages are clean and DONTNEED can drop them. */
export function copyModel(src: string, dst: string): string {
  copyFileSync(src, dst);
  const fd = openSync(dst, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return dst;
}

/** Polls `check` until it returns true or `ms` pass (then fails with `what`). No fixed sleeps as synchronisation. */
export async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}
