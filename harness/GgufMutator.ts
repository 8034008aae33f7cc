import { GGUF_TYPE, parseGguf, serializeGguf, type GgufField, type GgufFile } from './GgufFile';
import { Prng } from './requestFuzz';

/** One mutated file and what was done to it (enough to reproduce it from the seed by hand). */
export interface GgufMutation {
  bytes: Buffer;
  label: string;
}

/** Numeric metadata the loaders size things by (per architecture: `<arch>.<suffix>`). */
const SIZING_KEYS = [
  'block_count', 'expert_count', 'expert_used_count', 'embedding_length', 'feed_forward_length', 'expert_feed_forward_length',
  'attention.head_count', 'attention.head_count_kv', 'attention.key_length', 'attention.value_length', 'context_length',
  'rope.dimension_count', 'expert_shared_count', 'leading_dense_block_count',
];

/** Layer numbers for renamed expert tensors: in range, just past it, and absurd. */
const LAYER_NUMBERS = ['0', '3', '4', '65535', '65536', '100000000', '4294967296', '99999999999999999999', '00000000000000000001', '-1'];

/**
 * Structure-aware GGUF mutations of a well-formed seed, deterministic for (seed, index): edits of header integers
 * (counts, string lengths, types, dimensions, offsets, sizing metadata) to boundary values, renamed / dropped /
 * duplicated tensors and keys, wrong value types, alignment changes, bit flips, byte insertions and deletions and
 * truncations, alone or stacked.
 */
export function GgufMutator(seedBytes: Buffer, seed: number): (index: number) => GgufMutation {
  const seedFile = parseGguf(seedBytes);
  return (index) => {
    const rand = Prng((Math.imul(seed, 0x9e3779b1) + index * 0x85ebca6b) >>> 0);
    const int = (n: number) => Math.floor(rand() * n);
    const pick = <T>(items: readonly T[]): T => items[int(items.length)];
    let bytes: Buffer = seedBytes;
    const labels: string[] = [];
    const steps = rand() < 0.15 ? 2 + int(3) : 1;
    for (let s = 0; s < steps; s++) {
      const op = rand();
      if (op < 0.3) bytes = editField(bytes, seedFile, rand, labels);
      else if (op < 0.42) bytes = editSizingValue(bytes, seedFile, rand, labels);
      else if (op < 0.62) bytes = editStructure(bytes, rand, labels);
      else if (op < 0.77) {
        const n = 1 + int(8);
        const header = rand() < 0.9;
        bytes = Buffer.from(bytes);
        const at: number[] = [];
        for (let i = 0; i < n; i++) {
          const pos = int(header ? Math.min(bytes.length, seedFile.dataStart) : bytes.length);
          bytes[pos] ^= 1 << int(8);
          at.push(pos);
        }
        labels.push(`flip bits at ${at.join(',')}`);
      } else if (op < 0.87) {
        const len = rand() < 0.6 ? int(seedFile.dataStart) : int(bytes.length);
        bytes = bytes.subarray(0, len);
        labels.push(`truncate to ${len}`);
      } else {
        const pos = int(Math.min(bytes.length, seedFile.dataStart) + 1);
        const n = 1 + int(16);
        const kind = pick(['insert', 'delete', 'overwrite'] as const);
        const run = Buffer.from(Array.from({ length: n }, () => (rand() < 0.5 ? pick([0, 0xff, 0x7f, 0x80]) : int(256))));
        if (kind === 'insert') bytes = Buffer.concat([bytes.subarray(0, pos), run, bytes.subarray(pos)]);
        else if (kind === 'delete') bytes = Buffer.concat([bytes.subarray(0, pos), bytes.subarray(pos + n)]);
        else bytes = Buffer.concat([bytes.subarray(0, pos), run, bytes.subarray(pos + n)]);
        labels.push(`${kind} ${n} bytes at ${pos}`);
      }
    }
    return { bytes, label: labels.join(' + ') };
  };
}

function interesting(rand: () => number, width: number, original: bigint): bigint {
  const bits = BigInt(width * 8);
  const max = (1n << bits) - 1n;
  const half = 1n << (bits - 1n);
  const values = [0n, 1n, 2n, max, max - 1n, half, half - 1n, original + 1n, original - 1n, original * 2n, original * 256n, 1n << (bits / 2n)];
  if (width === 8) values.push(1n << 32n, (1n << 32n) + 1n, 1n << 40n, 1n << 62n, 1n << 31n);
  const v = rand() < 0.85 ? values[Math.floor(rand() * values.length)] : BigInt(Math.floor(rand() * 2 ** 32)) * (width === 8 ? BigInt(Math.floor(rand() * 2 ** 20)) : 1n);
  return BigInt.asUintN(width * 8, v);
}

function readField(bytes: Buffer, f: GgufField): bigint {
  switch (f.bytes) {
    case 1: return BigInt(bytes.readUInt8(f.pos));
    case 2: return BigInt(bytes.readUInt16LE(f.pos));
    case 4: return BigInt(bytes.readUInt32LE(f.pos));
    case 8: return bytes.readBigUInt64LE(f.pos);
  }
}

