import type { SamplingOptions } from '../services/engine/types';
import { parseNumber } from './parseNumber';

/** The sampling and length flags shared by `generate` and `client generate` (node:util parseArgs options). */
export const SAMPLING_FLAGS = {
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'repeat-penalty': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
} as const;

interface SamplingFlagValues {
  'max-tokens'?: string;
  temperature?: string;
  'top-k'?: string;
  'top-p'?: string;
  'min-p'?: string;
  'repeat-penalty'?: string;
  seed?: string;
}

/** Parses SAMPLING_FLAGS' values; a malformed number is an InvalidArgumentError naming the flag. */
export function parseSamplingFlags(values: SamplingFlagValues): { maxTokens?: number; sampling: SamplingOptions } {
  return {
    maxTokens: parseNumber('max-tokens', values['max-tokens'], true),
    sampling: {
      temperature: parseNumber('temperature', values.temperature),
      topK: parseNumber('top-k', values['top-k'], true),
      topP: parseNumber('top-p', values['top-p']),
      minP: parseNumber('min-p', values['min-p']),
      repeatPenalty: parseNumber('repeat-penalty', values['repeat-penalty']),
      seed: parseNumber('seed', values.seed, true),
    },
  };
}
