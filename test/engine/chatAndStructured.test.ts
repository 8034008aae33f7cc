/** Chat templates, JSON-schema output, log-probabilities, stop token ids and ignore_eos on the real engine. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { InvalidArgumentError } from '../../services/common/errors';
import { Engine } from '../../services/engine/Engine';
import { makeModel } from '../../services/engine/makeModel';
import type { ChatPrompt } from '../../services/engine/types';
import { collect } from '../../harness/collect';
import { testModel } from '../../harness/testModels';

/** The field names of an InvalidArgumentError, and its descriptions joined. */
function invalid(fields: string[], description?: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.deepEqual(err.violations.map((v) => v.field), fields);
    if (description) assert.match(err.violations.map((v) => v.description).join('; '), description);
    return true;
  };
}

const CHAT: ChatPrompt = {
  messages: [
    { role: 'system', content: 'Answer briefly.' },
    { role: 'user', content: 'What is two and two?' },
  ],
};

describe('engine: chat, structured output, logprobs', function () {
  let engine: Engine;

  before(async function () {
    engine = await Engine.load({ path: await testModel('tiny'), contextSize: 1024, parallel: 2, threads: 2 });
  });
  after(async () => engine?.close());

  it("renders messages with the model's own template (ChatML in made models), ending with the assistant's turn", function () {
    assert.equal(
      engine.renderChat(CHAT),
      '<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhat is two and two?<|im_end|>\n<|im_start|>assistant\n',
    );
    // Template variables reach the template: the thinking switch of Qwen-style templates.
    assert.ok(engine.renderChat({ ...CHAT, kwargs: { enable_thinking: 'false' } }).endsWith('<|im_start|>assistant\n<think>\n\n</think>\n\n'));
    assert.equal(engine.renderChat({ ...CHAT, template: "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}" }), '[system] Answer briefly.\n[user] What is two and two?\n');
  });

  it('generates from messages exactly as from the rendered prompt, and counts the same prompt tokens', async function () {
    const fromChat = await collect(engine.generate({ chat: CHAT, maxTokens: 12, sampling: { temperature: 0 } }));
    const fromText = await collect(engine.generate({ prompt: engine.renderChat(CHAT), maxTokens: 12, sampling: { temperature: 0 } }));
    assert.deepEqual(fromChat.tokens, fromText.tokens);
    assert.equal(fromChat.final.promptTokens, engine.tokenizeChat(CHAT).length);
    assert.equal(fromChat.final.promptTokens, fromText.final.promptTokens);
  });

  it('names the field of a bad chat request: template, kwargs, messages, several prompt forms', async function () {
    assert.throws(() => engine.renderChat({ ...CHAT, template: '{% for %}' }), invalid(['chat_template'], /does not parse: Unexpected token/));
    assert.throws(() => engine.renderChat({ ...CHAT, kwargs: { enable_thinking: 'no' } }), invalid(['chat_template_kwargs.enable_thinking'], /JSON/));
    assert.throws(() => engine.renderChat({ messages: [{ role: '', content: 'x' }] }), invalid(['messages[0].role']));
    assert.throws(() => engine.renderChat({ messages: [] }), invalid(['messages']));
    assert.throws(() => engine.generate({ chat: CHAT, prompt: 'x' }), invalid(['prompt'], /one of prompt, prompt_token_ids and messages/));
  });

  it('a model without a chat template refuses messages (naming them) unless the request brings a template', async function () {
    const dir = mkdtempSync(join(tmpdir(), 'moeflash-chat-'));
    const path = join(dir, 'no-template.gguf');
    await makeModel(path, { preset: 'tiny', seed: 1, chatTemplate: '' });
    const bare = await Engine.load({ path, contextSize: 256, parallel: 1, threads: 1 });
    try {
      assert.throws(() => bare.renderChat(CHAT), invalid(['messages'], /no chat template/));
      assert.throws(() => bare.generate({ chat: CHAT }), invalid(['messages'], /no chat template/));
      // A template that knows no system role gets the system message merged into the first user one (llama.cpp's
      // polyfill, as llama-server serves it).
      assert.equal(bare.renderChat({ ...CHAT, template: '{{ messages[-1].content }}' }), 'Answer briefly.\nWhat is two and two?');
    } finally {
      await bare.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('json_schema: the output is JSON of the schema, from a grammar made as llama.cpp makes it', async function () {
    const schema = {
      type: 'object',
      properties: { answer: { type: 'integer' }, unit: { type: 'string', enum: ['apples', 'pears'] } },
      required: ['answer', 'unit'],
      additionalProperties: false,
    };
    for (const seed of [1, 2, 3]) {
      const out = await collect(engine.generate({ chat: CHAT, maxTokens: 200, jsonSchema: JSON.stringify(schema), sampling: { temperature: 1, seed } }));
      assert.equal(out.final.finishReason, 'stop', `seed ${seed}: the grammar ended the output: ${out.text}`);
      const value = JSON.parse(out.text) as Record<string, unknown>;
      assert.deepEqual(Object.keys(value).sort(), ['answer', 'unit']);
      assert.ok(Number.isInteger(value.answer), out.text);
      assert.ok(['apples', 'pears'].includes(value.unit as string), out.text);
    }
    assert.throws(() => engine.generate({ prompt: 'x', jsonSchema: '{"type": ' }), invalid(['json_schema'], /not valid JSON/));
    assert.throws(() => engine.generate({ prompt: 'x', jsonSchema: '{}', grammar: 'root ::= "a"' }), invalid(['json_schema'], /at most one/));
  });

  it('top_logprobs: one entry per token with its log-probability and the most likely alternatives, in order', async function () {
    const out = await collect(engine.generate({ prompt: 'The quick brown fox', maxTokens: 10, topLogprobs: 5, sampling: { temperature: 0 } }));
    assert.equal(out.logprobs.length, out.tokens.length);
    out.logprobs.forEach((lp, i) => {
      assert.equal(lp.tokenId, out.tokens[i]);
      assert.equal(lp.top.length, 5);
      // Greedy picks the most likely token: it heads the list, with the same log-probability.
      assert.equal(lp.top[0].tokenId, lp.tokenId);
      assert.ok(Math.abs(lp.top[0].logprob - lp.logprob) < 1e-6);
      for (let k = 1; k < lp.top.length; k++) assert.ok(lp.top[k].logprob <= lp.top[k - 1].logprob);
      const mass = lp.top.reduce((sum, t) => sum + Math.exp(t.logprob), 0);
      assert.ok(lp.logprob < 0 && mass > 0 && mass <= 1 + 1e-5, `probabilities of the top 5 sum to ${mass}`);
    });
    // 0 alternatives: the token's own log-probability only. Asked for nothing: none at all.
    const bare = await collect(engine.generate({ prompt: 'The quick brown fox', maxTokens: 3, topLogprobs: 0, sampling: { temperature: 0 } }));
    assert.deepEqual(bare.logprobs.map((l) => l.top.length), [0, 0, 0]);
    assert.deepEqual((await collect(engine.generate({ prompt: 'The quick brown fox', maxTokens: 3 }))).logprobs, []);
    assert.throws(() => engine.generate({ prompt: 'x', topLogprobs: 21 }), invalid(['top_logprobs']));
  });

  it('stop_token_ids end the generation before the token, with finish reason stop', async function () {
    const free = await collect(engine.generate({ prompt: 'Once upon a time', maxTokens: 16, sampling: { temperature: 0 } }));
    const stopAt = free.tokens.findIndex((t, i) => i >= 3 && free.tokens.indexOf(t) === i);
    const stopped = await collect(engine.generate({ prompt: 'Once upon a time', maxTokens: 16, stopTokenIds: [free.tokens[stopAt]], sampling: { temperature: 0 } }));
    assert.deepEqual(stopped.tokens, free.tokens.slice(0, stopAt));
    assert.equal(stopped.final.finishReason, 'stop');
    assert.throws(() => engine.generate({ prompt: 'x', stopTokenIds: [engine.info.nVocab] }), invalid(['stop_token_ids[0]']));
  });

  it('ignore_eos generates past the end-of-generation token, which is emitted', async function () {
    // A grammar that matches "ab" allows only end-of-generation once it is complete: the model must stop there.
    const grammar = 'root ::= "ab"';
    const ended = await collect(engine.generate({ prompt: 'Say ab', maxTokens: 8, grammar, sampling: { temperature: 0 } }));
    assert.equal(ended.final.finishReason, 'stop');
    assert.equal(ended.text, 'ab');
    const past = await collect(engine.generate({ prompt: 'Say ab', maxTokens: ended.tokens.length + 3, ignoreEos: true, grammar, sampling: { temperature: 0 } }));
    assert.equal(past.final.finishReason, 'length');
    assert.deepEqual(past.tokens.slice(0, ended.tokens.length), ended.tokens);
    // Made models' end-of-generation token is id 2 (tokenizer.ggml.eos_token_id).
    assert.deepEqual(past.tokens.slice(ended.tokens.length), [2, 2, 2]);
  });
});
