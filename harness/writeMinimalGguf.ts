import { writeFileSync } from 'node:fs';

/**
 * Writes a GGUF v3 file with string metadata and no tensors: enough to exercise the loader's metadata checks
 * (an unknown architecture) without a full model writer.
 */
export function writeMinimalGguf(path: string, metadata: Record<string, string>): void {
  const parts: Buffer[] = [];
  const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
  const u64 = (n: number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(n)); return b; };
  const str = (s: string) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);
  parts.push(Buffer.from('GGUF'), u32(3), u64(0), u64(Object.keys(metadata).length));
  const GGUF_TYPE_STRING = 8;
  for (const [key, value] of Object.entries(metadata)) parts.push(str(key), u32(GGUF_TYPE_STRING), str(value));
  writeFileSync(path, Buffer.concat(parts));
}
