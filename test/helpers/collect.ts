import type { GenerationEvent, GenerationFinal } from '../../services/engine/types';

export interface Collected {
  tokens: number[];
  text: string;
  chunks: number;
  final: GenerationFinal;
}

/** Drains a generation stream; fails if it does not end with exactly one final record. */
export async function collect(stream: AsyncIterable<GenerationEvent>, onChunk?: (n: number) => void): Promise<Collected> {
  const tokens: number[] = [];
  let text = '';
  let chunks = 0;
  let final: GenerationFinal | undefined;
  for await (const event of stream) {
    if (final) throw new Error('event after the final record');
    if (event.type === 'chunk') {
      tokens.push(...event.tokenIds);
      text += event.text;
      chunks++;
      onChunk?.(chunks);
    } else {
      final = event;
    }
  }
  if (!final) throw new Error('stream ended without a final record');
  return { tokens, text, chunks, final };
}
