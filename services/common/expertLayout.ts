import type { GgufLayout, GgufTensorInfo } from './native/ioAddon';

/** Routed-expert weight tensors: gate/up/down (or fused gate_up) "_exps", as llama.cpp names them. */
export const EXPERT_TENSOR_PATTERN = /^blk\.(\d+)\.ffn_(gate|up|down|gate_up)_(ch)?exps\.weight$/;

export interface ExpertTensor extends GgufTensorInfo {
  layer: number;
  projection: string;
}

/** The expert tensors of a GGUF layout with their layer and projection. */
export function expertTensors(layout: GgufLayout): ExpertTensor[] {
  const out: ExpertTensor[] = [];
  for (const t of layout.tensors) {
    const m = EXPERT_TENSOR_PATTERN.exec(t.name);
    if (m) out.push({ ...t, layer: Number(m[1]), projection: m[2] });
  }
  return out;
}

/** Bytes of routed-expert weights per layer (index = layer), for nLayer layers. */
export function expertBytesPerLayer(layout: GgufLayout, nLayer: number): number[] {
  const bytes = new Array<number>(nLayer).fill(0);
  for (const t of expertTensors(layout)) {
    if (t.layer < nLayer) bytes[t.layer] += t.nbytes;
  }
  return bytes;
}
