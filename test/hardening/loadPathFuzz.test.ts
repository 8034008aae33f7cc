import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseGguf, serializeGguf } from '../../harness/GgufFile';
import { GgufMutator } from '../../harness/GgufMutator';
import { knownFindingOf } from '../../harness/knownLoadPathFindings';
import { fuzzLoadPath } from '../../harness/loadPathFuzz';
import { writeMicroModel } from '../../harness/writeMicroModel';

const MUTATIONS = Number(process.env.MOEFLASH_LOAD_FUZZ_CASES ?? 200);
const SEED = Number(process.env.MOEFLASH_LOAD_FUZZ_SEED ?? 7);

describe('hardening: mutated GGUF files through the real load path', function () {
  this.timeout(Math.max(120_000, MUTATIONS * 500));
  let dir: string;
  let seedFile: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-load-fuzz-'));
    seedFile = await writeMicroModel(join(dir, 'micro.gguf'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('the GGUF codec round-trips the seed byte for byte, and mutations are deterministic for (seed, index)', () => {
    const bytes = readFileSync(seedFile);
    const file = parseGguf(bytes);
    assert.ok(file.tensors.some((t) => t.name === 'blk.1.ffn_up_exps.weight'));
    assert.ok(serializeGguf(file).equals(bytes));
    const a = GgufMutator(bytes, 3);
    const b = GgufMutator(bytes, 3);
    for (const i of [0, 1, 57]) assert.ok(a(i).bytes.equals(b(i).bytes) && a(i).label === b(i).label);
    assert.notEqual(a(1).label + a(2).label, GgufMutator(bytes, 4)(1).label + GgufMutator(bytes, 4)(2).label);
  });

  it(`${MUTATIONS} mutations each load or are rejected with a clear error; the loading process never crashes, hangs or throws untyped`, async () => {
    const report = await fuzzLoadPath({ seedFile, mutations: MUTATIONS, seed: SEED, workDir: dir, timeoutMs: 30_000 });
    const unknown = report.findings.filter((f) => !knownFindingOf(f));
    assert.deepEqual(
      unknown.map((f) => `#${f.index} ${f.kind} in ${f.stage}: ${f.label}: ${f.detail}`),
      [],
      `reproducers are kept in ${dir}/findings until the end of the test`,
    );
    assert.equal(report.mutations, MUTATIONS);
    // The mutations reach every stage and past it: some files load all the way through a generation.
    for (const [stage, s] of Object.entries(report.stages)) {
      assert.ok(s.loaded > 0 && s.rejected > 0, `${stage}: ${JSON.stringify(s)}`);
    }
    if (process.env.MOEFLASH_FUZZ_REPORT) console.log(JSON.stringify({ ...report, findings: report.findings.map((f) => ({ ...f, known: knownFindingOf(f)?.id })) }, null, 1));
  });
});
