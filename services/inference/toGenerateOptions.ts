import type { GenerateRequest, TokenizeRequest } from '../../gen/moeflash/v1/generation';
import { InvalidArgumentError, type FieldViolation } from '../common/errors';
import type { ChatPrompt, GenerateOptions } from '../engine/types';

const MAX_REQUEST_ID_LENGTH = 128;

/** The conversation of a request with messages (and its template settings); undefined without messages. */
export function toChatPrompt(request: Pick<GenerateRequest | TokenizeRequest, 'messages' | 'chatTemplate' | 'chatTemplateKwargs'>): ChatPrompt | undefined {
  const violations: FieldViolation[] = [];
  if (request.messages.length === 0) {
    if (request.chatTemplate.length > 0) violations.push({ field: 'chat_template', description: 'applies to messages only' });
    if (Object.keys(request.chatTemplateKwargs).length > 0) violations.push({ field: 'chat_template_kwargs', description: 'apply to messages only' });
    if (violations.length > 0) throw new InvalidArgumentError(violations);
    return undefined;
  }
  return {
    messages: request.messages.map(({ role, content }) => ({ role, content })),
    template: request.chatTemplate || undefined,
    kwargs: request.chatTemplateKwargs,
  };
}

/**
 * Maps a GenerateRequest onto the engine's options. Checks what only the wire format can get wrong (several prompt
 * forms set, proto3's empty string for "no prompt"); the engine validates the values themselves. `traceId` is
 * the request's W3C trace id, if traced.
 */
export function toGenerateOptions(request: GenerateRequest, signal: AbortSignal, traceId?: string): GenerateOptions {
  const violations: FieldViolation[] = [];
  const hasText = request.prompt.length > 0;
  const hasTokens = request.promptTokenIds.length > 0;
  const chat = toChatPrompt(request);
  const forms = [hasText, hasTokens, chat !== undefined].filter(Boolean).length;
  if (forms > 1) violations.push({ field: 'prompt', description: 'set one of prompt, prompt_token_ids and messages' });
  if (forms === 0) violations.push({ field: 'prompt', description: 'a prompt, prompt_token_ids or messages is required' });
  if (request.grammar.length > 0 && request.jsonSchema.length > 0) violations.push({ field: 'json_schema', description: 'set at most one of grammar and json_schema' });
  if (request.requestId.length > MAX_REQUEST_ID_LENGTH)
    violations.push({ field: 'request_id', description: `at most ${MAX_REQUEST_ID_LENGTH} characters` });
  if (violations.length > 0) throw new InvalidArgumentError(violations);
  const s = request.sampling;
  return {
    prompt: hasText ? request.prompt : undefined,
    promptTokens: hasTokens ? request.promptTokenIds : undefined,
    chat,
    jsonSchema: request.jsonSchema || undefined,
    stopTokenIds: request.stopTokenIds.length > 0 ? request.stopTokenIds : undefined,
    ignoreEos: request.ignoreEos || undefined,
    topLogprobs: request.topLogprobs,
    maxTokens: request.maxTokens,
    grammar: request.grammar || undefined,
    sampling: s && {
      temperature: s.temperature,
      topK: s.topK,
      topP: s.topP,
      minP: s.minP,
      repeatPenalty: s.repeatPenalty,
      presencePenalty: s.presencePenalty,
      frequencyPenalty: s.frequencyPenalty,
      seed: s.seed,
    },
    stop: request.stop,
    requestId: request.requestId || undefined,
    signal,
    // the active trace, so the expert-store's hint records (and its spans) link to this request
    traceId: traceId || undefined,
  };
}
