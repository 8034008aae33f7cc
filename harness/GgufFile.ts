/**
 * A GGUF file (v2/v3) taken apart for structure-aware mutation: header, key/value pairs with their raw value
 * bytes, tensor infos and the data section, plus where each fixed-width header field sits in the original bytes.
 * serialize() writes it back with the data section re-aligned, so renaming a tensor or dropping a key keeps the
 * tensor data where the offsets say it is.
 */

export const GGUF_TYPE = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 } as const;
const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

export interface GgufKv {
  key: string;
  type: number;
  /** The value's bytes as written after the type (array: element type, count and elements). */
  raw: Buffer;
}

export interface GgufTensorInfo {
  name: string;
  ne: bigint[];
  type: number;
  /** Relative to the start of the data section. */
  offset: bigint;
}

/** A fixed-width integer of the header: where it is and what it means. */
export interface GgufField {
  pos: number;
  bytes: 1 | 2 | 4 | 8;
  kind: 'version' | 'n_tensors' | 'n_kv' | 'string_length' | 'kv_type' | 'array_type' | 'array_length' | 'value' | 'n_dims' | 'ne' | 'tensor_type' | 'offset';
  /** The key or tensor it belongs to. */
  owner: string;
}

export interface GgufFile {
  version: number;
  kvs: GgufKv[];
  tensors: GgufTensorInfo[];
  /** general.alignment, or 32. */
  alignment: number;
  /** Byte offset of the data section in the parsed file. */
  dataStart: number;
  /** Byte offset where the header (kvs + tensor infos) ends, before the padding. */
  headerEnd: number;
  data: Buffer;
  fields: GgufField[];
}

class Reader {
  pos = 0;
  constructor(private readonly b: Buffer) {}
  u32(): number {
    const v = this.b.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    const v = this.b.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(n: number): Buffer {
    if (this.pos + n > this.b.length) throw new RangeError('past the end');
    const v = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  string(): string {
    return this.bytes(Number(this.u64())).toString('latin1');
  }
}

/** Parses a well-formed GGUF (the seeds); throws on anything else. */
export function parseGguf(bytes: Buffer): GgufFile {
  const r = new Reader(bytes);
  const fields: GgufField[] = [];
  const field = (bytesWide: GgufField['bytes'], kind: GgufField['kind'], owner: string) => fields.push({ pos: r.pos, bytes: bytesWide, kind, owner });
  if (r.bytes(4).toString('latin1') !== 'GGUF') throw new Error('not GGUF');
  field(4, 'version', 'header');
  const version = r.u32();
  field(8, 'n_tensors', 'header');
  const nTensors = Number(r.u64());
  field(8, 'n_kv', 'header');
  const nKv = Number(r.u64());
  const kvs: GgufKv[] = [];
  for (let i = 0; i < nKv; i++) {
    field(8, 'string_length', `key ${i}`);
    const key = r.string();
    field(4, 'kv_type', key);
    const type = r.u32();
    const start = r.pos;
    skipValue(r, type, key, field);
    kvs.push({ key, type, raw: Buffer.from(bytes.subarray(start, r.pos)) });
  }
  const tensors: GgufTensorInfo[] = [];
  for (let i = 0; i < nTensors; i++) {
    field(8, 'string_length', `tensor ${i}`);
    const name = r.string();
    field(4, 'n_dims', name);
    const nDims = r.u32();
    const ne: bigint[] = [];
    for (let d = 0; d < nDims; d++) {
      field(8, 'ne', name);
      ne.push(r.u64());
    }
    field(4, 'tensor_type', name);
    const type = r.u32();
    field(8, 'offset', name);
    tensors.push({ name, ne, type, offset: r.u64() });
  }
  const alignKv = kvs.find((k) => k.key === 'general.alignment' && k.type === GGUF_TYPE.UINT32);
  const alignment = alignKv ? alignKv.raw.readUInt32LE(0) : 32;
  const headerEnd = r.pos;
  const dataStart = Math.ceil(headerEnd / alignment) * alignment;
  return { version, kvs, tensors, alignment, dataStart, headerEnd, data: Buffer.from(bytes.subarray(dataStart)), fields };
}

function skipValue(r: Reader, type: number, owner: string, field: (b: GgufField['bytes'], k: GgufField['kind'], o: string) => void): void {
  if (type === GGUF_TYPE.STRING) {
    field(8, 'string_length', owner);
    r.string();
  } else if (type === GGUF_TYPE.ARRAY) {
    field(4, 'array_type', owner);
    const elementType = r.u32();
    field(8, 'array_length', owner);
    const n = Number(r.u64());
    if (elementType === GGUF_TYPE.STRING) for (let i = 0; i < n; i++) r.string();
    else r.bytes(n * (SCALAR_BYTES[elementType] ?? 0));
  } else {
    const width = SCALAR_BYTES[type];
    if (width === undefined) throw new Error(`unknown GGUF type ${type}`);
    field(width as GgufField['bytes'], 'value', owner);
    r.bytes(width);
  }
}

/** Writes the file back: header from `kvs` and `tensors`, padding to `alignment`, then `data`. */
export function serializeGguf(file: Pick<GgufFile, 'version' | 'kvs' | 'tensors' | 'alignment' | 'data'>): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n >>> 0);
    parts.push(b);
  };
  const u64 = (n: bigint | number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(n)));
    parts.push(b);
  };
  const str = (s: string) => {
    const b = Buffer.from(s, 'latin1');
    u64(b.length);
    parts.push(b);
  };
  parts.push(Buffer.from('GGUF', 'latin1'));
  u32(file.version);
  u64(file.tensors.length);
  u64(file.kvs.length);
  for (const kv of file.kvs) {
    str(kv.key);
    u32(kv.type);
    parts.push(kv.raw);
  }
  for (const t of file.tensors) {
    str(t.name);
    u32(t.ne.length);
    for (const n of t.ne) u64(n);
    u32(t.type);
    u64(t.offset);
  }
  const header = Buffer.concat(parts);
  const alignment = file.alignment > 0 ? file.alignment : 32;
  const padded = Math.ceil(header.length / alignment) * alignment;
  return Buffer.concat([header, Buffer.alloc(padded - header.length), file.data]);
}

