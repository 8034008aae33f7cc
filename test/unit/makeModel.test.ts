/** The model maker writes valid, page-aligned, deterministic qwen3moe GGUFs and leaves nothing behind on error. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { InvalidArgumentError } from '../../services/common/errors';
import { loadAddon } from '../../services/engine/loadAddon';
import { MODEL_PRESETS, makeModel } from '../../services/engine/makeModel';
import type { ModelSpec } from '../../services/engine/makeModel';
import { makeModelCommand } from '../../cli/commands/makeModel';
import { stockBinary } from '../../harness/stockLlama';

const run = promisify(execFile);
const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('makeModel', function () {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'moeflash-make-model-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  // Smaller than tiny but with several experts and layers: milliseconds per file.
  const micro: ModelSpec = { layers: 2, experts: 4, expertsUsed: 2, embd: 64, expertFf: 32, heads: 2, kvHeads: 1, headDim: 32, vocabSize: 300 };

  it('the same seed gives a byte-identical file, another seed a different one', async () => {
    const a = await makeModel(join(dir, 'a.gguf'), { ...micro, seed: 7 });
    const b = await makeModel(join(dir, 'b.gguf'), { ...micro, seed: 7 });
    const c = await makeModel(join(dir, 'c.gguf'), { ...micro, seed: 8 });
    assert.equal(a.bytes, b.bytes);
    assert.equal(sha256(a.path), sha256(b.path));
    assert.equal(a.bytes, c.bytes);
    assert.notEqual(sha256(a.path), sha256(c.path));
  });

  it('output does not depend on the thread count or the chunk size', async () => {
    // 16 experts x 256 x 128 = 512k weights per expert tensor: large enough to be split over threads
    const spec: ModelSpec = { ...micro, experts: 16, embd: 256, expertFf: 128, seed: 3 };
    const one = await makeModel(join(dir, 'one.gguf'), { ...spec, threads: 1 });
    // 3 threads split each tensor's rows unevenly; 2 KiB chunks split every tensor into many writes
    const three = await makeModel(join(dir, 'three.gguf'), { ...spec, threads: 3 });
    const chunked = await makeModel(join(dir, 'chunked.gguf'), { ...spec, threads: 2, chunkBytes: 2048 });
    assert.equal(sha256(three.path), sha256(one.path));
    assert.equal(sha256(chunked.path), sha256(one.path));
  });

  for (const type of ['q8_0', 'q4_0', 'f16'] as const) {
    it(`${type}: ggml's gguf reader parses it, with every tensor page-aligned and the qwen3moe keys set`, async () => {
      const result = await makeModel(join(dir, `${type}.gguf`), { preset: 'tiny', type, seed: 1 });
      const layout = await loadAddon().readGgufLayout(result.path);
      const tiny = MODEL_PRESETS.tiny;
      assert.equal(layout.alignment, 4096);
      assert.equal(layout.dataOffset % 4096, 0);
      assert.equal(layout.fileSize, result.bytes);
      assert.equal(layout.tensors.length, result.tensors);
      assert.equal(result.tensors, 3 + 12 * tiny.layers);
      for (const t of layout.tensors) assert.equal(t.offset % 4096, 0, `${t.name} at ${t.offset}`);
      const last = layout.tensors.reduce((a, t) => (t.offset > a.offset ? t : a));
      assert.equal(result.bytes, last.offset + Math.ceil(last.nbytes / 4096) * 4096);

      const m = layout.metadata;
      assert.equal(m['general.architecture'], 'qwen3moe');
      assert.equal(m['general.alignment'], 4096);
      assert.equal(m['general.file_type'], { f16: 1, q4_0: 2, q8_0: 7 }[type]);
      assert.equal(m['qwen3moe.block_count'], tiny.layers);
      assert.equal(m['qwen3moe.expert_count'], tiny.experts);
      assert.equal(m['qwen3moe.expert_used_count'], tiny.expertsUsed);
      assert.equal(m['qwen3moe.expert_feed_forward_length'], tiny.expertFf);
      assert.equal(m['qwen3moe.attention.key_length'], tiny.headDim);
      assert.equal(m['tokenizer.ggml.model'], 'llama');
      assert.deepEqual(m['tokenizer.ggml.tokens'], { arrayLength: tiny.vocabSize });
      assert.equal(m['tokenizer.ggml.bos_token_id'], 1);
      assert.equal(m['tokenizer.ggml.add_bos_token'], true);

      const byName = new Map(layout.tensors.map((t) => [t.name, t]));
      assert.deepEqual(byName.get('blk.0.ffn_gate_exps.weight')?.ne, [tiny.embd, tiny.expertFf, tiny.experts]);
      assert.deepEqual(byName.get('blk.0.ffn_down_exps.weight')?.ne, [tiny.expertFf, tiny.embd, tiny.experts]);
      assert.deepEqual(byName.get('blk.0.attn_q.weight')?.ne, [tiny.embd, tiny.heads * tiny.headDim]);
      assert.deepEqual(byName.get('blk.0.attn_k.weight')?.ne, [tiny.embd, tiny.kvHeads * tiny.headDim]);
      assert.equal(byName.get('blk.0.ffn_down_exps.weight')?.type, type);
      assert.equal(byName.get('blk.0.ffn_gate_inp.weight')?.type, 'f32');
      assert.equal(byName.get('output_norm.weight')?.type, 'f32');
    });
  }

  const invalid: [string, ModelSpec, string][] = [
    ['more used experts than experts', { experts: 4, expertsUsed: 5 }, 'expertsUsed'],
    ['kv heads that do not divide heads', { heads: 4, kvHeads: 3 }, 'kvHeads'],
    ['a width that is not a multiple of the q8_0 block', { embd: 100 }, 'embd'],
    ['an expert width that is not a multiple of the q4_0 block', { type: 'q4_0', expertFf: 48 }, 'expertFf'],
    ['an odd head width', { headDim: 33, type: 'f16' }, 'headDim'],
    ['zero layers', { layers: 0 }, 'layers'],
    ['a fractional seed', { seed: 1.5 }, 'seed'],
    ['a vocabulary too small for the byte tokens', { vocabSize: 100 }, 'vocabSize'],
    ['an unknown weight type', { type: 'q5_k' as never }, 'type'],
    ['an unknown preset', { preset: 'huge' }, 'preset'],
  ];
  for (const [what, spec, field] of invalid) {
    it(`rejects ${what}, naming ${field}, and writes nothing`, async () => {
      const out = join(dir, `invalid-${field}.gguf`);
      await assert.rejects(makeModel(out, spec), (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, String(e));
        assert.equal(e.violations[0].field, field);
        return true;
      });
      assert.ok(!existsSync(out) && !existsSync(`${out}.tmp`));
    });
  }

  it('an unwritable destination rejects naming the file and leaves no temporary file', async () => {
    const out = join(dir, 'no-such-dir', 'x.gguf');
    await assert.rejects(makeModel(out, micro), /cannot create '.*no-such-dir\/x\.gguf\.tmp'/);
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
  });

  it('reports progress up to the file size', async () => {
    const seen: [number, number][] = [];
    const result = await makeModel(join(dir, 'progress.gguf'), { preset: 'tiny', chunkBytes: 16384 }, (done, total) => seen.push([done, total]));
    assert.ok(seen.length > 0);
    assert.ok(seen.every(([, total]) => total === result.bytes));
    assert.ok(seen.every(([done], i) => i === 0 || done >= seen[i - 1][0]));
    assert.deepEqual(seen[seen.length - 1], [result.bytes, result.bytes]);
  });

  describe('make-model command', () => {
    let stderr: string;
    let restore: () => void;
    beforeEach(() => {
      stderr = '';
      const write = process.stderr.write.bind(process.stderr);
      process.stderr.write = ((chunk: string | Uint8Array) => ((stderr += chunk.toString()), true)) as typeof process.stderr.write;
      restore = () => (process.stderr.write = write);
    });
    afterEach(() => restore());

    it('writes the model and says where', async () => {
      const out = join(dir, 'cli.gguf');
      assert.equal(await makeModelCommand(['--out', out, '--preset', 'tiny', '--seed', '5', '--layers', '2']), 0);
      restore();
      const layout = await loadAddon().readGgufLayout(out);
      assert.equal(layout.metadata['qwen3moe.block_count'], 2);
      assert.equal(layout.metadata['moeflash.seed'], 5);
      assert.match(stderr, /wrote .*cli\.gguf/);
    });

    it('names the flag of an invalid shape', async () => {
      await assert.rejects(makeModelCommand(['--out', join(dir, 'bad.gguf'), '--experts', '4', '--experts-used', '6']), (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError);
        assert.equal(e.violations[0].field, '--experts-used');
        return true;
      });
      await assert.rejects(makeModelCommand(['--out', join(dir, 'bad.gguf'), '--layers', 'many']), /--layers: expected a non-negative integer/);
      await assert.rejects(makeModelCommand(['--layers', '2']), /--out: required/);
    });
  });

  describe('in stock llama.cpp', function () {
    before(function () {
      try {
        stockBinary('llama-simple');
      } catch {
        this.skip();
      }
    });

    it('the tiny model loads and generates word pieces (not one repeated token)', async () => {
      const model = join(dir, 'stock-tiny.gguf');
      await makeModel(model, { preset: 'tiny' });
      const { stdout } = await run(stockBinary('llama-simple'), ['-m', model, '-n', '24', 'The quick brown fox']);
      const text = stdout.replace(/^<s> The quick brown fox/, '');
      assert.notEqual(text, stdout, `prompt not echoed: ${stdout}`);
      const words = text.trim().split(/\s+/);
      assert.ok(words.length >= 8, `too few words: ${text}`);
      assert.ok(new Set(words).size >= 4, `degenerate output: ${text}`);
    });
  });
});
