import type { GenerateRequest } from '../../gen/moeflash/v1/generation';
import { InvalidArgumentError, type FieldViolation } from '../common/errors';
import type { GenerateOptions } from '../engine/types';

const MAX_REQUEST_ID_LENGTH = 128;

/**
 * Maps a GenerateRequest onto the engine's options. Checks what only the wire format can get wrong (both prompt
 * forms set, proto3's empty string for "no prompt"); the engine validates the values themselves. `traceId` is
 * the request's W3C trace id, if traced.
 */
export function toGenerateOptions(request: GenerateRequest, signal: AbortSignal, traceId?: string): GenerateOptions {
  const violations: FieldViolation[] = [];
  const hasText = request.prompt.length > 0;
  const hasTokens = request.promptTokenIds.length > 0;
  if (hasText && hasTokens) violations.push({ field: 'prompt', description: 'set either prompt or prompt_token_ids, not both' });
  if (!hasText && !hasTokens) violations.push({ field: 'prompt', description: 'a prompt or prompt_token_ids is required' });
  if (request.requestId.length > MAX_REQUEST_ID_LENGTH)
    violations.push({ field: 'request_id', description: `at most ${MAX_REQUEST_ID_LENGTH} characters` });
  if (violations.length > 0) throw new InvalidArgumentError(violations);
  const s = request.sampling;
  return {
    prompt: hasText ? request.prompt : undefined,
    promptTokens: hasTokens ? request.promptTokenIds : undefined,
    maxTokens: request.maxTokens,
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
