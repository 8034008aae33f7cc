/**
 * Seed corpus of the GGUF libFuzzer target (scripts/fuzz-gguf.sh seeds): `node dist/bench/fuzzSeeds.js DIR`.
 * Small, valid files that reach different parts of the reader: a one-layer micro MoE model in every weight type the
 * generator writes (q8_0, q4_0, f16), metadata-only files with string, numeric and array values, a file with an
 * explicit alignment, an empty-tensor-list file and the element-count wrap-around found by the fuzzer.
 * Deterministic.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeMinimalGguf } from '../harness/writeMinimalGguf';
import { GGUF_TYPE, serializeGguf, type GgufKv } from '../harness/GgufFile';
import { writeMicroModel } from '../harness/writeMicroModel';

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};
const str = (s: string) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);

async function main(): Promise<void> {
  const dir = process.argv[2];
  if (!dir) throw new Error('usage: fuzzSeeds.js DIR');
  mkdirSync(dir, { recursive: true });
  // The fuzzer's inputs stay small: one layer, two experts, width 32 (~40 KB), in each weight type.
  for (const type of ['q8_0', 'q4_0', 'f16'] as const) {
    await writeMicroModel(join(dir, `micro-${type}.gguf`), { layers: 1, experts: 2, expertsUsed: 1, embd: 32, heads: 1, headDim: 32, type });
  }
  writeMinimalGguf(join(dir, 'metadata-only.gguf'), { 'general.architecture': 'qwen3moe', 'general.name': 'seed' });
  const kvs: GgufKv[] = [
    { key: 'general.architecture', type: GGUF_TYPE.STRING, raw: str('qwen3moe') },
    { key: 'general.alignment', type: GGUF_TYPE.UINT32, raw: u32(64) },
    { key: 'qwen3moe.block_count', type: GGUF_TYPE.UINT32, raw: u32(2) },
    { key: 'qwen3moe.expert_count', type: GGUF_TYPE.UINT32, raw: u32(4) },
    { key: 'seed.f64', type: GGUF_TYPE.FLOAT64, raw: Buffer.alloc(8, 0x3f) },
    { key: 'seed.bool', type: GGUF_TYPE.BOOL, raw: Buffer.from([1]) },
    { key: 'seed.i64', type: GGUF_TYPE.INT64, raw: u64(7) },
    { key: 'seed.strings', type: GGUF_TYPE.ARRAY, raw: Buffer.concat([u32(GGUF_TYPE.STRING), u64(3), str('a'), str(''), str('ccc')]) },
    { key: 'seed.u16s', type: GGUF_TYPE.ARRAY, raw: Buffer.concat([u32(GGUF_TYPE.UINT16), u64(4), Buffer.alloc(8, 1)]) },
  ];
  // Two expert tensors (f32 [4, 2, 4]: 4 experts of 32 bytes) and one other, back to back at 64-byte alignment.
  const tensors = [
    { name: 'blk.0.ffn_up_exps.weight', ne: [4n, 2n, 4n], type: 0, offset: 0n },
    { name: 'blk.1.ffn_down_exps.weight', ne: [4n, 2n, 4n], type: 0, offset: 128n },
    { name: 'token_embd.weight', ne: [4n, 4n], type: 1, offset: 256n },
  ];
  writeFileSync(join(dir, 'typed-metadata.gguf'), serializeGguf({ version: 3, kvs, tensors, alignment: 64, data: Buffer.alloc(320, 0x11) }));
  writeFileSync(join(dir, 'no-tensors.gguf'), serializeGguf({ version: 3, kvs: kvs.slice(0, 1), tensors: [], alignment: 32, data: Buffer.alloc(0) }));
  // A finding kept as a seed: 2^33 x 2^31 x 4 elements wrap to 0 in ggml_nelements, which skips gguf.cpp's
  // "total number of elements is representable" check; the tensor is accepted with 0 bytes (docs/RELIABILITY.md).
  const wrapped = [{ name: 'blk.0.ffn_up_exps.weight', ne: [1n << 33n, 1n << 31n, 4n], type: 0, offset: 0n }];
  writeFileSync(join(dir, 'nelements-wrap.gguf'), serializeGguf({ version: 3, kvs: kvs.slice(0, 1), tensors: wrapped, alignment: 32, data: Buffer.alloc(64) }));
  writeFileSync(join(dir, 'version2.gguf'), serializeGguf({ version: 2, kvs: kvs.slice(0, 4), tensors: tensors.slice(0, 1), alignment: 64, data: Buffer.alloc(128) }));
  console.log(`seeds written to ${dir}`);
}

void main();
