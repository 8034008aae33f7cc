/** Sizes written by people: "40GiB", "512MiB", "1.5g", "1000000" (bytes). */
import { InvalidArgumentError } from './errors';

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1e3, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2, g: 1e9, gb: 1e9, gib: 1024 ** 3 };

/** "40GiB", "512MiB", "1.5g", "1000000" -> bytes; anything else is an InvalidArgumentError naming `field`. */
export function parseByteSize(field: string, value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw InvalidArgumentError.field(field, `expected a size such as 40GiB or 512MiB, got '${value}'`);
  return Math.floor(Number(m[1]) * unit);
}
