import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Engine } from '../../services/engine/Engine';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, generateRequest, generationClient } from '../../harness/grpcClients';
import { startStack } from '../../harness/startStack';
import { testModel } from '../../harness/testModels';

const run = promisify(execFile);
const root = path.resolve(__dirname, '..', '..', '..');
const PROTOS = ['moeflash/v1/generation.proto', 'google/rpc/status.proto', 'google/rpc/error_details.proto'];

/**
 * The first Python with grpcio, grpcio-tools, Jinja2 and jsonschema (Debian's python3-grpcio, python3-grpc-tools,
 * python3-jinja2, python3-jsonschema), or MOEFLASH_PYTHON.
 */
async function findPython(): Promise<string> {
  const candidates = [process.env.MOEFLASH_PYTHON, 'python3', '/usr/bin/python3'].filter((p): p is string => !!p);
  for (const python of candidates) {
    const ok = await run(python, ['-c', 'import grpc, grpc_tools.protoc, jinja2, jsonschema']).then(() => true, () => false);
    if (ok) return python;
  }
  throw new Error(
    `no Python with grpcio, grpcio-tools, jinja2 and jsonschema among ${candidates.join(', ')} (apt install python3-grpcio python3-grpc-tools python3-jinja2 python3-jsonschema)`,
  );
}

/**
 * Python stubs generated from proto/ with grpc_tools.protoc. Debian 12's grpc-tools bundles protoc 3.5, older
 * than proto3 `optional` (3.15); for it the same protos go through a descriptor set that buf compiled from
 * proto/, which that protoc accepts. Either way nothing but proto/ is used.
 */
async function generateStubs(python: string, out: string): Promise<void> {
  const args = ['--python_out', out, '--grpc_python_out', out];
  try {
    await run(python, ['-m', 'grpc_tools.protoc', `-I${path.join(root, 'proto')}`, ...args, ...PROTOS]);
    return;
  } catch (err) {
    if (!/Explicit 'optional' labels are disallowed/.test(String((err as { stderr?: string }).stderr))) throw err;
  }
  const descriptors = path.join(out, 'proto.binpb');
  await run(path.join(root, 'node_modules', '.bin', 'buf'), ['build', 'proto', '-o', descriptors], { cwd: root });
  // `python -m grpc_tools.protoc` adds an -I, which protoc refuses next to --descriptor_set_in; call it directly.
  const protoc = 'import sys; from grpc_tools import protoc; sys.exit(protoc.main(sys.argv))';
  await run(python, ['-c', protoc, `--descriptor_set_in=${descriptors}`, ...args, ...PROTOS]);
}

describe('Python client', () => {
  let python: string;
  let stubs: string;

  before(async () => {
    python = await findPython();
    stubs = await mkdtemp(path.join(tmpdir(), 'moeflash-py-'));
    await generateStubs(python, stubs);
  });

  after(async () => {
    if (stubs) await rm(stubs, { recursive: true, force: true });
  });

  it('streams a generation through router and inference with stubs generated from proto/', async () => {
    const engine = new FakeEngine();
    const stack = await startStack({ fake: engine });
    try {
      const script = path.join(root, 'test', 'python', 'generate_client.py');
      const { stdout } = await run(python, [script, stubs, stack.router.address, 'fake', 'Hello from Python', '6', '7']);
      const lines = stdout.trim().split('\n').map((l) => JSON.parse(l));
      const chunks = lines.filter((l) => l.chunk).map((l) => l.chunk);
      const expected = engine.expectedTokens({ prompt: 'Hello from Python', maxTokens: 6, sampling: { seed: 7 } });
      assert.deepEqual(chunks.flatMap((c) => c.token_ids), expected);
      assert.equal(chunks.map((c) => c.text).join(''), engine.detokenize(expected));
      assert.equal(chunks[chunks.length - 1].completion_tokens, 6);
      assert.deepEqual(lines.find((l) => l.complete)?.complete, {
        finish_reason: 'FINISH_REASON_LENGTH',
        prompt_tokens: engine.tokenize('Hello from Python').length,
        completion_tokens: 6,
      });
      assert.deepEqual(lines.find((l) => l.error)?.error, { code: 'INVALID_ARGUMENT', fields: ['sampling.temperature'] });
    } finally {
      await stack.stop();
    }
  });

  it("retries a refused call by itself with the published service config, after the router's pushback", async () => {
    // One slot, no queue: while a call holds the slot every other call is refused with RESOURCE_EXHAUSTED.
    const engine = new FakeEngine({ parallel: 1, tokenDelayMs: 10 });
    const stack = await startStack({ fake: engine }, { maxInFlightPerBackend: 1, maxQueued: 0, retryAfterMs: 500 });
    const { admission } = stack.router.router;
    const refusals: string[] = [];
    const attempts: number[] = [];
    admission.on('refused', (_model, reason) => (refusals.push(reason), attempts.push(performance.now())));
    admission.on('admitted', () => attempts.push(performance.now()));
    const { client, channel } = generationClient(stack.router.address);
    try {
      const holder = drain(client.generate(generateRequest({ prompt: 'holder', maxTokens: 100 })));
      await engine.whenActive(1);
      const script = path.join(root, 'test', 'python', 'retry_client.py');
      const config = path.join(root, 'deploy', 'client', 'service-config.json');
      const { stdout } = await run(python, [script, stubs, stack.router.address, 'fake', config]);
      assert.deepEqual(JSON.parse(stdout.trim()), { code: 'OK', tokens: 3 });
      // It got through only by retrying: the first attempt found the slot taken.
      assert.ok(refusals.length >= 1, 'the router refused at least one attempt');
      assert.deepEqual(new Set(refusals), new Set(['queue_full']));
      // Each retry waited the pushback (500 ms), not the policy's backoff (200 ms, then 400 ms).
      const retries = attempts.slice(2); // [holder admitted, first attempt refused, retries...]
      const gaps = retries.map((t, i) => t - attempts[i + 1]);
      assert.ok(gaps.every((g) => g >= 450 && g < 800), `gaps between attempts ${gaps.map((g) => g.toFixed(0)).join(', ')} ms`);
      await holder;
    } finally {
      channel.close();
      await stack.stop();
    }
  });

  it("chat through the router: the model's template applied as Jinja2 renders it, JSON of a schema, top logprobs", async () => {
    const gguf = await testModel('tiny');
    const engine = await Engine.load({ path: gguf, contextSize: 1024, parallel: 2, threads: 2 });
    const stack = await startStack({ tiny: engine });
    try {
      const script = path.join(root, 'test', 'python', 'chat_client.py');
      const { stdout } = await run(python, [script, stubs, stack.router.address, 'tiny', gguf]);
      const found = JSON.parse(stdout.trim());
      assert.equal(found.template_matches_reference, true, 'the served prompt tokens equal those of the Jinja2 rendering');
      assert.equal(found.generate_prompt_tokens, found.prompt_tokens, 'Generate and Tokenize count the same chat prompt');
      assert.equal(found.finish_reason, 'FINISH_REASON_STOP');
      assert.equal(found.json_valid, true);
      assert.equal(found.logprobs_per_token, true);
      assert.deepEqual(found.top_sizes, [3]);
      assert.equal(found.logprobs_negative, true);
      assert.equal(found.bad_schema, 'INVALID_ARGUMENT');
      assert.equal(found.bad_schema_names_field, true);
    } finally {
      await stack.stop();
      await engine.close();
    }
  });
});
