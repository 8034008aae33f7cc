import type { GenerationEvent, GenerationFinal, TokenLogprob } from '../services/engine/types';

export interface Collected {
  tokens: number[];
  /** The chunks' log-probabilities, in token order (empty unless asked for). */
  logprobs: TokenLogprob[];
  text: string;
  chunks: number;
  final: GenerationFinal;
}

/** Drains a generation stream; fails if it does not end with exactly one final record. */
export async function collect(stream: AsyncIterable<GenerationEvent>, onChunk?: (n: number) => void): Promise<Collected> {
  const tokens: number[] = [];
  const logprobs: TokenLogprob[] = [];
  let text = '';
  let chunks = 0;
  let final: GenerationFinal | undefined;
  for await (const event of stream) {
    if (final) throw new Error('event after the final record');
    if (event.type === 'chunk') {
      tokens.push(...event.tokenIds);
      logprobs.push(...(event.logprobs ?? []));
      text += event.text;
      chunks++;
      onChunk?.(chunks);
    } else {
      final = event;
    }
  }
  if (!final) throw new Error('stream ended without a final record');
  return { tokens, logprobs, text, chunks, final };
}
