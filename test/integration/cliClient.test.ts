import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { FakeEngine } from '../helpers/FakeEngine';
import { startStack } from '../helpers/startStack';

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
