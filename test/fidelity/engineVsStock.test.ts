/**
 * Fidelity against the real peer: greedy output of our engine (patched llama.cpp in the addon, continuous
 * batching scheduler) must equal stock llama.cpp's llama-completion built from the same pinned source without
 * our patches — byte for byte, for several prompts, two models, with and without experts kept on the CPU.
 */
import assert from 'node:assert/strict';

import { Engine } from '../../services/engine/Engine';
import { collect } from '../../harness/collect';
import { stockGreedyCompletion } from '../../harness/stockLlama';
import { testModel, type TestPreset } from '../../harness/testModels';

const PROMPTS = ['The quick brown fox', 'Once upon a time, in a land far away,', 'def fibonacci(n):'];
const N_PREDICT = 48;
const CONTEXT = 1024;
const THREADS = 2;

const VARIANTS: { nCpuMoe: number; expertRead?: 'demand'; presets: TestPreset[] }[] = [
  { nCpuMoe: 0, presets: ['tiny', 'small'] },
  { nCpuMoe: 2, presets: ['tiny', 'small'] },
  // experts read on demand (patches/llama.cpp/0012 + ExpertPager): only when pages are read changes
  { nCpuMoe: 0, expertRead: 'demand', presets: ['small'] },
];

for (const { nCpuMoe, expertRead, presets } of VARIANTS) {
  for (const preset of presets) {
    const variant = [nCpuMoe ? `experts of the first ${nCpuMoe} layers on CPU` : '', expertRead ? 'experts read on demand' : ''].filter(Boolean).join(', ');
    describe(`fidelity: ${preset} model${variant ? `, ${variant}` : ''}`, function () {
      let engine: Engine;
      let model: string;

      before(async function () {
        model = await testModel(preset);
        engine = await Engine.load({ path: model, contextSize: CONTEXT, threads: THREADS, parallel: 2, nCpuMoe, expertRead: expertRead ?? 'load' });
      });
      after(async () => engine?.close());

      for (const prompt of PROMPTS) {
        it(`greedy bytes equal llama-completion's for "${prompt}"`, async function () {
          // one after the other: two thread pools spinning on CI's 2 cores make both many times slower
          const ours = await collect(engine.generate({ prompt, maxTokens: N_PREDICT, sampling: { temperature: 0 } }));
          const stock = await stockGreedyCompletion({ model, prompt, nPredict: N_PREDICT, contextSize: CONTEXT, threads: THREADS, nCpuMoe });
          assert.ok(ours.tokens.length > 0, 'generated no tokens');
          assert.equal(engine.tokenBytes(ours.tokens).toString('hex'), stock.toString('hex'));
        });
      }
    });
  }
}
