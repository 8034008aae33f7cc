/** The embedded engine on a generated model: streaming, batching, cancellation, limits and errors. */
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';

import { InvalidArgumentError } from '../../services/common/errors';
import { Engine } from '../../services/engine/Engine';
import { collect } from '../../harness/collect';
import { testModel } from '../../harness/testModels';

describe('engine', function () {
  let engine: Engine;

  before(async function () {
    engine = await Engine.load({ path: await testModel('tiny'), contextSize: 512, parallel: 4, threads: 2 });
  });
  after(async () => engine?.close());

  it('reports the model facts a scheduler needs', function () {
    const info = engine.info;
    assert.equal(info.architecture, 'qwen3moe');
    assert.ok(info.nExpert >= 2 && info.nExpertUsed >= 1 && info.nExpertUsed <= info.nExpert);
    assert.equal(info.expertBytesPerLayer.length, info.nLayer);
    assert.ok(info.expertBytesPerLayer.every((b) => b > 0));
    assert.equal(info.bytesPerExpert * info.nExpert, info.expertBytesPerLayer[0]);
    assert.equal(info.contextSize, 512);
    assert.equal(info.parallel, 4);
  });

  it('tokenize and detokenize round-trip text', function () {
    const tokens = engine.tokenize('hello world', { addSpecial: false });
    assert.ok(tokens.length > 0);
    assert.equal(engine.detokenize(tokens), 'hello world');
  });

  it('streams chunks then one final record with usage and timings', async function () {
    const out = await collect(engine.generate({ prompt: 'The quick brown fox', maxTokens: 16, sampling: { temperature: 0 } }));
    assert.equal(out.final.finishReason, 'length');
    assert.equal(out.final.completionTokens, 16);
    assert.equal(out.tokens.length, 16);
    assert.equal(out.final.promptTokens, engine.tokenize('The quick brown fox').length);
    assert.ok(out.chunks >= 2, 'tokens should arrive incrementally');
    assert.ok(out.final.timings.decodeTokensPerSecond > 0);
    assert.ok(out.final.timings.ttftMs >= out.final.timings.prefillMs);
  });

  it('records which experts each layer routed the request to', async function () {
    const before = engine.expertUse();
    const out = await collect(engine.generate({ prompt: 'The quick brown fox', maxTokens: 8, sampling: { temperature: 0 } }));
    const after = engine.expertUse();
    const info = engine.info;
    assert.equal(after.length, info.nLayer);
    // every token (prompt + generated, the last sampled one is not decoded) was routed to nExpertUsed experts per layer
    const tokensDecoded = out.final.promptTokens + out.final.completionTokens - 1;
    const routed = (il: number) => after[il].reduce((a, b) => a + b, 0) - before[il].reduce((a, b) => a + b, 0);
    for (let il = 0; il < info.nLayer - 1; il++) assert.equal(routed(il), tokensDecoded * info.nExpertUsed, `layer ${il}`);
    // the last layer runs its experts only on the tokens whose logits are needed: one per step
    assert.equal(routed(info.nLayer - 1), out.final.completionTokens * info.nExpertUsed, 'last layer');
    assert.equal(out.final.expertsPerLayer?.length, info.nLayer);
    assert.ok(out.final.expertsPerLayer!.every((n) => n >= info.nExpertUsed && n <= info.nExpert));
  });

  it('the same seed samples the same tokens at temperature > 0', async function () {
    const run = () => collect(engine.generate({ prompt: 'Once upon', maxTokens: 24, sampling: { temperature: 1.0, seed: 42 } }));
    const [a, b] = [await run(), await run()];
    assert.deepEqual(a.tokens, b.tokens);
  });

  it('greedy picks the same tokens whether the graph samples them or the host does, switching back and forth', async function () {
    // plain greedy requests are sampled in the graph (an argmax beside the logits); asking for log-probabilities needs
    // the logits on the host, so the same sequence detaches its device sampler, and the next greedy request attaches a
    // new one
    const greedy = () => collect(engine.generate({ prompt: 'The quick brown fox', maxTokens: 16, sampling: { temperature: 0 } }));
    const device = await greedy();
    const host = await collect(engine.generate({ prompt: 'The quick brown fox', maxTokens: 16, topLogprobs: 1, sampling: { temperature: 0 } }));
    const deviceAgain = await greedy();
    assert.equal(host.final.completionTokens, 16);
    assert.deepEqual([device.final.sampling, host.final.sampling, deviceAgain.final.sampling], ['graph', 'host', 'graph']);
    assert.deepEqual(host.tokens, device.tokens);
    assert.deepEqual(deviceAgain.tokens, device.tokens);
  });

  it('concurrent requests share the batch and produce what each produces alone', async function () {
    const prompts = ['The quick brown fox', 'Once upon a time', 'def main():', 'In the beginning'];
    const alone: number[][] = [];
    for (const prompt of prompts) alone.push((await collect(engine.generate({ prompt, maxTokens: 24, sampling: { temperature: 0 } }))).tokens);
    const stepsBefore = engine.stats().totalRequests;
    const together = await Promise.all(prompts.map((prompt) => collect(engine.generate({ prompt, maxTokens: 24, sampling: { temperature: 0 } }))));
    assert.equal(engine.stats().totalRequests - stepsBefore, prompts.length);
    together.forEach((out, i) => assert.deepEqual(out.tokens, alone[i], `prompt ${i} differs when batched`));
  });

  it('a request beyond the free sequences queues and still completes', async function () {
    const outs = await Promise.all(Array.from({ length: 6 }, (_, i) => collect(engine.generate({ prompt: `request ${i}`, maxTokens: 8, sampling: { temperature: 0 } }))));
    assert.ok(outs.every((o) => o.final.finishReason === 'length' && o.tokens.length === 8));
    assert.ok(outs.some((o) => o.final.timings.queueMs > 0));
  });

  it('abort stops decoding within a step and frees the sequence', async function () {
    const abort = new AbortController();
    const out = await collect(
      engine.generate({ prompt: 'Tell me a long story', maxTokens: 400, sampling: { temperature: 0 }, signal: abort.signal }),
      (n) => n === 3 && abort.abort(),
    );
    assert.equal(out.final.finishReason, 'cancelled');
    assert.ok(out.tokens.length < 400);
    assert.equal(engine.stats().activeSequences, 0);
    const next = await collect(engine.generate({ prompt: 'again', maxTokens: 4, sampling: { temperature: 0 } }));
    assert.equal(next.final.finishReason, 'length');
  });

  it('leaving the loop early cancels the generation', async function () {
    for await (const event of engine.generate({ prompt: 'Tell me a long story', maxTokens: 400, sampling: { temperature: 0 } })) {
      if (event.type === 'chunk') break;
    }
    // the cancel lands at the scheduler's next step; the next request on every slot proves the sequence came back
    const outs = await Promise.all(Array.from({ length: 4 }, () => collect(engine.generate({ prompt: 'x', maxTokens: 2 }))));
    assert.ok(outs.every((o) => o.final.finishReason === 'length'));
    assert.equal(engine.stats().activeSequences, 0);
  });

  it('stop strings end generation and are not emitted', async function () {
    const free = await collect(engine.generate({ prompt: 'The quick brown fox', maxTokens: 32, sampling: { temperature: 0 } }));
    const stop = free.text.slice(5, 7);
    assert.ok(stop.length === 2, 'need generated text to pick a stop string from');
    const out = await collect(engine.generate({ prompt: 'The quick brown fox', maxTokens: 32, sampling: { temperature: 0 }, stop: [stop] }));
    assert.equal(out.final.finishReason, 'stop');
    assert.equal(out.final.matchedStop, stop);
    assert.equal(out.text, free.text.slice(0, free.text.indexOf(stop)));
  });

  it('a GBNF grammar constrains the output', async function () {
    const out = await collect(engine.generate({ prompt: 'Answer:', maxTokens: 16, grammar: 'root ::= ("yes" | "no") "."', sampling: { temperature: 0 } }));
    assert.match(out.text, /^(yes|no)\.$/);
  });

  it('never blocks the event loop while generating', async function () {
    const histogram = monitorEventLoopDelay({ resolution: 1 });
    histogram.enable();
    await Promise.all([0, 1].map((i) => collect(engine.generate({ prompt: `story ${i}`, maxTokens: 64, sampling: { temperature: 0 } }))));
    histogram.disable();
    assert.ok(histogram.max / 1e6 < 20, `event loop blocked for ${(histogram.max / 1e6).toFixed(1)} ms`);
  });

  describe('invalid requests are rejected with the field named', function () {
    const cases: [string, Parameters<Engine['generate']>[0], string][] = [
      ['negative temperature', { prompt: 'x', sampling: { temperature: -1 } }, 'sampling.temperature'],
      ['NaN top_p', { prompt: 'x', sampling: { topP: NaN } }, 'sampling.top_p'],
      ['top_p of 0', { prompt: 'x', sampling: { topP: 0 } }, 'sampling.top_p'],
      ['fractional top_k', { prompt: 'x', sampling: { topK: 1.5 } }, 'sampling.top_k'],
      ['min_p above 1', { prompt: 'x', sampling: { minP: 2 } }, 'sampling.min_p'],
      ['zero repeat penalty', { prompt: 'x', sampling: { repeatPenalty: 0 } }, 'sampling.repeat_penalty'],
      ['seed out of range', { prompt: 'x', sampling: { seed: -5 } }, 'sampling.seed'],
      ['zero max_tokens', { prompt: 'x', maxTokens: 0 }, 'max_tokens'],
      ['no prompt', {}, 'prompt'],
      ['empty stop string', { prompt: 'x', stop: [''] }, 'stop[0]'],
      ['token id outside the vocabulary', { promptTokens: [1, 999999] }, 'prompt_token_ids[1]'],
      ['prompt longer than the context', { prompt: 'word '.repeat(2000) }, 'prompt'],
      ['invalid grammar', { prompt: 'x', grammar: 'root ::= (' }, 'grammar'],
    ];
    for (const [name, options, field] of cases) {
      it(name, function () {
        assert.throws(
          () => engine.generate(options),
          (e: unknown) => e instanceof InvalidArgumentError && e.violations.some((v) => v.field === field),
        );
        assert.equal(engine.stats().activeSequences, 0);
      });
    }
  });
});
