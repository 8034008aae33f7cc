/**
 * `moeflash trace-summary` against an inference server whose engine reports per-layer expert activity, with and
 * without the optional expert-cache counters, and the bounded ring behind it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

import { createChannel, createClient, type Channel } from 'nice-grpc';

import { InferenceServiceDefinition, RecentRequestsServiceDefinition } from '../../gen/moeflash/v1/inference';
import type { EngineLike } from '../../services/engine/types';
import { RecentRequests } from '../../services/inference/RecentRequests';
import { FakeEngine } from '../../harness/FakeEngine';
import { drain, generateRequest } from '../../harness/grpcClients';
import { startInference, type InferenceInstance } from '../../harness/startStack';

const run = promisify(execFile);
const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'moeflash.js');

/** What the engine reports for request 'cached': 3 layers, layer 0 dense, and the engine's expert-cache counters. */
const CACHED = { expertsPerLayer: [0, 3, 5], expertCache: { hits: [0, 10, 4], misses: [0, 2, 6], bytesCopied: 8 * 2 ** 20, copyMs: 4.5, stallMs: 3.25 } };

/** A FakeEngine whose final records carry per-layer experts, plus the expert-cache counters for request 'cached'. */
function engineReportingExperts(): EngineLike {
  return new FakeEngine({ finalExtra: (options) => (options.requestId === 'cached' ? CACHED : { expertsPerLayer: [0, 2, 1] }) });
}

describe('moeflash trace-summary: per-layer expert statistics of recent requests', () => {
  let inference: InferenceInstance;
  let channel: Channel;

  const generate = (requestId: string, maxTokens = 4) =>
    drain(createClient(InferenceServiceDefinition, channel).generate(generateRequest({ prompt: 'hello', maxTokens, requestId })));
  const summary = (...args: string[]) => run(process.execPath, [BIN, 'trace-summary', '--addr', inference.address, ...args]);

  before(async () => {
    inference = await startInference({ fake: engineReportingExperts() });
    channel = createChannel(inference.address);
    await generate('cached', 6);
    await generate('plain', 3);
  });
  after(async () => {
    channel.close();
    await inference.server.shutdown(0);
  });

  it('--request-id shows the timings, the cache totals and one row per MoE layer with hits, misses and hit rate', async () => {
    const { stdout } = await summary('--request-id', 'cached');
    const lines = stdout.split('\n');
    assert.match(lines[0], /^request cached {2}model fake {2}finish length /);
    assert.match(stdout, /^tokens {2}prompt 6 {2}completion 6$/m); // BOS + 'hello'
    assert.match(stdout, /^time {4}queue \d+\.\d ms {2}prefill \d+\.\d ms .* decode \d+\.\d ms/m);
    assert.match(stdout, /^cache {3}hits 14 {2}misses 8 {2}hit rate 63\.6% {2}copied 8\.0 MiB in 4\.5 ms {2}decode stalled 3\.3 ms$/m);
    const table = lines.slice(lines.findIndex((l) => /^layer/.test(l)));
    assert.deepEqual(table.slice(0, 3).map((l) => l.trim().split(/\s+/)), [
      ['layer', 'experts', 'hits', 'misses', 'hit%'],
      ['1', '3', '10', '2', '83.3%'],
      ['2', '5', '4', '6', '40.0%'],
    ]);
    assert.match(stdout, /distinct experts: 8 over 2 layers, at most 5 in one layer/);
  });

  it('without --request-id shows the most recent request; without cache counters only distinct experts per layer', async () => {
    const { stdout } = await summary();
    assert.match(stdout, /^request plain /);
    assert.match(stdout, /^tokens {2}prompt 6 {2}completion 3$/m);
    assert.match(stdout, /^cache {3}not reported by the engine/m);
    const table = stdout.split('\n').filter((l) => /^\s*(layer|\d+)\s/.test(l));
    assert.deepEqual(table.map((l) => l.trim().split(/\s+/)), [['layer', 'experts'], ['1', '2'], ['2', '1']]);
  });

  it('--list prints the kept requests newest first; --json the summaries', async () => {
    const list = (await summary('--list')).stdout.trim().split('\n');
    assert.deepEqual(list.map((l) => l.split('\t')[1]), ['plain', 'cached']);
    const json = JSON.parse((await summary('--request-id', 'cached', '--json')).stdout) as { expertCache: unknown; usage: unknown };
    assert.deepEqual(json.expertCache, CACHED.expertCache);
    assert.deepEqual(json.usage, { promptTokens: 6, completionTokens: 6 });
  });

  it('an unknown request id exits 1 with NOT_FOUND', async () => {
    await assert.rejects(summary('--request-id', 'nope'), (err: { code?: number; stderr?: string }) => {
      assert.equal(err.code, 1);
      assert.match(err.stderr ?? '', /^trace-summary: NOT_FOUND: request 'nope' not found/);
      return true;
    });
  });

  it('a request that came without an id is kept under a generated one', async () => {
    await generate('');
    const recent = createClient(RecentRequestsServiceDefinition, channel);
    const { requests, capacity } = await recent.listRecentRequests({ requestId: '', limit: 1 });
    assert.equal(capacity, 64);
    assert.equal(requests.length, 1);
    assert.match(requests[0].requestId, /^[0-9a-f-]{36}$/);
    assert.deepEqual((await recent.listRecentRequests({ requestId: requests[0].requestId, limit: 0 })).requests, requests);
  });
});

describe('RecentRequests: the bounded ring behind trace-summary', () => {
  const entry = (requestId: string) => ({ requestId, model: 'm', traceId: '', finishedUnixMs: 0, finishReason: 'stop', usage: undefined, timings: undefined, expertsPerLayer: [], expertCache: undefined });

  it('keeps the last `capacity` requests, newest first, forgetting the oldest', () => {
    const ring = new RecentRequests(3);
    for (const id of ['a', 'b', 'c', 'd', 'e']) ring.add(entry(id));
    assert.deepEqual(ring.newest().map((r) => r.requestId), ['e', 'd', 'c']);
    assert.equal(ring.get('b'), undefined);
    assert.equal(ring.get('c')?.requestId, 'c');
    assert.deepEqual(ring.newest(2).map((r) => r.requestId), ['e', 'd']);
  });

  it('a request id seen again replaces its entry and becomes the newest, so it is not evicted next', () => {
    const ring = new RecentRequests(3);
    for (const id of ['a', 'b', 'c', 'a', 'd']) ring.add(entry(id));
    assert.deepEqual(ring.newest().map((r) => r.requestId), ['d', 'a', 'c']);
  });
});
