import { parseByteSize } from '../parseByteSize';

/**
 * The type and range of an option, once: how a flag or variable's text is read, which typed values (a models file,
 * the TypeScript API) are accepted, and the words help and errors use for them.
 */
export interface OptionKind<T> {
  /** The accepted values in words: 'an integer in [1, 256]'. */
  readonly describe: string;
  /** parseArgs' type for the flag: a boolean option is a flag without a value. */
  readonly cli: 'string' | 'boolean';
  /** A valid value as text (help, tests). */
  readonly example: string;
  /** From a flag or variable; undefined when the text is not a value of this kind. */
  parse(raw: string | boolean): T | undefined;
  /** Whether a typed value is one of this kind. */
  accepts(value: unknown): value is T;
}

export function integer(min: number, max: number): OptionKind<number> {
  const accepts = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= min && (v as number) <= max;
  return {
    describe: `an integer in [${min}, ${max}]`,
    cli: 'string',
    example: String(Math.max(min, Math.min(max, 1))),
    parse: (raw) => (typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) && accepts(Number(raw)) ? Number(raw) : undefined),
    accepts,
  };
}

export function oneOf<const V extends string>(...values: V[]): OptionKind<V> {
  const accepts = (v: unknown): v is V => typeof v === 'string' && (values as string[]).includes(v);
  return { describe: `one of ${values.join(', ')}`, cli: 'string', example: values[values.length - 1], parse: (raw) => (accepts(raw) ? raw : undefined), accepts };
}

const BOOLEAN_WORDS: Record<string, boolean> = { '1': true, true: true, on: true, yes: true, '0': false, false: false, off: false, no: false };

/** true/false; from text 1/0, true/false, on/off (variables), or a flag's presence. */
export const flag: OptionKind<boolean> = {
  describe: 'true or false (1 or 0)',
  cli: 'boolean',
  example: '1',
  parse: (raw) => (typeof raw === 'boolean' ? raw : BOOLEAN_WORDS[raw.trim().toLowerCase()]),
  accepts: (v): v is boolean => typeof v === 'boolean',
};

/** Bytes: a positive integer, from text with an optional unit (40GiB, 512M). */
export const byteSize: OptionKind<number> = {
  describe: 'a size in bytes, with an optional unit (40GiB, 512MiB)',
  cli: 'string',
  example: '512MiB',
  parse: (raw) => {
    if (typeof raw !== 'string') return undefined;
    try {
      const bytes = parseByteSize('', raw);
      return bytes > 0 ? bytes : undefined;
    } catch {
      return undefined;
    }
  },
  accepts: (v): v is number => Number.isSafeInteger(v) && (v as number) > 0,
};

/** A size in bytes, or 'auto' for the engine to size it, or 'off'. */
export const byteSizeAutoOrOff: OptionKind<number | 'auto' | 'off'> = {
  describe: `${byteSize.describe}, auto or off`,
  cli: 'string',
  example: byteSize.example,
  parse: (raw) => (raw === 'auto' || raw === 'off' ? raw : byteSize.parse(raw)),
  accepts: (v): v is number | 'auto' | 'off' => v === 'auto' || v === 'off' || byteSize.accepts(v),
};

/** A count, or 'auto' for the engine to size it. */
export function countOrAuto(min: number, max: number): OptionKind<number | 'auto'> {
  const count = integer(min, max);
  return {
    describe: `${count.describe}, or auto`,
    cli: 'string',
    example: count.example,
    parse: (raw) => (raw === 'auto' ? 'auto' : count.parse(raw)),
    accepts: (v): v is number | 'auto' => v === 'auto' || count.accepts(v),
  };
}
