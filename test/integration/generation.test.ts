import assert from 'node:assert/strict';
import { FinishReason } from '../../gen/moeflash/v1/generation';
import { collect } from '../../harness/collect';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, generateRequest, generationClient } from '../../harness/grpcClients';
import { startStack } from '../../harness/startStack';

describe('Generate through router and inference', () => {
  let engine: FakeEngine;
  let stack: Awaited<ReturnType<typeof startStack>>;
  let client: ReturnType<typeof generationClient>;

  beforeEach(async () => {
    engine = new FakeEngine({ tokensPerChunk: 2 });
    stack = await startStack({ fake: engine });
    client = generationClient(stack.router.address);
  });

  afterEach(async () => {
    client.channel.close();
    await stack.stop();
  });

  it('streams the same greedy tokens as the in-process engine', async () => {
    const options = { prompt: 'The quick brown fox', maxTokens: 9, sampling: { temperature: 0, seed: 3 } };
    const local = await collect(new FakeEngine({ tokensPerChunk: 2 }).generate(options));
    const remote = await drain(client.client.generate(generateRequest({ ...options })));
    assert.deepEqual(remote.tokens, local.tokens);
    assert.equal(remote.text, local.text);
  });

  it('sends cumulative usage on chunks and one complete message last', async () => {
    const { responses } = await drain(client.client.generate(generateRequest({ prompt: 'hi', maxTokens: 5 })));
    const chunks = responses.filter((r) => r.event?.$case === 'chunk');
    assert.deepEqual(
      chunks.map((r) => (r.event?.$case === 'chunk' ? r.event.value.usage?.completionTokens : -1)),
      [2, 4, 5],
    );
    const last = responses[responses.length - 1].event;
    assert.equal(last?.$case, 'complete');
    assert.equal(responses.filter((r) => r.event?.$case === 'complete').length, 1);
    if (last?.$case !== 'complete') return;
    assert.equal(last.value.finishReason, FinishReason.FINISH_REASON_LENGTH);
    assert.deepEqual(last.value.usage, { promptTokens: 3, completionTokens: 5 });
    assert.ok(last.value.timings && last.value.timings.ttftMs >= 0);
  });

  it('reports the stop string that ended generation', async () => {
    const expected = String.fromCharCode(...engine.expectedTokens({ prompt: 'abc', maxTokens: 4 }).map((t) => t - 2));
    const stop = expected[2];
    const { responses } = await drain(client.client.generate(generateRequest({ prompt: 'abc', maxTokens: 10, stop: [stop] })));
    const last = responses[responses.length - 1].event;
    assert.equal(last?.$case, 'complete');
    if (last?.$case !== 'complete') return;
    assert.equal(last.value.finishReason, FinishReason.FINISH_REASON_STOP);
    assert.equal(last.value.matchedStop, stop);
  });

  it('accepts a pre-tokenized prompt', async () => {
    const ids = engine.tokenize('hello');
    const remote = await drain(client.client.generate(generateRequest({ promptTokenIds: ids, maxTokens: 3 })));
    assert.deepEqual(remote.tokens, engine.expectedTokens({ promptTokens: ids, maxTokens: 3 }));
  });

  it('tokenizes, detokenizes and describes models through the router', async () => {
    const { tokenIds } = await client.client.tokenize({ model: 'fake', text: 'héllo', addSpecial: true, parseSpecial: false });
    assert.deepEqual(tokenIds, engine.tokenize('héllo'));
    const { text } = await client.client.detokenize({ model: 'fake', tokenIds });
    assert.equal(text, 'héllo');
    const { models } = await client.client.listModels({});
    assert.deepEqual(models.map((m) => m.name), ['fake']);
    const { model } = await client.client.getModel({ model: 'fake' });
    assert.equal(model?.nVocab, engine.info.nVocab);
    assert.equal(model?.parallel, engine.info.parallel);
  });
});
