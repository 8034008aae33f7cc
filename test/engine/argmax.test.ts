/**
 * The scheduler's greedy pick (native/src/Argmax.cpp) must be the token llama.cpp's greedy sampler picks: the first
 * highest logit. It scans 16 running maxima and then looks for the first index holding the maximum, so the cases
 * that could go wrong are ties, a maximum in the tail after the last full group of 16, NaN and -inf.
 */
import assert from 'node:assert/strict';

import { loadAddon } from '../../services/engine/loadAddon';

/** The obvious loop: what the greedy sampler does. */
function firstHighest(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

describe('greedy pick over the logits', function () {
  const argmax = (values: number[] | Float32Array) => loadAddon().argmaxOfLogits(Float32Array.from(values));

  it('picks the first of equal maxima, in different groups of 16 and in one', function () {
    const logits = new Float32Array(151_936).fill(-3);
    logits[70_001] = 5;
    logits[140_000] = 5;
    logits[17] = 5;
    assert.equal(argmax(logits), 17);
    assert.equal(argmax([1, 7, 7, 0]), 1);
  });

  it('finds a maximum in the tail after the last full group of 16 (37 logits)', function () {
    const logits = Array.from({ length: 37 }, (_, i) => i % 5);
    logits[36] = 9;
    assert.equal(argmax(logits), 36);
  });

  it('never picks NaN; all -inf or NaN gives the first token, as the sampler does', function () {
    assert.equal(argmax([NaN, 1, NaN, 2, NaN]), 3);
    assert.equal(argmax([-Infinity, -Infinity, -Infinity]), 0);
    assert.equal(argmax([NaN, NaN]), 0);
  });

  it('agrees with the obvious loop on random logits of a 151 936-token vocabulary', function () {
    let seed = 12345;
    const next = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 20 - 10;
    for (let round = 0; round < 20; round++) {
      const logits = Float32Array.from({ length: 151_936 - round }, next);
      assert.equal(argmax(logits), firstHighest(logits), `round ${round}`);
    }
  });
});
