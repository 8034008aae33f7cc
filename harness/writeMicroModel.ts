import { makeModel, type ModelSpec } from '../services/engine/makeModel';

/**
 * The smallest generated MoE model the engine loads and runs (2 layers x 4 experts, width 64, 260 tokens):
 * ~220 KB, loaded in a few milliseconds, so fuzzers can afford thousands of loads. Deterministic for the spec.
 */
const MICRO_MODEL: ModelSpec = {
  preset: 'tiny', layers: 2, experts: 4, expertsUsed: 2, embd: 64, expertFf: 32, heads: 2, kvHeads: 1, headDim: 32,
  vocabSize: 260, contextLength: 256, name: 'moeflash-micro', seed: 1,
};

/** Writes the micro model (with `overrides`: smaller still, another type or seed) to `path`; resolves with its path. */
export async function writeMicroModel(path: string, overrides: ModelSpec = {}): Promise<string> {
  return (await makeModel(path, { ...MICRO_MODEL, ...overrides })).path;
}
