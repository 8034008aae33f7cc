import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from '../services/common/errors';
import type { ChatPrompt } from '../services/engine/types';
import { parseNumber } from './parseNumber';

/** What to generate from, shared by `generate` and `client generate` (node:util parseArgs options). */
export const PROMPT_FLAGS = {
  prompt: { type: 'string' },
  chat: { type: 'string' },
  system: { type: 'string' },
  'json-schema': { type: 'string' },
  logprobs: { type: 'string' },
} as const;

interface PromptFlagValues {
  prompt?: string;
  chat?: string;
  system?: string;
  'json-schema'?: string;
  logprobs?: string;
}

export interface PromptRequest {
  /** Raw text, no chat template. */
  prompt?: string;
  /** --chat USER_MESSAGE (and --system): rendered with the model's chat template. */
  chat?: ChatPrompt;
  /** JSON Schema text the output must match. */
  jsonSchema?: string;
  topLogprobs?: number;
}

/**
 * Parses PROMPT_FLAGS: exactly one of --prompt (raw text) and --chat (a user message; --system adds a system one);
 * --json-schema takes JSON or @file; --logprobs N asks for N alternatives per token (0-20, printed with --json).
 */
export function parsePromptFlags(values: PromptFlagValues): PromptRequest {
  if ((values.prompt === undefined) === (values.chat === undefined)) throw InvalidArgumentError.field('--prompt', 'give exactly one of --prompt (raw text) and --chat (a user message)');
  if (values.system !== undefined && values.chat === undefined) throw InvalidArgumentError.field('--system', 'goes with --chat');
  const chat = values.chat === undefined ? undefined : { messages: [...(values.system === undefined ? [] : [{ role: 'system', content: values.system }]), { role: 'user', content: values.chat }] };
  return { prompt: values.prompt, chat, jsonSchema: jsonSchemaFlag(values['json-schema']), topLogprobs: parseNumber('logprobs', values.logprobs, true) };
}

function jsonSchemaFlag(value: string | undefined): string | undefined {
  if (value === undefined || !value.startsWith('@')) return value;
  try {
    return readFileSync(value.slice(1), 'utf8');
  } catch (e) {
    throw InvalidArgumentError.field('--json-schema', `cannot read ${value.slice(1)}: ${(e as Error).message}`);
  }
}
