/**
 * The shared-memory hint channel: a HintWriter's records make the consumer prefetch exactly those experts, with
 * counters; malformed records, foreign segments and lost records are handled; the writer never waits for anyone.
 */
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { loadAddon, type NativeHintConsumer, type NativeHintWriter } from '../../services/engine/loadAddon';
import { expertRangeTable, loadExpertIndex, type ExpertIndex } from '../../services/expert-store/ExpertIndex';
import { hintChannelName } from '../../services/common/hintChannelName';
import { PageCache } from '../../services/expert-store/PageCache';
import { testModel } from '../../harness/testModels';
import { copyModel, until } from './writeTestGguf';

// The documented layout (native/src/HintChannelLayout.h, docs/EXPERT_STORE.md), written from here byte by byte.
const LAYOUT = { headerSize: 256, recordSize: 320, version: 8, writeIndex: 64, capacity: 20 };
const RECORD = { seq: 0, layer: 32, nIds: 36, nPredicted: 38, ids: 48 };

function readU32(path: string, offset: number): number {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, offset);
    return b.readUInt32LE(0);
  } finally {
    closeSync(fd);
  }
}

function writeAt(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** Appends one raw record (any field values, valid or not) the way a writer would: payload, seq, write index. */
function writeRawRecord(path: string, fields: { layer: number; nIds: number; ids: number[] }): void {
  const fd = openSync(path, 'r');
  const idx = Buffer.alloc(8);
  readSync(fd, idx, 0, 8, LAYOUT.writeIndex);
  closeSync(fd);
  const n = Number(idx.readBigUInt64LE(0));
  const capacity = readU32(path, LAYOUT.capacity);
  const rec = Buffer.alloc(LAYOUT.recordSize);
  rec.writeUInt32LE(fields.layer, RECORD.layer);
  rec.writeUInt16LE(fields.nIds, RECORD.nIds);
  rec.writeUInt16LE(0, RECORD.nPredicted);
  fields.ids.slice(0, 64).forEach((id, i) => rec.writeUInt16LE(id, RECORD.ids + 2 * i));
  rec.writeBigUInt64LE(BigInt(n + 1), RECORD.seq);
  writeAt(path, LAYOUT.headerSize + (n % capacity) * LAYOUT.recordSize, rec);
  const next = Buffer.alloc(8);
  next.writeBigUInt64LE(BigInt(n + 1));
  writeAt(path, LAYOUT.writeIndex, next);
}

describe('expert-store: hint channel', function () {
  let dir: string;
  let index: ExpertIndex;
  let cache: PageCache;
  let seq = 0;
  const open: { close?: () => void; stop?: () => void }[] = [];
  const channel = () => `moeflash-test-${process.pid}-${++seq}`;
  const writer = (name: string, options = {}): NativeHintWriter => {
    const w = new (loadAddon().HintWriter)(name, { nLayer: index.nLayer, nExpert: index.nExpert, model: 'small', ...options });
    open.push(w);
    return w;
  };
  const consumer = (name: string, options = {}): NativeHintConsumer => {
    const c = new (loadAddon().HintConsumer)({
      name,
      files: index.files.map((f) => f.path),
      nLayer: index.nLayer,
      nExpert: index.nExpert,
      ranges: expertRangeTable(index),
      attachRetryMs: 10,
      checkMs: 20,
      ...options,
    });
    open.push(c);
    c.start();
    return c;
  };
  const residentExperts = async () => {
    const entries = index.experts.flat();
    const { resident } = await cache.residency(entries.flatMap((e) => e.ranges));
    const out: string[] = [];
    let i = 0;
    for (const e of entries) {
      let bytes = 0;
      for (let k = 0; k < e.ranges.length; k++) bytes += resident[i++];
      if (bytes === e.bytes) out.push(`${e.layer}:${e.expert}`);
      else assert.equal(bytes, 0, `expert ${e.layer}:${e.expert} is partly resident`);
    }
    return out.sort();
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-hints-'));
    // Private copy of the small model: 139264-byte expert slabs, page aligned, so residency per expert is exact.
    index = await loadExpertIndex(copyModel(await testModel('small'), join(dir, 'small.gguf')));
    cache = new PageCache(index.files);
  });
  afterEach(() => {
    for (const o of open.splice(0)) (o.stop ?? o.close)?.call(o);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('hints make the consumer prefetch exactly those experts, demand and predicted, with counters', async () => {
    const name = channel();
    const w = writer(name);
    const c = consumer(name, { recentMs: 600_000 });
    await until('the consumer to attach', () => c.stats().attached);
    await cache.evict(null);
    c.forget();
    w.publish(1, [3, 7], [5], '4bf92f3577b34da6a3ce929d0e0e4736'); // layer 1 used 3 and 7; layer 2 will likely use 5
    w.publish(2, Int32Array.from([0, 0])); // duplicates in a record count once
    await until('4 experts prefetched', () => c.stats().prefetchedExperts === 4 && c.stats().inFlight === 0);
    assert.deepEqual(await residentExperts(), ['1:3', '1:7', '2:0', '2:5']);
    const s = c.stats();
    assert.equal(s.mode, PageCache.ioUringStatus().available ? 'uring' : 'fadvise');
    assert.equal(s.hints, 2);
    assert.equal(s.records, 2);
    assert.equal(s.dropped, 0);
    assert.equal(s.malformed, 0);
    assert.equal(s.demandIds, 3);
    assert.equal(s.predictedIds, 1);
    assert.equal(s.prefetchedBytes, 4 * index.experts[1][3].bytes);
    assert.equal(s.lastTraceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.equal(s.lastError, null);
    const counts = c.takeCounts();
    assert.equal(counts.length, index.nLayer * index.nExpert);
    assert.deepEqual(
      [...counts.entries()].filter(([, v]) => v > 0).map(([i, v]) => [Math.floor(i / index.nExpert), i % index.nExpert, v]),
      [[1, 3, 1], [1, 7, 1], [2, 0, 1]],
    );
    assert.equal(c.takeCounts().reduce((a, b) => a + b, 0), 0, 'takeCounts resets');

    // layer 2 then used the predicted expert 5: that prefetch was useful, and not read again
    w.publish(2, [5]);
    await until('the use to be counted', () => c.stats().useful === 1);
    assert.equal(c.stats().deduplicated, 1);
    assert.equal(c.stats().prefetchedExperts, 4);
  });

  it('a hint for an expert whose prefetch has not completed counts as late', async function () {
    if (!PageCache.ioUringStatus().available) this.skip(); // fadvise completes at once: nothing is ever late
    const name = channel();
    const w = writer(name);
    const c = consumer(name);
    await until('the consumer to attach', () => c.stats().attached);
    await cache.evict(null);
    c.forget();
    // 65 ids: split over two records in one call; the second names expert 0 again while it is still queued or read
    const ids = [...Array.from({ length: 32 }, (_, i) => i), ...Array.from({ length: 32 }, (_, i) => i), 0];
    assert.equal(w.publish(1, ids), 2);
    await until('layer 1 to be prefetched', () => c.stats().prefetchedExperts === 32 && c.stats().inFlight === 0);
    assert.equal(c.stats().late, 1);
    assert.equal(c.stats().hints, 2);
    assert.equal(c.stats().steps, 0, 'steps count records of the first MoE layer (0)');
  });

  it('malformed records are rejected with clear errors and prefetch nothing', async () => {
    const name = channel();
    const w = writer(name);
    const c = consumer(name);
    await until('the consumer to attach', () => c.stats().attached);
    await cache.evict(null);
    c.forget();
    w.publish(99, [1]);
    await until('the first rejection', () => c.stats().malformed === 1);
    assert.match(c.stats().lastError ?? '', /hint record 0 from pid \d+ rejected: layer 99 is out of range \(the model has 8 layers\)/);
    writeRawRecord(w.path as string, { layer: 1, nIds: 70, ids: [1, 2] });
    await until('the second rejection', () => c.stats().malformed === 2);
    assert.match(c.stats().lastError ?? '', /n_ids 70 exceeds the maximum of 64/);
    writeRawRecord(w.path as string, { layer: 1, nIds: 1, ids: [40] });
    await until('the third rejection', () => c.stats().malformed === 3);
    assert.match(c.stats().lastError ?? '', /expert id 40 is out of range \(layers have 32 experts\)/);
    assert.equal(c.stats().hints, 0);
    assert.equal(c.stats().prefetchedExperts, 0);
    assert.deepEqual(await residentExperts(), []);
    // the channel still works after them
    writeRawRecord(w.path as string, { layer: 0, nIds: 1, ids: [9] });
    await until('a valid raw record to be prefetched', () => c.stats().prefetchedExperts === 1 && c.stats().inFlight === 0);
    assert.deepEqual(await residentExperts(), ['0:9']);
  });

  it('a segment of a foreign version, magic or size is refused with a clear error', async () => {
    const addon = loadAddon();
    const name = channel();
    const w = writer(name, { unlinkOnClose: false });
    const path = w.path as string;
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const info = addon.inspectHintChannel(name, { nLayer: index.nLayer, nExpert: index.nExpert });
    assert.deepEqual([info.version, info.recordSize, info.headerSize, info.capacity, info.producerPid, info.model], [1, 320, 256, 4096, process.pid, 'small']);
    assert.throws(() => addon.inspectHintChannel(name, { nLayer: 48, nExpert: 128 }), /is for a model with 8 layers x 32 experts, but this expert-store serves 48 x 128/);

    const version = Buffer.alloc(4);
    version.writeUInt32LE(99);
    writeAt(path, LAYOUT.version, version);
    const refusal = /is hint channel version 99; this expert-store reads version 1/;
    assert.throws(() => addon.inspectHintChannel(name), refusal);
    const c = consumer(name);
    await until('the consumer to report the refusal', () => refusal.test(c.stats().lastError ?? ''));
    assert.equal(c.stats().attached, false);

    writeAt(path, 0, Buffer.from('NOTHINTS'));
    assert.throws(() => addon.inspectHintChannel(name), /is not a moeflash hint channel \(bad magic\)/);

    const truncated = join(dir, 'truncated.seg');
    const header = Buffer.alloc(512);
    const fd = openSync(path, 'r');
    readSync(fd, header, 0, 256, 0);
    closeSync(fd);
    header.write('MFHINTS\0', 0, 'latin1');
    header.writeUInt32LE(1, LAYOUT.version);
    writeFileSync(truncated, header);
    assert.throws(() => addon.inspectHintChannel(truncated), /is truncated: 512 bytes, its header needs 1310976/);
    assert.throws(() => addon.inspectHintChannel(join(dir, 'absent.seg')), /does not exist/);
    assert.throws(() => new addon.HintWriter('../escape'), /invalid hint channel name/);
    w.close();
    rmSync(path, { force: true });
  });

  it('one writer per channel; a writer reopening a channel continues its numbering', () => {
    const name = channel();
    const first = writer(name, { unlinkOnClose: false });
    assert.throws(() => writer(name), /is in use by another writer \(pid \d+\)/);
    first.publish(0, [1]);
    first.publish(0, [2]);
    first.close();
    const second = writer(name);
    const info = loadAddon().inspectHintChannel(name);
    assert.equal(info.writeIndex, 2);
    assert.equal(info.writerOpens, 2);
    second.publish(0, [3]);
    assert.equal(second.published(), 1);
    assert.equal(loadAddon().inspectHintChannel(name).writeIndex, 3);
    const path = second.path as string;
    second.close();
    assert.equal(existsSync(path), false, 'unlinked on close');
  });

  it('the consumer waits for an absent channel and follows a replaced one', async () => {
    const name = channel();
    const c = consumer(name);
    // no writer yet: several attach attempts (every 10 ms) find nothing, and that is not an error
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(c.stats().attached, false);
    assert.equal(c.stats().lastError, null);
    let w = writer(name);
    await until('the consumer to attach', () => c.stats().attached);
    w.publish(0, [1]);
    await until('the first hint', () => c.stats().hints === 1);
    w.close(); // a clean engine exit removes the segment: the consumer detaches
    await until('the consumer to detach', () => !c.stats().attached);
    w = writer(name); // the engine restarts: a new segment, numbering from 0
    await until('the consumer to re-attach', () => c.stats().attached && c.stats().attaches === 2);
    w.publish(0, [2]);
    await until('a hint through the new segment', () => c.stats().hints === 2);
    assert.equal(c.stats().dropped, 0);
  });

  it('records the reader could not keep up with are counted as dropped; the writer never waits', async () => {
    const name = channel();
    const w = writer(name, { capacity: 16 });
    const c = consumer(name, { pollMaxUs: 2000 });
    await until('the consumer to attach', () => c.stats().attached);
    const total = 20_000;
    const ids = Int32Array.from([1]);
    for (let i = 0; i < total; i++) w.publish(i % index.nLayer, ids);
    await until('every record accounted for', () => c.stats().readIndex === total);
    const s = c.stats();
    assert.equal(s.hints + s.dropped + s.malformed, total);
    assert.ok(s.dropped > 0, 'a 16-record ring cannot hold 20000 records published in a burst');
  });

  it('without any consumer, publishing is wait-free and just overwrites', () => {
    const w = writer(channel(), { capacity: 16 });
    const ids = Int32Array.from({ length: 8 }, (_, i) => i);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 100_000; i++) w.publish(i % 8, ids);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.equal(w.published(), 100_000);
    assert.ok(ms < 5_000, `100k publishes took ${ms} ms`);
  });

  it('the default channel name is derived from the model path, the same on both sides', () => {
    const a = hintChannelName(index.modelPath);
    assert.match(a, /^moeflash-small-[0-9a-f]{8}$/);
    assert.equal(hintChannelName(join(dir, '.', 'small.gguf')), a);
    assert.notEqual(hintChannelName(join(dir, 'other.gguf')), a);
  });
});
