/**
 * Random-weight MoE models (qwen3moe architecture) for tests and benchmarks, written by the native addon through
 * ggml's own GGUF writer and streamed to disk. Deterministic for a seed: the same spec gives a byte-identical file.
 */
import { resolve } from 'node:path';

import { InvalidArgumentError } from '../common/errors';
import { loadAddon } from './loadAddon';

export type ModelWeightType = 'f16' | 'q8_0' | 'q4_0';
export type ModelPresetName = 'tiny' | 'small' | '30b-a3b';

/** Everything about a generated model except its seed and name. */
export interface ModelShape {
  /** Transformer blocks. */
  layers: number;
  /** Routed experts per layer. */
  experts: number;
  /** Experts each token is routed to (<= experts). */
  expertsUsed: number;
  /** Model width (d_model); a multiple of 32 for q8_0/q4_0. */
  embd: number;
  /** Hidden width of one expert; a multiple of 32 for q8_0/q4_0. */
  expertFf: number;
  /** Query heads. */
  heads: number;
  /** Key/value heads; divides heads. */
  kvHeads: number;
  /** Width of one head (even); heads x headDim is a multiple of 32 for q8_0/q4_0. */
  headDim: number;
  /** Tokens in the SentencePiece-style vocabulary (260..262144). */
  vocabSize: number;
  /** Training context length written to the metadata. */
  contextLength: number;
  /** Type of the weight matrices; norms and the router stay f32. */
  type: ModelWeightType;
  ropeFreqBase: number;
  rmsNormEps: number;
}

/** A preset plus overrides; absent fields come from the preset (default 'tiny'). */
export interface ModelSpec extends Partial<ModelShape> {
  /** A ModelPresetName; other strings (from flags, env) are rejected at run time with an InvalidArgumentError. */
  preset?: ModelPresetName | (string & {});
  /** Seed of the weights (a safe non-negative integer). Default 1. */
  seed?: number;
  /** general.name in the file. Default `moeflash-<preset>`. */
  name?: string;
  /** Generation threads (default: all cores). The output does not depend on it. */
  threads?: number;
  /** Bytes generated per write (default 32 MiB). The output does not depend on it. */
  chunkBytes?: number;
  /** tokenizer.chat_template (Jinja). Default CHATML_TEMPLATE; '' writes none. */
  chatTemplate?: string;
}

/**
 * The ChatML template made models carry (as Qwen's do, thinking switch included), so chat is served end to end.
 * The generated vocabulary has no <|im_start|> token: the markers tokenize as plain text, which changes nothing
 * about how the template is applied.
 */
export const CHATML_TEMPLATE =
  "{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}" +
  "{%- if enable_thinking is defined and not enable_thinking -%}{{ '<think>\n\n</think>\n\n' }}{%- endif -%}{%- endif -%}";

/**
 * What a made model's file holds beyond its shape and seed; the folder under which tests and benchmarks cache made
 * models (file names, and so served model names, stay as they were), so a cache written before a change is not
 * reused after it.
 */
export const MADE_MODEL_FORMAT = 'chatml';

export interface MakeModelResult {
  /** Absolute path of the written file. */
  path: string;
  bytes: number;
  tensors: number;
}

export const MODEL_PRESETS: Readonly<Record<ModelPresetName, Readonly<ModelShape>>> = Object.freeze({
  /** The default model of `npm start` and the tests: ~1.5 MB, written in milliseconds. */
  tiny: Object.freeze({
    layers: 4, experts: 8, expertsUsed: 2, embd: 128, expertFf: 64, heads: 4, kvHeads: 2, headDim: 32,
    vocabSize: 1024, contextLength: 4096, type: 'q8_0', ropeFreqBase: 1e6, rmsNormEps: 1e-6,
  }),
  /** Big enough for expert-cache behaviour to show (32 experts, top-4): ~120 MB at q8_0. */
  small: Object.freeze({
    layers: 8, experts: 32, expertsUsed: 4, embd: 512, expertFf: 256, heads: 8, kvHeads: 4, headDim: 64,
    vocabSize: 4096, contextLength: 8192, type: 'q8_0', ropeFreqBase: 1e6, rmsNormEps: 1e-6,
  }),
  /**
   * Qwen3-30B-A3B's shape, vocabulary size included, for GPU benchmarks: 16.04 GiB at q4_0, the size of the model
   * the stock figures in REFERENCE.md were measured on.
   */
  '30b-a3b': Object.freeze({
    layers: 48, experts: 128, expertsUsed: 8, embd: 2048, expertFf: 768, heads: 32, kvHeads: 4, headDim: 128,
    vocabSize: 151936, contextLength: 40960, type: 'q4_0', ropeFreqBase: 1e6, rmsNormEps: 1e-6,
  }),
});

/** The shape makeModel would write for `spec` (preset with the overrides applied; validated by the addon). */
export function resolveModelSpec(spec: ModelSpec = {}): ModelShape & { seed: number; name: string; preset: ModelPresetName; chatTemplate: string } {
  const preset = (spec.preset ?? 'tiny') as ModelPresetName;
  if (!Object.prototype.hasOwnProperty.call(MODEL_PRESETS, preset)) {
    throw InvalidArgumentError.field('preset', `must be one of ${Object.keys(MODEL_PRESETS).join(', ')} (got '${preset}')`);
  }
  const base = MODEL_PRESETS[preset];
  // Explicit `undefined` fields (unset CLI flags) keep the preset's value.
  const overrides = Object.fromEntries(Object.entries(spec).filter(([, v]) => v !== undefined));
  return { ...base, seed: 1, name: `moeflash-${preset}`, chatTemplate: CHATML_TEMPLATE, ...overrides, preset };
}

/**
 * Writes a random-weight qwen3moe GGUF to `out` (via `out.tmp`, renamed when complete and fsynced; nothing is left
 * behind on error). Rejects with an InvalidArgumentError naming the ModelSpec field for an invalid shape.
 */
export async function makeModel(
  out: string,
  spec: ModelSpec = {},
  onProgress?: (done: number, total: number) => void,
): Promise<MakeModelResult> {
  if (typeof out !== 'string' || out === '') throw InvalidArgumentError.field('out', 'must be a file path');
  const resolved = resolveModelSpec(spec);
  const path = resolve(out);
  // A throwing progress callback must not leave the native worker half way: remember the error, report it at the end.
  let callbackError: unknown;
  const progress = onProgress
    ? (done: number, total: number) => {
        if (callbackError !== undefined) return;
        try {
          onProgress(done, total);
        } catch (e) {
          callbackError = e;
        }
      }
    : undefined;
  let result: { path: string; bytes: number; tensors: number };
  try {
    result = await loadAddon().makeModel({ ...resolved, path }, progress);
  } catch (e) {
    const err = e as { field?: unknown; description?: unknown };
    if (typeof err.field === 'string') throw InvalidArgumentError.field(err.field, String(err.description));
    throw e;
  }
  if (callbackError !== undefined) throw callbackError;
  return { path: result.path, bytes: result.bytes, tensors: result.tensors };
}
