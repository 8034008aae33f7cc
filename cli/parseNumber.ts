import { InvalidArgumentError } from '../services/common/errors';

/** Parses an optional numeric flag; a malformed value is an InvalidArgumentError naming the flag. */
export function parseNumber(flag: string, value: string | undefined, integer = false): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n)))
    throw InvalidArgumentError.field(`--${flag}`, `expected ${integer ? 'an integer' : 'a number'}, got '${value}'`);
  return n;
}
