import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { FakeEngine } from '../../harness/FakeEngine';
import { startStack } from '../../harness/startStack';
import { testModel } from '../../harness/testModels';

const run = promisify(execFile);
const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'moeflash.js');

describe('moeflash client', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  const engine = new FakeEngine();
  before(async () => {
    stack = await startStack({ fake: engine });
  });
  after(async () => {
    await stack.stop();
  });

  it('generate streams the text to stdout and one stats line to stderr', async () => {
    const { stdout, stderr } = await run(process.execPath, [
      BIN, 'client', 'generate', '--addr', stack.router.address, '--model', 'fake', '--prompt', 'hi', '--max-tokens', '5', '--seed', '2',
    ]);
    const expected = engine.detokenize(engine.expectedTokens({ prompt: 'hi', maxTokens: 5, sampling: { seed: 2 } }));
    assert.equal(stdout, `${expected}\n`);
    assert.match(stderr, /^finish=length prompt_tokens=3 completion_tokens=5 /);
  });

  it('generate --json prints one JSON line per chunk and the complete message', async () => {
    const { stdout } = await run(process.execPath, [
      BIN, 'client', 'generate', '--addr', stack.router.address, '--model', 'fake', '--prompt', 'hi', '--max-tokens', '3', '--json',
    ]);
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 4);
    assert.deepEqual(lines.slice(0, 3).flatMap((l) => l.tokens), engine.expectedTokens({ prompt: 'hi', maxTokens: 3 }));
    assert.equal(lines[3].finishReason, 'length');
  });

  it('generate --system/--chat sends messages, rendered by the model\'s template', async () => {
    const { stderr } = await run(process.execPath, [
      BIN, 'client', 'generate', '--addr', stack.router.address, '--model', 'fake', '--system', 'be brief', '--chat', 'hi', '--max-tokens', '2',
    ]);
    const chat = { messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }] };
    assert.match(stderr, new RegExp(`prompt_tokens=${engine.tokenizeChat(chat).length} `));
    await assert.rejects(
      run(process.execPath, [BIN, 'client', 'generate', '--addr', stack.router.address, '--model', 'fake', '--prompt', 'x', '--chat', 'y']),
      (err: { code?: number; stderr?: string }) => err.code === 2 && /--prompt: give exactly one of --prompt/.test(err.stderr ?? ''),
    );
  });

  it('generate (in-process engine) --chat --json-schema --logprobs: JSON of the schema, log-probabilities per token', async () => {
    const schema = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'], additionalProperties: false };
    const { stdout } = await run(process.execPath, [
      BIN, 'generate', '--model', await testModel('tiny'), '--chat', 'count', '--json-schema', JSON.stringify(schema), '--logprobs', '2',
      '--max-tokens', '64', '--temperature', '0', '--threads', '1', '--json',
    ]);
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l));
    const chunks = lines.slice(0, -1);
    assert.equal(lines.at(-1).finishReason, 'stop');
    assert.ok(Number.isInteger(JSON.parse(chunks.map((c) => c.text).join('')).n));
    for (const c of chunks) assert.deepEqual(c.logprobs.map((l: { tokenId: number; top: unknown[] }) => [l.tokenId, l.top.length]), c.tokens.map((t: number) => [t, 2]));
  });

  it('models lists the served models', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'client', 'models', '--addr', stack.router.address]);
    assert.match(stdout, /^fake\tfake\t/);
  });

  it('a rejected request exits 1 naming the status and the bad field', async () => {
    await assert.rejects(
      run(process.execPath, [BIN, 'client', 'generate', '--addr', stack.router.address, '--model', 'fake', '--prompt', 'x', '--temperature=-1']),
      (err: { code?: number; stderr?: string }) => {
        assert.equal(err.code, 1);
        assert.match(err.stderr ?? '', /INVALID_ARGUMENT/);
        assert.match(err.stderr ?? '', /sampling\.temperature: /);
        return true;
      },
    );
  });
});
