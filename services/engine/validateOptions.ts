import { InvalidArgumentError, type FieldViolation } from '../common/errors';
import { checkLoadOptions } from '../common/options/optionTable';
import type { ChatPrompt, GenerateOptions, LoadOptions, SamplingOptions } from './types';

/** Sampling values a request may leave out: llama.cpp's own defaults. */
export const DEFAULT_SAMPLING: Required<Omit<SamplingOptions, 'seed'>> = {
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1.0,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

export { DEFAULT_MAX_TOKENS } from '../common/defaultMaxTokens';
export const MAX_STOP_STRINGS = 16;
export const MAX_STOP_BYTES = 256;

type Check = (violations: FieldViolation[]) => void;

function finite(field: string, value: number | undefined, min: number, max: number, inclusiveMin = true): Check {
  return (v) => {
    if (value === undefined) return;
    if (typeof value !== 'number' || !Number.isFinite(value)) v.push({ field, description: `must be a finite number, got ${String(value)}` });
    else if (value < min || (!inclusiveMin && value === min) || value > max)
      v.push({ field, description: `must be in ${inclusiveMin ? '[' : '('}${min}, ${max}], got ${value}` });
  };
}

function integer(field: string, value: number | undefined, min: number, max: number): Check {
  return (v) => {
    if (value === undefined) return;
    if (!Number.isInteger(value)) v.push({ field, description: `must be an integer, got ${String(value)}` });
    else if (value < min || value > max) v.push({ field, description: `must be in [${min}, ${max}], got ${value}` });
  };
}

function run(checks: Check[]): void {
  const violations: FieldViolation[] = [];
  for (const check of checks) check(violations);
  if (violations.length > 0) throw new InvalidArgumentError(violations);
}

/** Throws InvalidArgumentError naming every invalid sampling field (`sampling.<name>`). */
export function validateSampling(s: SamplingOptions | undefined): void {
  if (!s) return;
  run([
    finite('sampling.temperature', s.temperature, 0, 100),
    integer('sampling.top_k', s.topK, 0, 1_000_000),
    finite('sampling.top_p', s.topP, 0, 1, false),
    finite('sampling.min_p', s.minP, 0, 1),
    finite('sampling.repeat_penalty', s.repeatPenalty, 0, 100, false),
    finite('sampling.presence_penalty', s.presencePenalty, -2, 2),
    finite('sampling.frequency_penalty', s.frequencyPenalty, -2, 2),
    integer('sampling.seed', s.seed, 0, 0xffffffff),
  ]);
}

/** The most alternatives per token a request may ask log-probabilities for (as OpenAI's API). */
export const MAX_TOP_LOGPROBS = 20;

/** Messages need a role and text content; template variables must be JSON text. */
export function validateChat(chat: ChatPrompt | undefined, v: FieldViolation[]): void {
  if (!chat) return;
  if (chat.messages.length === 0) v.push({ field: 'messages', description: 'at least one message is required' });
  chat.messages.forEach((m, i) => {
    if (typeof m.role !== 'string' || m.role.length === 0) v.push({ field: `messages[${i}].role`, description: 'a role is required (system, user, assistant, ...)' });
    if (typeof m.content !== 'string') v.push({ field: `messages[${i}].content`, description: 'must be text' });
  });
  for (const [name, value] of Object.entries(chat.kwargs ?? {})) {
    try {
      JSON.parse(value);
    } catch (e) {
      v.push({ field: `chat_template_kwargs.${name}`, description: `must be JSON text (true, 3, "text"): ${(e as Error).message}` });
    }
  }
}

/** Checks the request-level fields that do not need the model (prompt length is checked after tokenizing). */
export function validateGenerate(o: GenerateOptions, contextSize: number): void {
  validateSampling(o.sampling);
  run([
    integer('max_tokens', o.maxTokens, 1, contextSize),
    (v) => {
      const forms = [o.prompt !== undefined, o.promptTokens !== undefined && o.promptTokens.length > 0, o.chat !== undefined].filter(Boolean).length;
      if (forms === 0) v.push({ field: 'prompt', description: 'a prompt, prompt_token_ids or messages is required' });
      if (forms > 1) v.push({ field: 'prompt', description: 'set one of prompt, prompt_token_ids and messages' });
    },
    (v) => validateChat(o.chat, v),
    integer('top_logprobs', o.topLogprobs, 0, MAX_TOP_LOGPROBS),
    (v) => {
      if (o.jsonSchema !== undefined && o.grammar) v.push({ field: 'json_schema', description: 'set at most one of grammar and json_schema' });
      (o.stopTokenIds ?? []).forEach((id, i) => {
        if (!Number.isInteger(id) || id < 0) v.push({ field: `stop_token_ids[${i}]`, description: `must be a token id, got ${id}` });
      });
    },
    (v) => {
      const stop = o.stop ?? [];
      if (stop.length > MAX_STOP_STRINGS) v.push({ field: 'stop', description: `at most ${MAX_STOP_STRINGS} stop strings, got ${stop.length}` });
      stop.forEach((s, i) => {
        if (typeof s !== 'string' || s.length === 0) v.push({ field: `stop[${i}]`, description: 'must be a non-empty string' });
        else if (Buffer.byteLength(s) > MAX_STOP_BYTES) v.push({ field: `stop[${i}]`, description: `longer than ${MAX_STOP_BYTES} bytes` });
      });
    },
  ]);
}

/** Checks LoadOptions; names the option in each violation. The option table's entries are checked by the table. */
export function validateLoad(o: LoadOptions): void {
  run([
    (v) => {
      if (typeof o.path !== 'string' || o.path.length === 0) v.push({ field: 'path', description: 'a model path is required' });
    },
    (v) => checkLoadOptions(o, v),
    (v) => {
      const replay = o.expertCache?.replayRouting;
      if (replay !== undefined && (typeof replay !== 'string' || replay === ''))
        v.push({ field: 'expertCache.replayRouting', description: 'must be a file path' });
    },
  ]);
}
