import assert from 'node:assert/strict';
import fs from 'node:fs';
import { resolve } from 'node:path';
import { Channel as GrpcChannel, credentials } from '@grpc/grpc-js';
import { createChannel, createClient, Status } from 'nice-grpc';
import { GenerationServiceDefinition } from '../../gen/moeflash/v1/generation';
import { InferenceServiceDefinition } from '../../gen/moeflash/v1/inference';
import { DefinitionClient } from '../../services/common/DefinitionClient';
import { Engine } from '../../services/engine/Engine';
import { loadAddon } from '../../services/engine/loadAddon';
import { drain, failure, generateRequest, type CallFailure } from '../../harness/grpcClients';
import { startStack } from '../../harness/startStack';
import { testModel } from '../../harness/testModels';

/** Request model names that a path-based lookup would turn into files. */
function hostileNames(realModelPath: string): string[] {
  return [
    '../../etc/passwd',
    '/etc/passwd',
    realModelPath,
    realModelPath.replace(/\.gguf$/, ''),
    `tiny/../${realModelPath}`,
    '..',
    '.',
    'tiny/../tiny',
    './tiny',
    'tiny/',
    'tiny\0.gguf',
    '..%2F..%2Fetc%2Fpasswd',
    '..\\..\\etc\\passwd',
    'file:///etc/passwd',
    '~/.ssh/id_rsa',
    '/proc/self/environ',
    '/dev/zero',
    'tiny.gguf',
    ` tiny`,
    'x'.repeat(10_000),
  ];
}

/** Records every path the process's JS opens, stats or reads, and every model load, while installed. */
function FileAccessSpy() {
  const seen: { call: string; arg: string }[] = [];
  const restore: (() => void)[] = [];
  const wrap = <T extends object>(target: T, name: keyof T & string) => {
    const original = target[name] as unknown as (...args: unknown[]) => unknown;
    (target as Record<string, unknown>)[name] = function (this: unknown, ...args: unknown[]) {
      const arg = args[0];
      seen.push({ call: name, arg: typeof arg === 'object' && arg !== null && !Buffer.isBuffer(arg) && !(arg instanceof URL) ? JSON.stringify(arg) : String(arg) });
      return original.apply(this, args);
    };
    restore.push(() => ((target as Record<string, unknown>)[name] = original));
  };
  for (const name of ['open', 'openSync', 'readFile', 'readFileSync', 'stat', 'statSync', 'existsSync', 'access', 'accessSync', 'createReadStream', 'realpathSync'] as const) wrap(fs, name);
  for (const name of ['open', 'readFile', 'stat', 'access'] as const) wrap(fs.promises, name);
  wrap(Engine, 'load');
  wrap(loadAddon(), 'readGgufLayout');
  return { seen, restore: () => restore.forEach((r) => r()) };
}

function assertModelRejected(f: CallFailure, name: string, where: string): void {
  const label = `${where} '${name.slice(0, 60)}'`;
  if (f.code === Status.NOT_FOUND) {
    assert.equal(f.statusDetails?.resourceInfo?.resourceType, 'model', label);
    assert.equal(f.statusDetails?.resourceInfo?.resourceName, name, label);
  } else {
    assert.equal(f.code, Status.INVALID_ARGUMENT, `${label}: ${Status[f.code]} ${f.details}`);
    assert.ok(f.statusDetails?.fieldViolations?.some((v) => v.field === 'model'), label);
  }
}

describe('hardening: a request model name is only ever a registry key', function () {
  this.timeout(120_000);

  it('path-like names end NOT_FOUND naming the model, through the router and at the backend, and no file is opened', async () => {
    const modelPath = await testModel('tiny');
    const engine = await Engine.load({ path: modelPath, contextSize: 256, parallel: 1, threads: 1, warmup: false });
    const stack = await startStack({ tiny: engine });
    const channel = createChannel(stack.router.address);
    const client = createClient(GenerationServiceDefinition, channel);
    const backendChannel = new GrpcChannel(stack.inference.address, credentials.createInsecure(), {});
    const backend = new DefinitionClient(InferenceServiceDefinition, backendChannel, stack.inference.address);
    const spy = FileAccessSpy();
    try {
      const names = hostileNames(modelPath);
      // The spy itself works: it sees what this process checks.
      fs.existsSync('/etc/passwd');
      assert.deepEqual(spy.seen.splice(0), [{ call: 'existsSync', arg: '/etc/passwd' }]);
      for (const model of names) {
        assertModelRejected(await failure((o) => drain(client.generate(generateRequest({ model, prompt: 'hi', maxTokens: 1 }), o))), model, 'router Generate');
        assertModelRejected(await failure((o) => client.tokenize({ model, text: 'hi' }, o)), model, 'router Tokenize');
        assertModelRejected(await failure((o) => client.getModel({ model }, o)), model, 'router GetModel');
        // The backend, for a caller that bypasses the router.
        assertModelRejected(await failure(() => backend.unary('getModel', { model })), model, 'inference GetModel');
        assertModelRejected(await failure(() => backend.unary('tokenize', { model, text: 'hi', addSpecial: false, parseSpecial: false, messages: [], chatTemplate: '', chatTemplateKwargs: {} })), model, 'inference Tokenize');
        assertModelRejected(await failure(() => drain(backend.serverStream('generate', generateRequest({ model, prompt: 'hi', maxTokens: 1 })))), model, 'inference Generate');
      }
      spy.restore();
      const named = (arg: string) => names.some((n) => arg === n || resolve(arg) === resolve(n) || /passwd|environ|id_rsa|\/dev\/zero/.test(arg));
      const touched = spy.seen.filter((s) => s.call === 'load' || s.call === 'readGgufLayout' || named(s.arg));
      assert.deepEqual(touched, [], 'nothing named by a request was opened, stat-ed or loaded');
      // The registered name still works, and lists as the only model.
      assert.equal((await drain(client.generate(generateRequest({ model: 'tiny', prompt: 'hi', maxTokens: 2 })))).tokens.length, 2);
      assert.deepEqual((await client.listModels({})).models.map((m) => m.name), ['tiny']);
    } finally {
      spy.restore();
      channel.close();
      backendChannel.close();
      await stack.stop();
      await engine.close();
    }
  });
});
