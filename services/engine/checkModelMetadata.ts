import { ModelLoadError } from '../common/errors';
import type { GgufLayout } from './loadAddon';

/** llama.cpp's LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS (src/llama-hparams.h): larger values abort the load. */
export const LLAMA_MAX_LAYERS = 512;
export const LLAMA_MAX_EXPERTS = 1024;
/** The smallest training context a model may declare: llama.cpp caps the batch at it, so less cannot hold a prompt. */
export const MIN_CONTEXT_LENGTH = 16;
/** Bound on head counts and head widths: their products then fit llama.cpp's 32-bit shape arithmetic. */
const MAX_HEADS = 1 << 14;
const MAX_HEAD_DIM = 1 << 14;

/**
 * ggml types ggml's CPU backend has a dot product for (type_traits_cpu[t].vec_dot in ggml-cpu.c): a matrix weight
 * of any other type (q8_1, q8_K, integers, f64) makes mul_mat call a NULL function at the first decode.
 */
const CPU_MATMUL_TYPES = new Set([
  'f32', 'f16', 'bf16', 'q1_0', 'q2_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0', 'mxfp4', 'nvfp4',
  'q2_K', 'q3_K', 'q4_K', 'q5_K', 'q6_K', 'iq2_xxs', 'iq2_xs', 'iq3_xxs', 'iq3_s', 'iq2_s', 'iq1_s', 'iq1_m', 'iq4_nl', 'iq4_xs',
  'tq1_0', 'tq2_0',
]);

/** Norm weights and biases: ggml-cpu's add/mul of f32 activations accept only an f32 second operand. */
const F32_ONLY_TENSOR = /(norm[^.]*\.weight|\.bias)$/;

/**
 * Rejects, before llama.cpp sees the file, metadata and tensor types that llama.cpp or ggml's CPU backend would
 * answer with a process abort (GGML_ASSERT, GGML_ABORT, a NULL function pointer) at load or at the first decode
 * instead of an error. Throws ModelLoadError naming the file and the key or tensor. Anything else it leaves to
 * llama.cpp, which reports missing keys, wrong key types and wrong tensor shapes itself.
 */
export function checkModelMetadata(layout: GgufLayout): void {
  const { path, metadata } = layout;
  const fail = (reason: string): never => {
    throw new ModelLoadError(path, reason);
  };
  const arch = metadata['general.architecture'];
  if (typeof arch === 'string' && arch.length > 0) {
    /** A numeric key's value (undefined when absent, an array or not a number: llama.cpp checks types). */
    const num = (suffix: string): number | undefined => {
      const v = metadata[`${arch}.${suffix}`];
      return typeof v === 'number' ? v : undefined;
    };
    const integer = (suffix: string, min: number, max: number, why = ''): number | undefined => {
      const v = num(suffix);
      if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) fail(`${arch}.${suffix} is ${v}; it must be an integer in [${min}, ${max}]${why}`);
      return v;
    };

    const nLayer = integer('block_count', 1, LLAMA_MAX_LAYERS, " (llama.cpp's LLAMA_MAX_LAYERS)");
    if (nLayer !== undefined) {
      integer('nextn_predict_layers', 0, nLayer, ` (block_count is ${nLayer})`);
      integer('leading_dense_block_count', 0, nLayer, ` (block_count is ${nLayer})`);
    }

    const nExpert = integer('expert_count', 0, LLAMA_MAX_EXPERTS, " (llama.cpp's LLAMA_MAX_EXPERTS)") ?? 0;
    if (nExpert > 0) {
      if (metadata[`${arch}.expert_used_count`] === undefined) fail(`${arch}.expert_used_count is missing; a model with experts (expert_count ${nExpert}) needs it`);
      integer('expert_used_count', 1, nExpert, ` (expert_count is ${nExpert})`);
    } else integer('expert_used_count', 0, 0, ' when the model has no experts (expert_count 0 or absent)');
    const groups = nExpert > 0 ? (integer('expert_group_count', 0, nExpert - 1, ` (below expert_count ${nExpert})`) ?? 0) : 0;
    if (groups > 1) {
      if (nExpert % groups !== 0) fail(`${arch}.expert_group_count is ${groups}; it must divide expert_count ${nExpert}`);
      integer('expert_group_used_count', 1, groups - 1, ` (below expert_group_count ${groups})`);
    }

    const nCtxTrain = num('context_length');
    if (nCtxTrain !== undefined && nCtxTrain < MIN_CONTEXT_LENGTH)
      fail(`${arch}.context_length is ${nCtxTrain}; a context of at least ${MIN_CONTEXT_LENGTH} tokens is needed`);

    for (const suffix of ['attention.layer_norm_rms_epsilon', 'attention.layer_norm_epsilon']) {
      const eps = num(suffix);
      if (eps !== undefined && !(Number.isFinite(eps) && eps >= 0)) fail(`${arch}.${suffix} is ${eps}; it must be a finite number >= 0`);
    }

    // llama.cpp multiplies these in 32 bits to get the K/V widths it checks the weights against: an overflowing
    // head count passes that check and fails a reshape while the graph is built
    const nHead = integer('attention.head_count', 0, MAX_HEADS);
    const nHeadKv = integer('attention.head_count_kv', 0, MAX_HEADS);
    integer('attention.key_length', 0, MAX_HEAD_DIM);
    integer('attention.value_length', 0, MAX_HEAD_DIM);
    if (nHead !== undefined && nHead > 0 && nHeadKv !== undefined && nHeadKv > 0 && nHead % nHeadKv !== 0)
      fail(`${arch}.attention.head_count_kv is ${nHeadKv}; it must divide attention.head_count ${nHead}`);
  }

  for (const t of layout.tensors) {
    if (F32_ONLY_TENSOR.test(t.name)) {
      if (t.type !== 'f32') fail(`tensor '${t.name}' has type ${t.type}; norm weights and biases must be f32`);
    } else if (!CPU_MATMUL_TYPES.has(t.type)) {
      fail(`tensor '${t.name}' has type ${t.type}, which ggml cannot multiply (no CPU dot product for it)`);
    }
  }
}
