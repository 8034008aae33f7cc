/**
 * The routing log (LoadOptions.routingLog / MOEFLASH_ROUTING_LOG) and its replay by the expert cache
 * (expertCache.replayRouting): a user records real traffic on a real model and measures the cache on it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { InvalidArgumentError } from '../../services/common/errors';
import { Engine } from '../../services/engine/Engine';
import { collect } from '../../harness/collect';
import { testModel } from '../../harness/testModels';

describe('routing log and replay', function () {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'moeflash-routing-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('records each decoded token of each MoE layer as a JSON line', async function () {
    const file = join(dir, 'recorded.jsonl');
    const engine = await Engine.load({ path: await testModel('small'), contextSize: 256, threads: 2, parallel: 1, warmup: false, routingLog: file });
    let out;
    try {
      out = await collect(engine.generate({ promptTokens: [1, 20, 30, 40, 50], maxTokens: 6, sampling: { temperature: 0 } }));
    } finally {
      await engine.close();
    }
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { seq: number; token: number; layer: number; experts: number[] });
    const { nLayer, nExpert, nExpertUsed } = engine.info;
    // the prompt's 5 tokens and every sampled token but the last were decoded; llama.cpp's last layer computes only
    // the rows whose output is used, so it sees the prompt's last token only
    const decoded = 5 + out.tokens.length - 1;
    for (let layer = 0; layer < nLayer; layer++) {
      const tokens = layer === nLayer - 1 ? decoded - 4 : decoded;
      assert.deepEqual(lines.filter((l) => l.layer === layer).map((l) => l.token), Array.from({ length: tokens }, (_, t) => t));
    }
    for (const l of lines) {
      assert.equal(l.experts.length, nExpertUsed);
      assert.equal(new Set(l.experts).size, nExpertUsed);
      assert.ok(l.experts.every((e) => e >= 0 && e < nExpert));
    }
  });

  it('the expert cache replays a routing file instead of the model\'s routing', async function () {
    const model = await testModel('small');
    // a trace that uses experts 0-3 in every layer at every token: after the first step, only hits
    const file = join(dir, 'constant.jsonl');
    const lines: string[] = [];
    for (let token = 0; token < 4; token++) for (let layer = 0; layer < 8; layer++) lines.push(JSON.stringify({ seq: 0, token, layer, experts: [0, 1, 2, 3] }));
    writeFileSync(file, lines.join('\n') + '\n');
    const engine = await Engine.load({ path: model, contextSize: 256, threads: 2, parallel: 1, warmup: false, expertCache: { slots: 8, replayRouting: file } });
    try {
      const out = await collect(engine.generate({ promptTokens: [1], maxTokens: 8, sampling: { temperature: 0 } }));
      const steps = out.tokens.length; // the 1-token prompt and each sampled token but the last
      assert.deepEqual(out.final.expertCache?.misses, Array(8).fill(4));
      assert.deepEqual(out.final.expertCache?.hits, Array(8).fill(4 * (steps - 1)));
    } finally {
      await engine.close();
    }
  });

  it('a routing file that does not fit the model is refused, naming the file and the mismatch', async function () {
    const file = join(dir, 'wrong.jsonl');
    writeFileSync(file, JSON.stringify({ seq: 0, token: 0, layer: 0, experts: [0, 1, 2, 3] }) + '\n'); // small's top-4
    const err = await Engine.load({ path: await testModel('tiny'), contextSize: 256, threads: 1, parallel: 1, expertCache: { slots: 4, replayRouting: file } }).then(
      () => assert.fail('loaded'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof InvalidArgumentError);
    assert.match(err.message, /expertCache\.replayRouting.*wrong\.jsonl.*4 experts per token but the model routes each token to 2/);
    await assert.rejects(
      Engine.load({ path: await testModel('tiny'), contextSize: 256, threads: 1, parallel: 1, expertCache: { slots: 4, replayRouting: join(dir, 'missing.jsonl') } }),
      /missing\.jsonl': no such file/,
    );
  });
});
