import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../services/common/errors';
import { parseConfig } from '../../services/common/parseConfig';
import { resolveModelSpecs } from '../../services/inference/resolveModelSpecs';

describe('parseConfig', () => {
  it('defaults to the ports of INTERFACES.md and routes to the local inference service', () => {
    const c = parseConfig([], {});
    assert.equal(c.routerAddr, '127.0.0.1:50051');
    assert.equal(c.inferenceAddr, '127.0.0.1:50061');
    assert.equal(c.expertStoreAddr, '127.0.0.1:50071');
    assert.deepEqual(c.router.backends, ['127.0.0.1:50061']);
    assert.equal(c.inference.model, undefined);
  });

  it('reads MOEFLASH_* variables, and flags override them', () => {
    const env = {
      MOEFLASH_BACKENDS: '10.0.0.1:50061, 10.0.0.2:50061',
      MOEFLASH_MODEL: '/models/a.gguf',
      MOEFLASH_ROUTER_MAX_IN_FLIGHT: '8',
      MOEFLASH_INFERENCE_ADDR: '0.0.0.0:6000',
    };
    const c = parseConfig(['--max-in-flight', '16', '--shutdown-grace-ms=500'], env);
    assert.deepEqual(c.router.backends, ['10.0.0.1:50061', '10.0.0.2:50061']);
    assert.equal(c.router.maxInFlightPerBackend, 16);
    assert.equal(c.shutdownGraceMs, 500);
    assert.equal(c.inference.model, '/models/a.gguf');
    assert.equal(c.inferenceAddr, '0.0.0.0:6000');
  });

  it('names every bad setting, flag and variable both', () => {
    assert.throws(
      () => parseConfig(['--max-queued', '-1', '--bogus', 'x'], { MOEFLASH_BACKENDS: 'nohost', MOEFLASH_LOG_LEVEL: 'loud' }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError);
        const fields = err.violations.map((v) => v.field);
        assert.deepEqual(fields.sort(), [
          '--backends (MOEFLASH_BACKENDS)',
          '--bogus',
          '--log-level (MOEFLASH_LOG_LEVEL)',
          '--max-queued (MOEFLASH_ROUTER_MAX_QUEUED)',
        ]);
        return true;
      },
    );
  });

  it('rejects a flag without a value', () => {
    assert.throws(() => parseConfig(['--model'], {}), /--model: needs a value/);
  });

  describe("the default model's engine options (the option table's flags and MOEFLASH_* variables)", () => {
    const modelOptions = (argv: string[], env: Record<string, string>) => parseConfig(argv, env).inference.modelOptions;

    it('are empty unless set; the expert cache is off unless slots or a memory budget is set', () => {
      assert.deepEqual(modelOptions([], {}), {});
    });

    it('reads slots, a memory budget with a unit, the policy (slru included) and GPU placement', () => {
      const env = { MOEFLASH_EXPERT_CACHE_SLOTS: '16', MOEFLASH_EXPERT_CACHE_MEM: '40GiB', MOEFLASH_EXPERT_CACHE_POLICY: 'slru', MOEFLASH_N_GPU_LAYERS: '99' };
      assert.deepEqual(modelOptions([], env), { nGpuLayers: 99, expertCache: { slots: 16, memBytes: 40 * 1024 ** 3, policy: 'slru' } });
      assert.deepEqual(modelOptions(['--expert-cache-mem', '512MiB', '--n-cpu-moe', '4'], {}), { nCpuMoe: 4, expertCache: { memBytes: 512 * 1024 ** 2 } });
    });

    it('reads booleans from 1/0, true/false, on/off', () => {
      assert.deepEqual(modelOptions([], { MOEFLASH_EXPERT_CACHE_SLOTS: '8', MOEFLASH_EXPERT_CACHE_PREFETCH: 'on' }), { expertCache: { slots: 8, prefetch: true } });
      assert.deepEqual(modelOptions(['--expert-cache-prefetch', '0'], { MOEFLASH_EXPERT_CACHE_SLOTS: '8' }), { expertCache: { slots: 8, prefetch: false } });
    });

    it('`auto` slots turn the cache on, sized by the engine', () => {
      assert.deepEqual(modelOptions([], { MOEFLASH_EXPERT_CACHE_SLOTS: 'auto' }), { expertCache: {} });
    });

    it('names the flag and variable of each bad value', () => {
      const fieldsOf = (env: Record<string, string>) => {
        try {
          parseConfig([], env);
        } catch (err) {
          assert.ok(err instanceof InvalidArgumentError);
          return err.violations.map((v) => `${v.field}: ${v.description}`);
        }
        assert.fail('expected InvalidArgumentError');
      };
      assert.deepEqual(fieldsOf({ MOEFLASH_EXPERT_CACHE_SLOTS: 'many' }), [
        "--expert-cache-slots (MOEFLASH_EXPERT_CACHE_SLOTS): expected an integer in [1, 1048576], or auto, got 'many'",
      ]);
      assert.deepEqual(fieldsOf({ MOEFLASH_EXPERT_CACHE_SLOTS: '0' }), ["--expert-cache-slots (MOEFLASH_EXPERT_CACHE_SLOTS): expected an integer in [1, 1048576], or auto, got '0'"]);
      assert.deepEqual(fieldsOf({ MOEFLASH_EXPERT_CACHE_MEM: '40 parsecs' }), [
        "--expert-cache-mem (MOEFLASH_EXPERT_CACHE_MEM): expected a size in bytes, with an optional unit (40GiB, 512MiB), got '40 parsecs'",
      ]);
      assert.deepEqual(fieldsOf({ MOEFLASH_EXPERT_CACHE_SLOTS: '8', MOEFLASH_EXPERT_CACHE_POLICY: 'fifo' }), [
        "--expert-cache-policy (MOEFLASH_EXPERT_CACHE_POLICY): expected one of lru2, lru, slru, got 'fifo'",
      ]);
      assert.deepEqual(fieldsOf({ MOEFLASH_EXPERT_CACHE_SLOTS: '8', MOEFLASH_EXPERT_CACHE_PREFETCH: 'maybe' }), [
        "--expert-cache-prefetch (MOEFLASH_EXPERT_CACHE_PREFETCH): expected true or false (1 or 0), got 'maybe'",
      ]);
      assert.deepEqual(fieldsOf({ MOEFLASH_N_GPU_LAYERS: '-2' }), ["--n-gpu-layers (MOEFLASH_N_GPU_LAYERS): expected an integer in [-1, 100000], got '-2'"]);
      assert.deepEqual(fieldsOf({ MOEFLASH_EXPERT_CACHE_PREFETCH: '1' }), [
        '--expert-cache-prefetch (MOEFLASH_EXPERT_CACHE_PREFETCH): needs --expert-cache-slots (MOEFLASH_EXPERT_CACHE_SLOTS) or --expert-cache-mem (MOEFLASH_EXPERT_CACHE_MEM)',
      ]);
    });

    it('go to the MOEFLASH_MODEL model only; with a models file alone it is an error naming the variable', () => {
      const { inference } = parseConfig([], { MOEFLASH_MODEL: '/m/tiny.gguf', MOEFLASH_EXPERT_CACHE_SLOTS: '4', MOEFLASH_THREADS: '2' });
      assert.deepEqual(resolveModelSpecs(inference), [{ name: 'tiny', options: { path: '/m/tiny.gguf', threads: 2, expertCache: { slots: 4 } } }]);
      const fileOnly = parseConfig([], { MOEFLASH_MODELS: '/etc/models.json', MOEFLASH_EXPERT_CACHE_MEM: '1GiB' }).inference;
      assert.throws(
        () => resolveModelSpecs(fileOnly, () => '{"a": {"path": "a.gguf"}}'),
        (err: unknown) => err instanceof InvalidArgumentError && err.violations.length === 1 && err.violations[0].field === 'MOEFLASH_EXPERT_CACHE_MEM',
      );
    });
  });
});
