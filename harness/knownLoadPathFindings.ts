import type { LoadPathFinding } from './loadPathFuzz';

/**
 * Findings of the load-path fuzzer that are known, documented (docs/RELIABILITY.md, "Fuzzing the GGUF load path")
 * and not fixed yet. The CI test tolerates these and fails on anything else; remove an entry with its fix, and the
 * test then holds the fix. Empty: every class found so far is fixed (test/hardening/loadPathFindings.test.ts has a
 * crafted file for each).
 */
export interface KnownFinding {
  id: string;
  /** Where the guard belongs. */
  where: string;
  matches(f: LoadPathFinding): boolean;
}

const KNOWN_LOAD_PATH_FINDINGS: readonly KnownFinding[] = [];

/** The known finding `f` is an instance of, if any. */
export function knownFindingOf(f: LoadPathFinding): KnownFinding | undefined {
  return KNOWN_LOAD_PATH_FINDINGS.find((k) => k.matches(f));
}
