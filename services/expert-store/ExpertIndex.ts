import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

import { ModelLoadError } from '../common/errors';
import { EXPERT_TENSOR_PATTERN } from '../common/expertLayout';
import { loadIoAddon, type GgufLayout } from '../common/native/ioAddon';
import { modelShardPaths } from '../common/modelShardPaths';

/** One file of the model (a single GGUF, or one shard of a split one). */
export interface IndexedFile {
  path: string;
  size: number;
}

/** A byte range of one of the index's files (file = index into ExpertIndex.files). */
export interface FileRange {
  file: number;
  offset: number;
  length: number;
}

/** One expert's slab of one *_exps tensor. */
export interface ExpertSlab extends FileRange {
  tensor: string;
  /** gate | up | down | gate_up */
  projection: string;
}

/** Everything one routed expert of one layer owns: a slab of each of the layer's *_exps tensors. */
export interface ExpertEntry {
  layer: number;
  expert: number;
  ranges: ExpertSlab[];
  bytes: number;
}

/** A tensor that is not a routed expert (attention, norms, router, shared experts, embeddings). */
export interface NonExpertTensor extends FileRange {
  tensor: string;
}

/**
 * Where every routed expert of a MoE GGUF lives: for each (layer, expert), the exact byte ranges of its slabs in
 * each *_exps tensor, from sizes ggml's own gguf parser computed (right for every ggml type). Expert e of a tensor
 * with nbytes bytes and n experts is the contiguous slab offset + e * nbytes / n.
 */
export interface ExpertIndex {
  /** The path the index was built from (the first shard of a split model). */
  modelPath: string;
  files: IndexedFile[];
  architecture: string;
  /** general.name, or the file name. */
  name: string;
  /** Transformer blocks (layers), dense ones included. */
  nLayer: number;
  /** Routed experts per MoE layer. */
  nExpert: number;
  /** Layers that have routed experts, ascending. */
  moeLayers: number[];
  /** experts[layer][expert]; an empty array for a dense layer. */
  experts: ExpertEntry[][];
  /** Every other tensor, by file and offset. */
  nonExpert: NonExpertTensor[];
  expertBytes: number;
  nonExpertBytes: number;
  expertBytesPerLayer: number[];
}

/**
 * Bounds on what an index is sized by (layers, experts per layer): far above any model (llama.cpp itself stops at
 * 512 layers and 1024 experts), low enough that a crafted file cannot make the index allocate gigabytes.
 */
export const MAX_INDEX_LAYERS = 4096;
export const MAX_INDEX_EXPERTS = 65536;

function metaNumber(layout: GgufLayout, key: string): number | undefined {
  const v = layout.metadata[key];
  return typeof v === 'number' ? v : undefined;
}

