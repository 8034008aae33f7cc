/** The patch pipeline: a series applies in order onto a fresh tree, and a patch that does not apply fails loudly. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { repoRoot } from '../../services/engine/loadAddon';

const run = promisify(execFile);

describe('prepare-llama-cpp.sh', function () {
  this.timeout(180_000);
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'moeflash-prepare-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const prepare = (patchesDir: string, src: string) =>
    run('bash', [join(repoRoot(), 'scripts', 'prepare-llama-cpp.sh'), 'patched'], {
      env: { ...process.env, MOEFLASH_PATCHES_DIR: patchesDir, MOEFLASH_LLAMA_SRC: src },
    });

  it('applies the series in order and records the source', async function () {
    const src = join(dir, 'ok', 'src');
    const { stdout } = await prepare(join(repoRoot(), 'patches', 'llama.cpp'), src);
    assert.match(stdout, /patched tree at [0-9a-f]{40} with \d+ patches/);
    assert.match(readFileSync(join(src, 'include', 'llama.h'), 'utf8'), /llama_set_moe_routing_record/);
    const source = JSON.parse(readFileSync(join(dir, 'ok', 'source.json'), 'utf8'));
    assert.equal(source.package, 'node-llama-cpp@3.21.1');
    // unchanged series: nothing to do
    assert.match((await prepare(join(repoRoot(), 'patches', 'llama.cpp'), src)).stdout, /up to date/);
  });

  it('fails naming the patch that does not apply, and leaves no stamp', async function () {
    const patches = join(dir, 'bad-patches');
    cpSync(join(repoRoot(), 'patches', 'llama.cpp'), patches, { recursive: true });
    const broken = readFileSync(join(patches, '0002-llama-record-moe-routing.patch'), 'utf8').replace(/^ /m, ' no such context line ');
    writeFileSync(join(patches, '0002-llama-record-moe-routing.patch'), broken);
    const src = join(dir, 'bad', 'src');
    await assert.rejects(prepare(patches, src), (e: { code?: number; stderr?: string }) => {
      assert.equal(e.code, 1);
      assert.match(e.stderr ?? '', /patch does not apply: .*bad-patches\/0002-llama-record-moe-routing\.patch/);
      return true;
    });
    assert.equal(existsSync(join(src, '.moeflash-stamp')), false);
  });
});
