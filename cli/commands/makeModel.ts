/** `moeflash make-model`: writes a random-weight MoE GGUF (qwen3moe), with a progress bar on stderr. */
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { InvalidArgumentError } from '../../services/common/errors';
import { MODEL_PRESETS, makeModel, resolveModelSpec } from '../../services/engine/makeModel';
import type { ModelPresetName, ModelSpec, ModelWeightType } from '../../services/engine/makeModel';

/** Integer flags and the ModelSpec field each sets (the addon's errors name fields; users typed flags). */
const SHAPE_FLAGS = {
  layers: 'layers',
  experts: 'experts',
  'experts-used': 'expertsUsed',
  embd: 'embd',
  'expert-ff': 'expertFf',
  heads: 'heads',
  'kv-heads': 'kvHeads',
  'head-dim': 'headDim',
  vocab: 'vocabSize',
  'ctx-size': 'contextLength',
  seed: 'seed',
  threads: 'threads',
} as const satisfies Record<string, keyof ModelSpec>;

const TYPES: readonly ModelWeightType[] = ['f16', 'q8_0', 'q4_0'];

const USAGE = `usage: moeflash make-model --out PATH [--preset ${Object.keys(MODEL_PRESETS).join('|')}] [--seed N]
                           [--type ${TYPES.join('|')}] [--layers N] [--experts N] [--experts-used N] [--embd N]
                           [--expert-ff N] [--heads N] [--kv-heads N] [--head-dim N] [--vocab N] [--ctx-size N]
                           [--threads N] [--no-chat-template] [--quiet]
Writes a random-weight qwen3moe GGUF (deterministic for a seed). Shape flags override the preset (default tiny).
The model carries a ChatML chat template unless --no-chat-template.
`;

function parseCount(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw InvalidArgumentError.field(`--${flag}`, `expected a non-negative integer, got '${value}'`);
  }
  return Number(value);
}

function flagOf(field: string): string {
  if (field === 'type' || field === 'preset') return `--${field}`;
  const entry = Object.entries(SHAPE_FLAGS).find(([, f]) => f === field);
  return entry ? `--${entry[0]}` : field;
}

export async function makeModelCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string', short: 'o' },
      preset: { type: 'string' },
      type: { type: 'string' },
      quiet: { type: 'boolean', short: 'q', default: false },
      'no-chat-template': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      ...Object.fromEntries(Object.keys(SHAPE_FLAGS).map((flag) => [flag, { type: 'string' as const }])),
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (typeof values.out !== 'string' || values.out === '') {
    throw InvalidArgumentError.field('--out', 'required (path of the GGUF file to write)');
  }
  if (values.preset !== undefined && !Object.prototype.hasOwnProperty.call(MODEL_PRESETS, values.preset)) {
    throw InvalidArgumentError.field('--preset', `expected one of ${Object.keys(MODEL_PRESETS).join(', ')}, got '${values.preset}'`);
  }
  if (values.type !== undefined && !TYPES.includes(values.type as ModelWeightType)) {
    throw InvalidArgumentError.field('--type', `expected one of ${TYPES.join(', ')}, got '${values.type}'`);
  }
  const spec: ModelSpec = {
    preset: values.preset as ModelPresetName | undefined,
    type: values.type as ModelWeightType | undefined,
    ...(values['no-chat-template'] && { chatTemplate: '' }),
  };
  for (const [flag, field] of Object.entries(SHAPE_FLAGS)) {
    const value = parseCount(flag, (values as Record<string, string | boolean | undefined>)[flag] as string | undefined);
    if (value !== undefined) (spec as Record<string, number>)[field] = value;
  }

  const shape = resolveModelSpec(spec);
  const bar = values.quiet ? undefined : new ProgressBar(process.stderr);
  if (!values.quiet) {
    process.stderr.write(
      `make-model: ${shape.preset} ${shape.type}, ${shape.layers} layers, ${shape.experts} experts (top-${shape.expertsUsed}), ` +
        `d ${shape.embd}, expert ff ${shape.expertFf}, vocab ${shape.vocabSize}, seed ${shape.seed}\n`,
    );
  }
  const started = Date.now();
  // Ctrl-C mid-write: the native writer only removes its temporary file on errors it sees, so remove it here.
  const onSigint = () => {
    bar?.finish();
    rmSync(`${resolve(values.out as string)}.tmp`, { force: true });
    process.stderr.write('make-model: interrupted\n');
    process.exit(130);
  };
  process.once('SIGINT', onSigint);
  try {
    const result = await makeModel(values.out, spec, bar && ((done, total) => bar.update(done, total)));
    bar?.finish();
    const seconds = (Date.now() - started) / 1000;
    if (!values.quiet) {
      process.stderr.write(
        `make-model: wrote ${result.path} (${formatMB(result.bytes)}, ${result.tensors} tensors) in ${seconds.toFixed(1)} s\n`,
      );
    }
    return 0;
  } catch (e) {
    bar?.finish();
    if (e instanceof InvalidArgumentError) {
      // Say which flag to change rather than which ModelSpec field.
      throw new InvalidArgumentError(e.violations.map((v) => ({ field: flagOf(v.field), description: v.description })));
    }
    process.stderr.write(`moeflash make-model: ${(e as Error).message}\n`);
    return 1;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

function formatMB(bytes: number): string {
  return bytes >= 1 << 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** One self-rewriting line on a terminal; a plain line every few seconds when stderr is a file or pipe (CI logs). */
class ProgressBar {
  private readonly tty: boolean;
  private readonly started = Date.now();
  private lastDraw: number;
  private drawn = false;

  constructor(private readonly stream: NodeJS.WriteStream) {
    this.tty = stream.isTTY === true;
    // a log gets its first line after a few seconds, so quick runs (the tiny model) print none
    this.lastDraw = this.tty ? 0 : this.started;
  }

  update(done: number, total: number): void {
    const now = Date.now();
    const complete = done >= total;
    if (this.tty ? !complete && now - this.lastDraw < 100 : complete || now - this.lastDraw < 5000) return;
    this.lastDraw = now;
    const seconds = Math.max((now - this.started) / 1000, 1e-3);
    const percent = total > 0 ? (100 * done) / total : 100;
    const text = `${percent.toFixed(0).padStart(3)}%  ${formatMB(done)} / ${formatMB(total)}  ${(done / 2 ** 20 / seconds).toFixed(1)} MiB/s`;
    if (this.tty) {
      const width = 30;
      const filled = Math.round((width * percent) / 100);
      this.stream.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${text}\x1b[K`);
      this.drawn = true;
    } else {
      this.stream.write(`make-model: ${text.trimStart()}\n`);
    }
  }

  /** Ends the bar's line so the next message starts on its own. */
  finish(): void {
    if (this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