/** Block size (elements) and bytes per block of the ggml types tests craft files with (ggml.c type_traits). */
const TYPE_LAYOUT: Record<number, [number, number]> = { 0: [1, 4], 1: [1, 2], 2: [32, 18], 8: [32, 34], 9: [32, 36], 30: [1, 2] };

/** Bytes of a tensor of ggml type `type` and shape `ne` (rows of ne[0] elements). */
export function tensorBytes(type: number, ne: readonly bigint[]): number {
  const layout = TYPE_LAYOUT[type];
  if (!layout) throw new Error(`tensorBytes: ggml type ${type} not in the table`);
  const [block, bytes] = layout;
  const n0 = Number(ne[0] ?? 1n);
  const rows = ne.slice(1).reduce((a, b) => a * Number(b), 1);
  return (Math.ceil(n0 / block) * bytes) * rows;
}

/**
 * The file with its tensors' types or shapes changed (`edit` may change any tensor's type and ne): the data
 * section is rebuilt in tensor order, each tensor keeping as many of its old bytes as fit (zeros after), with the
 * offsets ggml expects.
 */
export function relayoutGguf(file: GgufFile, edit: (tensors: GgufTensorInfo[]) => void): GgufFile {
  const oldSizes = file.tensors.map((t) => tensorBytes(t.type, t.ne));
  const tensors = file.tensors.map((t) => ({ ...t, ne: [...t.ne] }));
  edit(tensors);
  const parts: Buffer[] = [];
  let offset = 0;
  tensors.forEach((t, i) => {
    const size = tensorBytes(t.type, t.ne);
    const old = file.data.subarray(Number(file.tensors[i].offset), Number(file.tensors[i].offset) + oldSizes[i]);
    const bytes = Buffer.alloc(size);
    old.copy(bytes, 0, 0, Math.min(size, old.length));
    const padded = Math.ceil(size / file.alignment) * file.alignment;
    parts.push(bytes, Buffer.alloc(padded - size));
    t.offset = BigInt(offset);
    offset += padded;
  });
  return { ...file, tensors, data: Buffer.concat(parts) };
}

/** The strings of a string-array key's raw value. */
export function readStringArray(kv: GgufKv): string[] {
  if (kv.type !== GGUF_TYPE.ARRAY || kv.raw.readUInt32LE(0) !== GGUF_TYPE.STRING) throw new Error(`${kv.key} is not a string array`);
  const r = new Reader(kv.raw);
  r.u32();
  const n = Number(r.u64());
  return Array.from({ length: n }, () => r.string());
}

/** A string-array value's raw bytes. */
export function stringArrayRaw(items: readonly string[]): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt32LE(GGUF_TYPE.STRING, 0);
  head.writeBigUInt64LE(BigInt(items.length), 4);
  return Buffer.concat([head, ...items.flatMap((s) => {
    const b = Buffer.from(s, 'latin1');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(b.length));
    return [len, b];
  })]);
}
