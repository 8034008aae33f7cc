/** `moeflash generate`: the in-process engine on one prompt. Text to stdout as produced, one stats line to stderr. */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { InvalidArgumentError, type FieldViolation } from '../../services/common/errors';
import { loadOptionFlags, loadOptionsFromText } from '../../services/common/options/optionTable';
import { Engine } from '../../services/engine/Engine';
import type { GenerationFinal } from '../../services/engine/types';
import { formatExpertCacheLine, formatPrefetchLine } from '../expertCacheLines';
import { parsePromptFlags, PROMPT_FLAGS } from '../promptFlags';
import { parseSamplingFlags, SAMPLING_FLAGS } from '../samplingFlags';

export async function generateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      ...PROMPT_FLAGS,
      ...SAMPLING_FLAGS,
      grammar: { type: 'string' },
      'grammar-file': { type: 'string' },
      ...loadOptionFlags(),
      json: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (!values.model) throw InvalidArgumentError.field('--model', 'required (path to a GGUF file)');
  const input = parsePromptFlags(values);

  const violations: FieldViolation[] = [];
  const options = loadOptionsFromText((o) => (values as Record<string, unknown>)[o.flag] as string | boolean | undefined, (o) => `--${o.flag}`, violations);
  if (violations.length > 0) throw new InvalidArgumentError(violations);
  // one prompt: one sequence unless asked otherwise
  const engine = await Engine.load({ parallel: 1, ...options, path: values.model });
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  try {
    const grammar = values['grammar-file'] ? readFileSync(values['grammar-file'], 'utf8') : values.grammar;
    let final: GenerationFinal | undefined;
    const { maxTokens, sampling } = parseSamplingFlags(values);
    for await (const event of engine.generate({
      ...input,
      maxTokens,
      stop: values.stop,
      signal: abort.signal,
      sampling,
      grammar,
    })) {
      if (event.type === 'chunk') {
        process.stdout.write(values.json ? JSON.stringify({ tokens: event.tokenIds, text: event.text, ...(event.logprobs && { logprobs: event.logprobs }) }) + '\n' : event.text);
      } else {
        final = event;
      }
    }
    if (!final) throw new Error('generation ended without a final record');
    if (values.json) process.stdout.write(JSON.stringify(final) + '\n');
    else process.stdout.write('\n');
    const t = final.timings;
    process.stderr.write(
      `finish=${final.finishReason} prompt_tokens=${final.promptTokens} completion_tokens=${final.completionTokens} ` +
        `prefill_tps=${t.prefillTokensPerSecond.toFixed(1)} decode_tps=${t.decodeTokensPerSecond.toFixed(1)} ttft_ms=${t.ttftMs.toFixed(1)}` +
        (final.error ? ` error=${JSON.stringify(final.error)}` : '') +
        '\n',
    );
    if (engine.info.expertCache?.allResident) process.stderr.write('expert_cache all experts resident: no lookups, nothing copied\n');
    else if (final.expertCache) process.stderr.write(formatExpertCacheLine(final.expertCache, final.completionTokens) + '\n');
    const cacheStats = engine.info.expertCache?.prefetch ? engine.expertCacheStats() : undefined;
    if (cacheStats) process.stderr.write(formatPrefetchLine(cacheStats.total) + '\n');
    return final.finishReason === 'error' ? 1 : 0;
  } finally {
    process.removeListener('SIGINT', onSignal);
    await engine.close();
  }
}
