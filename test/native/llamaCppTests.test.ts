/** llama.cpp's own tests, run on our patched build: the patches must not break the operators they touch. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { patchedBinary } from '../../harness/stockLlama';

const run = promisify(execFile);

describe("llama.cpp's own tests on the patched build", function () {
  this.timeout(600_000);

  it('test-backend-ops -o MUL_MAT_ID passes on the CPU backend', async function () {
    const { stdout } = await run(patchedBinary('test-backend-ops'), ['test', '-o', 'MUL_MAT_ID', '-b', 'CPU'], { maxBuffer: 256 << 20 });
    // guard against "nothing tested, still OK": the CPU backend must have run cases
    const passed = /(\d+)\/(\d+) tests passed/.exec(stdout);
    assert.ok(passed, `no test summary in output:\n${stdout.slice(-2000)}`);
    assert.equal(passed[1], passed[2]);
    assert.ok(Number(passed[2]) > 100, `only ${passed[2]} MUL_MAT_ID cases ran`);
    assert.match(stdout, /Backend CPU: .*OK|OK\s*$/m);
  });

  it('test-backend-ops -o MOE_SLOTS (the expert cache op, patch 0010) passes on the CPU backend', async function () {
    const { stdout } = await run(patchedBinary('test-backend-ops'), ['test', '-o', 'MOE_SLOTS', '-b', 'CPU'], { maxBuffer: 16 << 20 });
    const passed = /(\d+)\/(\d+) tests passed/.exec(stdout);
    assert.ok(passed, `no test summary in output:\n${stdout.slice(-2000)}`);
    assert.equal(passed[1], passed[2]);
    assert.ok(Number(passed[2]) >= 16, `only ${passed[2]} MOE_SLOTS cases ran`);
  });

  it('test-gguf passes', async function () {
    const { stdout, stderr } = await run(patchedBinary('test-gguf'), [], { maxBuffer: 64 << 20 });
    assert.doesNotMatch(stdout + stderr, /FAIL/);
  });
});
