import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createChannel, createClient, Metadata, Status } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { HealthCheckResponse_ServingStatus } from 'nice-grpc-server-health/lib/proto/grpc/health/v1/health';
import { ApiKeys } from '../../services/common/auth';
import { InvalidArgumentError } from '../../services/common/errors';
import { parseConfig } from '../../services/common/parseConfig';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, failure, generateRequest, generationClient } from '../../harness/grpcClients';
import { routerReady, startInference, startRouter } from '../../harness/startStack';

const KEY_A = 'moeflash-test-key-aaaaaaaaaaaa';
const KEY_B = 'moeflash-test-key-bbbbbbbbbbbb';

describe('hardening: bearer-token authentication', () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'moeflash-auth-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads keys from a file (comments and blank lines skipped) and from a list, and accepts only those', () => {
    const file = join(dir, 'keys');
    writeFileSync(file, `# router keys\n\n${KEY_A}\n  \n`, { mode: 0o600 });
    const keys = ApiKeys.load({ file, keys: [KEY_B] });
    assert.ok(keys);
    assert.equal(keys.size, 2);
    assert.ok(keys.accepts(KEY_A) && keys.accepts(KEY_B));
    for (const wrong of ['', KEY_A.slice(0, -1), KEY_A + 'x', KEY_A.toUpperCase(), '# router keys']) assert.equal(keys.accepts(wrong), false, wrong);
    assert.equal(ApiKeys.load({}), undefined);
  });

  it('refuses to start with a missing file, no keys or short keys', () => {
    assert.throws(() => ApiKeys.load({ file: join(dir, 'absent') }), (e: unknown) => e instanceof InvalidArgumentError && /ENOENT/.test(e.message));
    const empty = join(dir, 'empty');
    writeFileSync(empty, '# nothing\n');
    assert.throws(() => ApiKeys.load({ file: empty }), /lists no key/);
    assert.throws(() => ApiKeys.of(['short']), /at least 16/);
    assert.throws(() => ApiKeys.of(['has a space in the key value']), /printable/);
  });

  it('parseConfig takes MOEFLASH_API_KEYS_FILE and MOEFLASH_API_KEYS', () => {
    const c = parseConfig([], { MOEFLASH_API_KEYS_FILE: '/etc/moeflash/keys', MOEFLASH_API_KEYS: `${KEY_A}, ${KEY_B}` });
    assert.equal(c.router.apiKeysFile, '/etc/moeflash/keys');
    assert.deepEqual(c.router.apiKeys, [KEY_A, KEY_B]);
    assert.equal(parseConfig([], {}).router.apiKeys, undefined);
  });

  it('the router answers UNAUTHENTICATED without a valid token, serves with one, and leaves health open', async () => {
    const inference = await startInference({ fake: new FakeEngine() });
    const router = await startRouter([inference.address], { apiKeys: [KEY_A, KEY_B] });
    await routerReady(router.router, 'fake');
    const { client, channel } = generationClient(router.address);
    const healthChannel = createChannel(router.address);
    try {
      const request = generateRequest({ prompt: 'hi', maxTokens: 2 });
      for (const authorization of [undefined, `Bearer ${KEY_A}x`, KEY_A, `Basic ${KEY_A}`, `Bearer  ${KEY_A}`, 'Bearer ']) {
        const metadata = new Metadata();
        if (authorization !== undefined) metadata.set('authorization', authorization);
        const f = await failure((o) => drain(client.generate(request, { ...o, metadata })));
        assert.equal(f.code, Status.UNAUTHENTICATED, String(authorization));
        assert.equal(f.details, 'a valid bearer token is required');
        const u = await failure((o) => client.listModels({}, { ...o, metadata }));
        assert.equal(u.code, Status.UNAUTHENTICATED);
      }
      for (const key of [KEY_A, KEY_B]) {
        const metadata = new Metadata({ authorization: `Bearer ${key}` });
        assert.equal((await drain(client.generate(request, { metadata }))).tokens.length, 2);
      }
      const health = await createClient(HealthDefinition, healthChannel).check({ service: '' });
      assert.equal(health.status, HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      channel.close();
      healthChannel.close();
      await router.stop();
      await inference.server.shutdown(0);
    }
  });
});