/** Builds the expert index of a model. Rejects with a ModelLoadError naming the file and the reason. */
export async function loadExpertIndex(modelPath: string): Promise<ExpertIndex> {
  const path = resolve(modelPath);
  const paths = modelShardPaths(path);
  const addon = loadIoAddon();
  const layouts: GgufLayout[] = [];
  for (const [i, p] of paths.entries()) {
    if (!existsSync(p)) {
      throw new ModelLoadError(path, paths.length > 1 ? `shard ${i + 1} of ${paths.length} ('${p}') is missing` : 'no such file');
    }
    try {
      layouts.push(await addon.readGgufLayout(p));
    } catch (e) {
      throw new ModelLoadError(p, (e as Error).message);
    }
  }
  const first = layouts[0];
  const splitCount = metaNumber(first, 'split.count');
  if (splitCount !== undefined && splitCount !== paths.length) {
    throw new ModelLoadError(path, `split.count is ${splitCount} but ${paths.length} file(s) were found (shards are named <name>-0000i-of-0000N.gguf)`);
  }
  for (const [i, l] of layouts.entries()) {
    const no = metaNumber(l, 'split.no');
    if (paths.length > 1 && no !== undefined && no !== i) throw new ModelLoadError(paths[i], `split.no is ${no}, expected ${i}`);
  }

  const architecture = String(first.metadata['general.architecture'] ?? '');
  const name = typeof first.metadata['general.name'] === 'string' ? (first.metadata['general.name'] as string) : '';
  const blockCount = metaNumber(first, `${architecture}.block_count`);
  if (blockCount !== undefined && !(Number.isInteger(blockCount) && blockCount >= 0 && blockCount <= MAX_INDEX_LAYERS)) {
    throw new ModelLoadError(path, `${architecture}.block_count is ${blockCount}; it must be an integer in [0, ${MAX_INDEX_LAYERS}]`);
  }
  const expertCount = metaNumber(first, `${architecture}.expert_count`);
  if (expertCount !== undefined && !(Number.isInteger(expertCount) && expertCount >= 0 && expertCount <= MAX_INDEX_EXPERTS)) {
    throw new ModelLoadError(path, `${architecture}.expert_count is ${expertCount}; it must be an integer in [0, ${MAX_INDEX_EXPERTS}]`);
  }
  let nExpert = expertCount ?? 0;
  let nLayer = blockCount ?? 0;

  interface Found { file: number; name: string; layer: number; projection: string; ne: number[]; offset: number; nbytes: number }
  const expertTensors: Found[] = [];
  const nonExpert: NonExpertTensor[] = [];
  for (const [file, l] of layouts.entries()) {
    for (const t of l.tensors) {
      const m = EXPERT_TENSOR_PATTERN.exec(t.name);
      if (m) expertTensors.push({ file, name: t.name, layer: Number(m[1]), projection: m[2], ne: t.ne, offset: t.offset, nbytes: t.nbytes });
      else nonExpert.push({ file, offset: t.offset, length: t.nbytes, tensor: t.name });
    }
  }
  if (expertTensors.length === 0) throw new ModelLoadError(path, 'the model has no routed-expert tensors (*_exps): not a MoE model');
  if (nExpert === 0) nExpert = expertTensors[0].ne[2] ?? 0;
  if (!(nExpert >= 1 && nExpert <= MAX_INDEX_EXPERTS)) {
    throw new ModelLoadError(
      paths[expertTensors[0].file],
      `tensor '${expertTensors[0].name}' has shape [${expertTensors[0].ne.join(', ')}]: ${nExpert} experts, expected 1 to ${MAX_INDEX_EXPERTS}`,
    );
  }
  for (const t of expertTensors) {
    if (t.layer >= MAX_INDEX_LAYERS || (blockCount !== undefined && t.layer >= blockCount)) {
      const bound = blockCount !== undefined ? `${architecture}.block_count is ${blockCount}` : `at most ${MAX_INDEX_LAYERS} layers are indexed`;
      throw new ModelLoadError(paths[t.file], `tensor '${t.name}' is in layer ${t.layer}, but ${bound}`);
    }
    if (t.ne.length !== 3 || t.ne[2] !== nExpert) {
      throw new ModelLoadError(paths[t.file], `tensor '${t.name}' has shape [${t.ne.join(', ')}]; expected ${nExpert} experts in its third dimension`);
    }
    if (t.nbytes === 0) {
      throw new ModelLoadError(paths[t.file], `tensor '${t.name}' has 0 bytes: its experts' slabs would be empty`);
    }
    if (t.nbytes % nExpert !== 0) {
      throw new ModelLoadError(paths[t.file], `tensor '${t.name}' has ${t.nbytes} bytes, not a multiple of its ${nExpert} experts`);
    }
    nLayer = Math.max(nLayer, t.layer + 1);
  }

  const experts: ExpertEntry[][] = Array.from({ length: nLayer }, () => []);
  for (const t of expertTensors.sort((a, b) => a.layer - b.layer || a.file - b.file || a.offset - b.offset)) {
    const layer = experts[t.layer];
    if (layer.length === 0) for (let e = 0; e < nExpert; e++) layer.push({ layer: t.layer, expert: e, ranges: [], bytes: 0 });
    const slab = t.nbytes / nExpert;
    for (let e = 0; e < nExpert; e++) {
      layer[e].ranges.push({ file: t.file, offset: t.offset + e * slab, length: slab, tensor: t.name, projection: t.projection });
      layer[e].bytes += slab;
    }
  }
  nonExpert.sort((a, b) => a.file - b.file || a.offset - b.offset);
  const expertBytesPerLayer = experts.map((l) => l.reduce((s, e) => s + e.bytes, 0));
  return {
    modelPath: path,
    files: layouts.map((l, i) => ({ path: paths[i], size: l.fileSize })),
    architecture,
    name: name || path.replace(/^.*\//, ''),
    nLayer,
    nExpert,
    moeLayers: experts.flatMap((l, i) => (l.length > 0 ? [i] : [])),
    experts,
    nonExpert,
    expertBytes: expertBytesPerLayer.reduce((a, b) => a + b, 0),
    nonExpertBytes: nonExpert.reduce((s, t) => s + t.length, 0),
    expertBytesPerLayer,
  };
}

/** (file, offset, length) triples for the native I/O calls. */
export function rangeTriples(ranges: readonly FileRange[]): Float64Array {
  const out = new Float64Array(ranges.length * 3);
  ranges.forEach((r, i) => out.set([r.file, r.offset, r.length], 3 * i));
  return out;
}

/** (layer, expert, file, offset, length) tuples of every expert slab: the hint consumer's table. */
export function expertRangeTable(index: ExpertIndex): Float64Array {
  const rows: number[] = [];
  for (const layer of index.experts) for (const e of layer) for (const r of e.ranges) rows.push(e.layer, e.expert, r.file, r.offset, r.length);
  return Float64Array.from(rows);
}