function writeField(bytes: Buffer, f: GgufField, v: bigint): void {
  switch (f.bytes) {
    case 1: bytes.writeUInt8(Number(v), f.pos); break;
    case 2: bytes.writeUInt16LE(Number(v), f.pos); break;
    case 4: bytes.writeUInt32LE(Number(v), f.pos); break;
    case 8: bytes.writeBigUInt64LE(v, f.pos); break;
  }
}

/** A header integer of the seed set to a boundary value (positions are the seed's: applied to unshifted bytes). */
function editField(bytes: Buffer, seed: GgufFile, rand: () => number, labels: string[]): Buffer {
  const structural = seed.fields.filter((f) => f.kind !== 'value');
  const candidates = rand() < 0.8 ? structural : seed.fields;
  const f = candidates[Math.floor(rand() * candidates.length)];
  if (f.pos + f.bytes > bytes.length) return bytes;
  const out = Buffer.from(bytes);
  const v = interesting(rand, f.bytes, readField(out, f));
  writeField(out, f, v);
  labels.push(`${f.kind} of ${f.owner} = ${v}`);
  return out;
}

/** A sizing metadata value (block_count, expert_count, ...) set to a boundary value. */
function editSizingValue(bytes: Buffer, seed: GgufFile, rand: () => number, labels: string[]): Buffer {
  const fields = seed.fields.filter((f) => f.kind === 'value' && SIZING_KEYS.some((k) => f.owner.endsWith(`.${k}`)));
  if (fields.length === 0) return editField(bytes, seed, rand, labels);
  const f = fields[Math.floor(rand() * fields.length)];
  if (f.pos + f.bytes > bytes.length) return bytes;
  const out = Buffer.from(bytes);
  const v = interesting(rand, f.bytes, readField(out, f));
  writeField(out, f, v);
  labels.push(`${f.owner} = ${v}`);
  return out;
}

/** Re-serialized with tensors or keys renamed, dropped, duplicated, retyped or re-aligned. */
function editStructure(bytes: Buffer, rand: () => number, labels: string[]): Buffer {
  let file: GgufFile;
  try {
    file = parseGguf(bytes);
  } catch {
    return bytes; // an earlier step broke it: nothing structured left to edit
  }
  const int = (n: number) => Math.floor(rand() * n);
  const kvs = [...file.kvs];
  const tensors = file.tensors.map((t) => ({ ...t, ne: [...t.ne] }));
  let alignment = file.alignment;
  const op = int(9);
  const t = tensors.length > 0 ? tensors[int(tensors.length)] : undefined;
  const kv = kvs.length > 0 ? kvs[int(kvs.length)] : undefined;
  if (op === 0 && t) {
    const layer = LAYER_NUMBERS[int(LAYER_NUMBERS.length)];
    const before = t.name;
    t.name = t.name.replace(/^blk\.\d+\./, `blk.${layer}.`);
    labels.push(`rename ${before} -> ${t.name}`);
  } else if (op === 1 && t) {
    const other = tensors[int(tensors.length)];
    labels.push(`rename ${t.name} -> ${other.name} (duplicate name)`);
    t.name = other.name;
  } else if (op === 2 && t) {
    tensors.splice(tensors.indexOf(t), 1);
    labels.push(`drop tensor ${t.name}`);
  } else if (op === 3 && kv) {
    kvs.splice(kvs.indexOf(kv), 1);
    labels.push(`drop key ${kv.key}`);
  } else if (op === 4 && kv) {
    kvs.push({ ...kv });
    labels.push(`duplicate key ${kv.key}`);
  } else if (op === 5 && kv) {
    // The same bytes read as another type: a string length read as a number, a number as a string length...
    const type = int(13);
    labels.push(`retype key ${kv.key} ${kv.type} -> ${type}`);
    kvs[kvs.indexOf(kv)] = { ...kv, type };
  } else if (op === 6) {
    alignment = [0, 1, 3, 16, 64, 4096, 0x80000000][int(7)];
    const raw = Buffer.alloc(4);
    raw.writeUInt32LE(alignment >>> 0);
    const existing = kvs.findIndex((k) => k.key === 'general.alignment');
    if (existing >= 0) kvs[existing] = { key: 'general.alignment', type: GGUF_TYPE.UINT32, raw };
    else kvs.push({ key: 'general.alignment', type: GGUF_TYPE.UINT32, raw });
    labels.push(`general.alignment = ${alignment}`);
  } else if (op === 7 && t && tensors.length > 1) {
    const other = tensors[int(tensors.length)];
    [t.offset, other.offset] = [other.offset, t.offset];
    labels.push(`swap offsets of ${t.name} and ${other.name}`);
  } else if (t) {
    const d = int(Math.max(1, t.ne.length));
    const values = [0n, 1n, 3n, 1n << 31n, 1n << 32n, (1n << 63n) - 1n, t.ne[d] === undefined ? 2n : t.ne[d] * 2n];
    const v = values[int(values.length)];
    if (t.ne.length === 0) t.ne.push(v);
    else t.ne[d] = v;
    labels.push(`${t.name} ne[${d}] = ${v}`);
  }
  // Alignment 0 or not a power of two is written as given; the padding uses 32 so the file stays writable.
  const padTo = alignment > 0 && (alignment & (alignment - 1)) === 0 && alignment <= 4096 ? alignment : 32;
  const out = serializeGguf({ version: file.version, kvs, tensors, alignment: padTo, data: file.data });
  return out;
}
