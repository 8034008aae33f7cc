/** The engine option table reaches the CLI, the services, validation and the README from one entry each. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

import { InvalidArgumentError, type FieldViolation } from '../../services/common/errors';
import { LOAD_OPTIONS } from '../../services/common/options/loadOptionTable';
import { checkLoadOptions, loadOptionFlags, loadOptionValue, withLoadOptionsTable } from '../../services/common/options/optionTable';
import { parseConfig } from '../../services/common/parseConfig';
import { validateLoad } from '../../services/engine/validateOptions';
import { testModel } from '../../harness/testModels';

const root = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(root, 'bin', 'moeflash.js');
/** Turns the expert cache on, which its other options need. */
const CACHE_ON = { MOEFLASH_EXPERT_CACHE_SLOTS: '4' };

describe('the engine option table', () => {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');

  for (const o of LOAD_OPTIONS) {
    it(`${o.key}: a CLI flag, a service setting, a checked value and a README row`, () => {
      // the CLI: a flag of `moeflash generate` (and the services' flag parser takes the same name)
      assert.equal(loadOptionFlags()[o.flag]?.type, o.kind.cli);
      // the services: the variable sets the default model's option
      const value = loadOptionValue(parseConfig([], { ...CACHE_ON, [o.env]: o.kind.example }).inference.modelOptions ?? {}, o.key);
      assert.deepEqual(value, o.kind.example === 'auto' ? undefined : o.kind.parse(o.kind.example));
      // validation: a value of the wrong type is named by its key, in a models file or the API
      const violations: FieldViolation[] = [];
      const [head, tail] = o.key.split('.');
      checkLoadOptions(tail ? { [head]: { [tail]: { wrong: true } } } : { [head]: { wrong: true } }, violations);
      assert.deepEqual(violations.map((v) => v.field), [o.key]);
      // the README: a row with the flag, the variable and the key
      assert.ok(readme.includes(`| \`--${o.flag}\` | \`${o.env}\` | \`${o.key}\` |`), `README row of ${o.key}`);
    });
  }

  it("the README's table is the table's current rendering (npm run docs:options)", () => {
    assert.equal(withLoadOptionsTable(readme), readme);
  });

  it('validateLoad names a bad option by its key, as the models file spells it', () => {
    assert.throws(
      () => validateLoad({ path: 'm.gguf', expertCache: { policy: 'fifo' as 'lru' }, threads: 0 }),
      (err: unknown) => err instanceof InvalidArgumentError && err.violations.map((v) => v.field).sort().join() === 'expertCache.policy,threads',
    );
  });

  it('`moeflash generate --expert-cache-policy slru` runs the cache with that policy', async () => {
    const { stderr } = await promisify(execFile)(process.execPath, [
      BIN, 'generate', '--model', await testModel('tiny'), '--prompt', 'The quick brown fox', '--max-tokens', '4', '--temperature', '0',
      '--threads', '1', '--expert-cache-slots', '4', '--expert-cache-policy', 'slru',
    ]);
    assert.match(stderr, /^expert_cache hit_rate=/m);
    await assert.rejects(
      promisify(execFile)(process.execPath, [BIN, 'generate', '--model', 'm.gguf', '--prompt', 'x', '--expert-cache-slots', '4', '--expert-cache-policy', 'fifo']),
      (err: { code?: number; stderr?: string }) => err.code === 2 && /--expert-cache-policy: expected one of lru2, lru, slru, got 'fifo'/.test(err.stderr ?? ''),
    );
  });
});
