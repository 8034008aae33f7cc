/**
 * `moeflash client generate|models`: calls a running router (GenerationService). Generated text goes to stdout
 * as it streams, one stats line to stderr; --json prints JSON lines instead. Ctrl-C cancels the call.
 */
import { parseArgs } from 'node:util';
import { ClientError, createChannel, createClient, Metadata, Status, type Channel } from 'nice-grpc';
import { FinishReason, finishReasonToJSON, GenerationServiceDefinition, type GenerateComplete } from '../../gen/moeflash/v1/generation';
import { InvalidArgumentError } from '../../services/common/errors';
import { decodeStatusDetails, STATUS_DETAILS_KEY } from '../../services/common/StatusDetails';
import { parsePromptFlags, PROMPT_FLAGS } from '../promptFlags';
import { parseSamplingFlags, SAMPLING_FLAGS } from '../samplingFlags';

const USAGE = `usage:
  moeflash client generate --addr HOST:PORT --model NAME (--prompt TEXT | [--system TEXT] --chat TEXT)
                           [--json-schema JSON|@FILE] [--logprobs N] [--max-tokens N] [--temperature T]
                           [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] [--seed S] [--stop S]... [--json]
  moeflash client models [--addr HOST:PORT] [--json]
`;

const DEFAULT_ADDR = process.env.MOEFLASH_ROUTER_ADDR ?? '127.0.0.1:50051';

export async function clientCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'generate') return generate(rest);
  if (sub === 'models') return models(rest);
  process.stderr.write(sub && sub !== '--help' ? `moeflash client: unknown subcommand '${sub}'\n\n${USAGE}` : USAGE);
  return sub && sub !== '--help' ? 2 : 0;
}

async function generate(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      addr: { type: 'string', default: DEFAULT_ADDR },
      model: { type: 'string' },
      ...PROMPT_FLAGS,
      ...SAMPLING_FLAGS,
      json: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (!values.model) throw InvalidArgumentError.field('--model', 'required (a model name, see `moeflash client models`)');
  const input = parsePromptFlags(values);
  const request = {
    model: values.model,
    prompt: input.prompt ?? '',
    messages: input.chat?.messages ?? [],
    jsonSchema: input.jsonSchema ?? '',
    topLogprobs: input.topLogprobs,
    ...parseSamplingFlags(values),
    stop: values.stop ?? [],
  };
  return withChannel(values.addr, async (channel, signal, onTrailer) => {
    const client = createClient(GenerationServiceDefinition, channel);
    let complete: GenerateComplete | undefined;
    for await (const response of client.generate(request, { signal, onTrailer })) {
      const event = response.event;
      if (event?.$case === 'chunk') {
        const { tokenIds, text, logprobs } = event.value;
        process.stdout.write(values.json ? JSON.stringify({ tokens: tokenIds, text, ...(logprobs.length > 0 && { logprobs }) }) + '\n' : text);
      } else if (event?.$case === 'complete') {
        complete = event.value;
      }
    }
    if (!complete) throw new Error('the stream ended without a complete message');
    const finish = finishReasonToJSON(complete.finishReason).replace(/^FINISH_REASON_/, '').toLowerCase();
    if (values.json) process.stdout.write(JSON.stringify({ ...complete, finishReason: finish }) + '\n');
    else process.stdout.write('\n');
    const t = complete.timings;
    process.stderr.write(
      `finish=${finish}${complete.matchedStop ? ` stop=${JSON.stringify(complete.matchedStop)}` : ''} ` +
        `prompt_tokens=${complete.usage?.promptTokens ?? 0} completion_tokens=${complete.usage?.completionTokens ?? 0} ` +
        `queue_ms=${(t?.queueMs ?? 0).toFixed(1)} ttft_ms=${(t?.ttftMs ?? 0).toFixed(1)} decode_tps=${(t?.decodeTokensPerSecond ?? 0).toFixed(1)}\n`,
    );
    return complete.finishReason === FinishReason.FINISH_REASON_CANCELLED ? 130 : 0;
  });
}

async function models(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { addr: { type: 'string', default: DEFAULT_ADDR }, json: { type: 'boolean', default: false } },
    strict: true,
  });
  return withChannel(values.addr, async (channel, signal, onTrailer) => {
    const { models } = await createClient(GenerationServiceDefinition, channel).listModels({}, { signal, onTrailer });
    for (const m of models) {
      process.stdout.write(
        values.json
          ? JSON.stringify(m) + '\n'
          : `${m.name}\t${m.architecture}\t${m.description}\tn_expert=${m.nExpert}/${m.nExpertUsed}\tctx=${m.contextSize}\tparallel=${m.parallel}\n`,
      );
    }
    return 0;
  });
}

/**
 * Runs `call` on a channel to `addr`, with Ctrl-C cancelling it; a failed call prints its status and details
 * (field violations, retry delay) to stderr and returns 1.
 */
async function withChannel(
  addr: string,
  call: (channel: Channel, signal: AbortSignal, onTrailer: (trailer: Metadata) => void) => Promise<number>,
): Promise<number> {
  const channel = createChannel(addr);
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  let trailer: Metadata | undefined;
  try {
    return await call(channel, abort.signal, (t) => (trailer = t));
  } catch (err) {
    if (abort.signal.aborted) {
      process.stderr.write('\ncancelled\n');
      return 130;
    }
    if (!(err instanceof ClientError)) throw err;
    process.stderr.write(`moeflash client: ${Status[err.code]}: ${err.details}\n`);
    const bin = trailer?.get(STATUS_DETAILS_KEY);
    if (bin instanceof Uint8Array) {
      const details = decodeStatusDetails(bin);
      for (const v of details.fieldViolations ?? []) process.stderr.write(`  ${v.field}: ${v.description}\n`);
      if (details.retryDelayMs !== undefined) process.stderr.write(`  retry after ${details.retryDelayMs} ms\n`);
    }
    return 1;
  } finally {
    process.removeListener('SIGINT', onSignal);
    channel.close();
  }
}
