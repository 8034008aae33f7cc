import assert from 'node:assert/strict';
import { Status } from 'nice-grpc';
import type { GenerateRequest } from '../../gen/moeflash/v1/generation';
import type { EngineLike } from '../../services/engine/types';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, failure, generateRequest, generationClient } from '../../harness/grpcClients';
import { startStack } from '../../harness/startStack';

/** Each bad request and the field its violation must name. */
const BAD_REQUESTS: [string, Partial<GenerateRequest>][] = [
  ['model', { model: '' }],
  ['prompt', { prompt: '' }],
  ['prompt', { prompt: 'x', promptTokenIds: [5] }],
  ['prompt_token_ids[1]', { prompt: '', promptTokenIds: [5, 100_000] }],
  ['max_tokens', { maxTokens: 0 }],
  ['max_tokens', { maxTokens: 10_000_000 }],
  ['sampling.temperature', { sampling: { temperature: -0.5 } }],
  ['sampling.temperature', { sampling: { temperature: NaN } }],
  ['sampling.top_p', { sampling: { topP: 0 } }],
  ['sampling.top_p', { sampling: { topP: 1.5 } }],
  ['sampling.min_p', { sampling: { minP: 2 } }],
  ['sampling.repeat_penalty', { sampling: { repeatPenalty: 0 } }],
  ['sampling.presence_penalty', { sampling: { presencePenalty: 3 } }],
  ['sampling.frequency_penalty', { sampling: { frequencyPenalty: -3 } }],
  ['stop[1]', { stop: ['ok', ''] }],
  ['request_id', { requestId: 'r'.repeat(200) }],
];

describe('errors through the router', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  let client: ReturnType<typeof generationClient>;
  const broken: EngineLike = Object.assign(new FakeEngine(), {
    tokenize(): number[] {
      throw new Error('tokenizer exploded at /srv/secret/path.cpp:42');
    },
  });

  before(async () => {
    stack = await startStack({ fake: new FakeEngine(), broken });
    client = generationClient(stack.router.address);
  });

  after(async () => {
    client.channel.close();
    await stack.stop();
  });

  for (const [field, fields] of BAD_REQUESTS) {
    it(`INVALID_ARGUMENT naming ${field} for ${JSON.stringify(fields)}`, async () => {
      const f = await failure((o) => drain(client.client.generate(generateRequest({ prompt: 'hi', ...fields }), o)));
      assert.equal(f.code, Status.INVALID_ARGUMENT, f.details);
      assert.ok(
        f.statusDetails?.fieldViolations?.some((v) => v.field === field),
        `violations: ${JSON.stringify(f.statusDetails?.fieldViolations)}`,
      );
    });
  }

  it('names several bad fields at once', async () => {
    const f = await failure((o) =>
      drain(client.client.generate(generateRequest({ prompt: 'hi', sampling: { temperature: -1, topP: 7 } }), o)),
    );
    assert.deepEqual(f.statusDetails?.fieldViolations?.map((v) => v.field), ['sampling.temperature', 'sampling.top_p']);
  });

  it('NOT_FOUND for an unknown model, on every rpc that names one', async () => {
    const calls = [
      (o: object) => drain(client.client.generate(generateRequest({ model: 'nope', prompt: 'hi' }), o)),
      (o: object) => client.client.tokenize({ model: 'nope', text: 'x', addSpecial: false, parseSpecial: false }, o),
      (o: object) => client.client.getModel({ model: 'nope' }, o),
    ];
    for (const call of calls) {
      const f = await failure(call);
      assert.equal(f.code, Status.NOT_FOUND);
      assert.equal(f.statusDetails?.resourceInfo?.resourceName, 'nope');
    }
  });

  it('INVALID_ARGUMENT for an out-of-vocabulary token id to Detokenize', async () => {
    const f = await failure((o) => client.client.detokenize({ model: 'fake', tokenIds: [3, 99_999] }, o));
    assert.equal(f.code, Status.INVALID_ARGUMENT);
    assert.equal(f.statusDetails?.fieldViolations?.[0].field, 'token_ids[1]');
  });

  it('INTERNAL for a bug, with a fixed message and no internals', async () => {
    const f = await failure((o) => client.client.tokenize({ model: 'broken', text: 'x', addSpecial: false, parseSpecial: false }, o));
    assert.equal(f.code, Status.INTERNAL);
    assert.ok(!f.details.includes('secret'), f.details);
    assert.ok(!f.details.includes('exploded'), f.details);
  });
});
