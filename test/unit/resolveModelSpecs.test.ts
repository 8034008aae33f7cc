import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../services/common/errors';
import { resolveModelSpecs } from '../../services/inference/resolveModelSpecs';

describe('resolveModelSpecs', () => {
  it('names MOEFLASH_MODEL after its file, split suffix dropped', () => {
    assert.deepEqual(resolveModelSpecs({ model: '/m/tiny-moe.gguf' }), [{ name: 'tiny-moe', options: { path: '/m/tiny-moe.gguf' } }]);
    assert.equal(resolveModelSpecs({ model: '/m/big-00001-of-00003.gguf' })[0].name, 'big');
  });

  it('reads name -> { path, options } from the MOEFLASH_MODELS file, paths relative to it', () => {
    const file = JSON.stringify({ a: { path: 'a.gguf', options: { parallel: 8 } }, b: { path: '/abs/b.gguf' } });
    const specs = resolveModelSpecs({ modelsFile: '/etc/moeflash/models.json' }, () => file);
    assert.deepEqual(specs, [
      { name: 'a', options: { parallel: 8, path: '/etc/moeflash/a.gguf' } },
      { name: 'b', options: { path: '/abs/b.gguf' } },
    ]);
  });

  it('names what is wrong with the configuration', () => {
    assert.throws(() => resolveModelSpecs({}), /no model configured/);
    assert.throws(
      () => resolveModelSpecs({ model: '/x/a.gguf', modelsFile: 'm.json' }, () => '{"a": {"path": "a.gguf"}, "b": {}}'),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError);
        assert.deepEqual(err.violations.map((v) => v.field).sort(), ['models.a', 'models.b.path']);
        return true;
      },
    );
    assert.throws(() => resolveModelSpecs({ modelsFile: 'm.json' }, () => 'not json'), /cannot read m.json/);
  });
});
