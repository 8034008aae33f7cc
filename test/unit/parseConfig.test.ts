import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../services/common/errors';
import { parseConfig } from '../../services/common/parseConfig';

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
});
