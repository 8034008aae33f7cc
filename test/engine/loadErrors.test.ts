/** Loading bad model files fails with a typed error naming the file and the reason; the process survives. */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { InvalidArgumentError, ModelLoadError } from '../../services/common/errors';
import { Engine } from '../../services/engine/Engine';
import { writeMinimalGguf } from '../../harness/writeMinimalGguf';
import { testModel } from '../../harness/testModels';

describe('engine load errors', function () {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'moeflash-load-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const rejectsWith = (path: string, reason: RegExp) =>
    assert.rejects(Engine.load({ path, threads: 2 }), (e: unknown) => e instanceof ModelLoadError && e.message.includes(path) && reason.test(e.message));

  it('missing file', () => rejectsWith(join(dir, 'absent.gguf'), /no such file/));

  it('not a GGUF', () => {
    const path = join(dir, 'text.gguf');
    writeFileSync(path, 'this is not a model\n');
    return rejectsWith(path, /not a GGUF/);
  });

  it('truncated GGUF', async () => {
    const path = join(dir, 'truncated.gguf');
    copyFileSync(await testModel('tiny'), path);
    truncateSync(path, Math.floor(readFileSync(path).length * 0.6));
    return rejectsWith(path, /truncated/);
  });

  it('header cut inside the metadata', async () => {
    const path = join(dir, 'cut-header.gguf');
    writeFileSync(path, readFileSync(await testModel('tiny')).subarray(0, 200));
    return rejectsWith(path, /not a valid GGUF/);
  });

  it('unsupported architecture', () => {
    const path = join(dir, 'unknown-arch.gguf');
    writeMinimalGguf(path, { 'general.architecture': 'no-such-arch' });
    return rejectsWith(path, /unknown model architecture/);
  });

  it('invalid load options name the option', () =>
    assert.rejects(Engine.load({ path: 'x.gguf', contextSize: 3 }), (e: unknown) => e instanceof InvalidArgumentError && e.violations[0].field === 'contextSize'));
});
