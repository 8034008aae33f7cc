import type { LoadPathFinding } from './loadPathFuzz';

/**
 * Findings of the load-path fuzzer that are known, documented (docs/RELIABILITY.md, "Fuzzing the GGUF load path")
 * and not fixed yet. The CI test tolerates these and fails on anything else; remove an entry with its fix, and the
 * test then holds the fix.
 */
export interface KnownFinding {
  id: string;
  /** Where the guard belongs. */
  where: string;
  matches(f: LoadPathFinding): boolean;
}

/** Weight types ggml's CPU backend has no dot product for (type_traits_cpu without vec_dot): mul_mat calls NULL. */
const NO_CPU_VEC_DOT = ['q8_1', 'q8_K', 'i8', 'i16', 'i32', 'i64', 'f64'];

const KNOWN_LOAD_PATH_FINDINGS: readonly KnownFinding[] = [
  // llama.cpp asserts on metadata it reads from the file; Engine.load passes the file to llama_model_load unchecked.
  llamaAssert('llama-assert-n-layer', 'src/llama-model.cpp:1226', /GGML_ASSERT\(hparams\.n_layer_all > 0 && hparams\.n_layer_all <= LLAMA_MAX_LAYERS\)/),
  llamaAssert('llama-assert-n-expert', 'src/llama-model.cpp:1259', /GGML_ASSERT\(hparams\.n_expert <= LLAMA_MAX_EXPERTS\)/),
  llamaAssert('llama-assert-n-expert-used', 'src/llama-model.cpp:1260', /GGML_ASSERT\(n_expert_used_max <= hparams\.n_expert\)/),
  llamaAssert('llama-assert-n-expert-used-zero', 'src/llama-model.cpp:1262', /GGML_ASSERT\(n_expert_used_max > 0\)/),
  llamaAssert('llama-assert-vocab-duplicates', 'src/llama-vocab.cpp:2501 (two tokens with the same text)', /GGML_ASSERT\(id_to_token\.size\(\) == token_to_id\.size\(\)\)/),
  {
    id: 'tokenize-out-of-range-uncaught',
    where:
      'native/src/AddonModel.cpp AddonModel::Tokenize: llama_vocab::byte_to_token throws std::out_of_range (unordered_map::at) for a byte the vocabulary has no <0xNN> token for; the exception is not turned into a JS error, std::terminate',
    matches: (f) => f.kind === 'crash' && f.stage === 'engine' && /std::out_of_range[\s\S]*unordered_map::at/.test(f.detail),
  },
  {
    id: 'cpu-rms-norm-negative-eps',
    where: 'ggml-cpu ops.cpp:3949 GGML_ASSERT(eps >= 0.0f) at the first decode: <arch>.attention.layer_norm_rms_epsilon negative (or NaN) is passed through by llama.cpp',
    matches: (f) => f.kind === 'crash' && f.stage === 'engine' && /GGML_ASSERT\(eps >= 0\.0f\)/.test(f.detail),
  },
  {
    id: 'graph-reshape-head-count-kv',
    where: 'ggml.c:3698 GGML_ASSERT(ggml_nelements(a) == ne0*ne1*ne2) in ggml_reshape_3d while llama.cpp builds the graph: <arch>.attention.head_count_kv inconsistent with the K/V weight shapes is not checked at load',
    matches: (f) => f.kind === 'crash' && f.stage === 'engine' && /GGML_ASSERT\(ggml_nelements\(a\) == ne0\*ne1\*ne2\)/.test(f.detail),
  },
  {
    id: 'decode-batch-past-tiny-training-context',
    where:
      'llama.cpp src/llama-context.cpp:1792 GGML_ASSERT(n_tokens_all <= cparams.n_batch): with <arch>.context_length of 1-2 the engine caps the context (and so n_batch) below the prompt, and its prompt check does not use the capped size',
    matches: (f) => f.kind === 'crash' && f.stage === 'engine' && /GGML_ASSERT\(n_tokens_all <= cparams\.n_batch\)/.test(f.detail),
  },
  {
    id: 'cpu-norm-weight-not-f32',
    where: 'ggml-cpu binary-ops.cpp:135 GGML_ABORT for a norm weight that is not f32 (f32 x f16); nothing checks the norm tensors\' types before the first decode',
    matches: (f) => f.kind === 'crash' && f.stage === 'engine' && /binary_op: unsupported types/.test(f.detail),
  },
  {
    id: 'cpu-weight-type-without-vec-dot',
    where: 'ggml-cpu ggml_compute_forward_mul_mat calls a NULL vec_dot for a weight of a type the CPU cannot multiply (q8_1, q8_K, integer types, f64): SIGSEGV at the first decode',
    matches: (f) => f.kind === 'crash' && f.stage === 'engine' && (f.tensorTypes ?? []).some((t) => NO_CPU_VEC_DOT.includes(t)),
  },
  {
    id: 'expert-index-sizes',
    where:
      'services/expert-store/ExpertIndex.ts loadExpertIndex: Array.from({ length: nLayer }) with nLayer from a tensor name (blk.<N>.) or <arch>.block_count, and nExpert entries per MoE layer with nExpert from <arch>.expert_count or ne[2] (zero-byte slabs pass the divisibility check), both unbounded: RangeError, or minutes and gigabytes, from a file of a few hundred bytes',
    matches: (f) => f.stage === 'index' && (f.kind === 'crash' || f.kind === 'hang' || (f.kind === 'unclear' && /RangeError: Invalid array length/.test(f.detail))),
  },
];

function llamaAssert(id: string, where: string, pattern: RegExp): KnownFinding {
  return { id, where: `llama.cpp ${where}`, matches: (f) => f.kind === 'crash' && f.stage === 'engine' && pattern.test(f.detail) };
}

/** The known finding `f` is an instance of, if any. */
export function knownFindingOf(f: LoadPathFinding): KnownFinding | undefined {
  return KNOWN_LOAD_PATH_FINDINGS.find((k) => k.matches(f));
}
