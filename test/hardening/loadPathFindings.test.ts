/**
 * One crafted file per class of the load-path fuzzer's findings (docs/RELIABILITY.md, "Fuzzing the GGUF load
 * path"): each used to crash or hang the loading process and is now rejected by the real load path with an error
 * naming the file and the key or tensor at fault.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ModelLoadError } from '../../services/common/errors';
import { Engine } from '../../services/engine/Engine';
import { loadExpertIndex } from '../../services/expert-store/ExpertIndex';
import { GGUF_TYPE, parseGguf, readStringArray, relayoutGguf, serializeGguf, stringArrayRaw, type GgufFile } from '../../harness/GgufFile';
import { writeMicroModel } from '../../harness/writeMicroModel';

const GGML_TYPE = { F16: 1, Q4_0: 2, Q8_1: 9 } as const;

describe('hardening: crafted GGUF files of each known load-path finding are rejected with a clear error', function () {
  this.timeout(60_000);
  let dir: string;
  let seed: GgufFile;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moeflash-load-findings-'));
    seed = parseGguf(readFileSync(await writeMicroModel(join(dir, 'micro.gguf'))));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Writes `file` as `<name>.gguf`; resolves with its path. */
  const write = (name: string, file: GgufFile) => {
    const path = join(dir, `${name}.gguf`);
    writeFileSync(path, serializeGguf(file));
    return path;
  };
  /** The seed with one numeric key set (written with the key's own type). */
  const withNumber = (key: string, value: number): GgufFile => {
    const kvs = seed.kvs.map((kv) => {
      if (kv.key !== key) return kv;
      const raw = Buffer.alloc(kv.raw.length);
      if (kv.type === GGUF_TYPE.UINT32) raw.writeUInt32LE(value >>> 0);
      else if (kv.type === GGUF_TYPE.FLOAT32) raw.writeFloatLE(value);
      else throw new Error(`${key}: type ${kv.type} not handled`);
      return { ...kv, raw };
    });
    assert.ok(kvs.some((kv) => kv.key === key), `the seed has ${key}`);
    return { ...seed, kvs };
  };
  const withTokens = (edit: (tokens: string[]) => void): GgufFile => {
    const kvs = seed.kvs.map((kv) => {
      if (kv.key !== 'tokenizer.ggml.tokens') return kv;
      const tokens = readStringArray(kv);
      edit(tokens);
      return { ...kv, raw: stringArrayRaw(tokens) };
    });
    return { ...seed, kvs };
  };
  const withTensorType = (name: string, type: number) =>
    relayoutGguf(seed, (tensors) => {
      const t = tensors.find((x) => x.name === name);
      assert.ok(t, name);
      t.type = type;
    });

  /** Engine.load (+ a short generation when it loads) rejects `path` with a ModelLoadError naming it and `reason`. */
  const engineRejects = async (path: string, reason: RegExp) => {
    await assert.rejects(
      async () => {
        const engine = await Engine.load({ path, contextSize: 64, parallel: 1, threads: 1, batchSize: 32, warmup: false });
        try {
          for await (const event of engine.generate({ prompt: 'fuzz', maxTokens: 2, sampling: { seed: 1 } })) void event;
        } finally {
          await engine.close();
        }
      },
      (e: unknown) => {
        assert.ok(e instanceof ModelLoadError, `a ModelLoadError, got ${String(e)}`);
        assert.ok(e.message.includes(path), e.message);
        assert.match(e.message, reason);
        return true;
      },
    );
  };
  const indexRejects = (path: string, reason: RegExp) =>
    assert.rejects(loadExpertIndex(path), (e: unknown) => e instanceof ModelLoadError && e.message.includes(path) && reason.test(e.message));

  it('the unmodified micro model loads, indexes and generates (the checks reject nothing valid)', async () => {
    const path = write('valid', seed);
    assert.equal((await loadExpertIndex(path)).nExpert, 4);
    const engine = await Engine.load({ path, contextSize: 64, parallel: 1, threads: 1, batchSize: 32, warmup: false });
    try {
      let final;
      for await (const event of engine.generate({ prompt: 'fuzz', maxTokens: 2, sampling: { seed: 1 } })) if (event.type === 'final') final = event;
      assert.equal(final?.completionTokens, 2);
    } finally {
      await engine.close();
    }
  });

  it('llama-assert-n-layer: block_count 0 or above LLAMA_MAX_LAYERS', async () => {
    await engineRejects(write('block-count-0', withNumber('qwen3moe.block_count', 0)), /qwen3moe\.block_count is 0/);
    await engineRejects(write('block-count-513', withNumber('qwen3moe.block_count', 513)), /qwen3moe\.block_count is 513/);
  });

  it('llama-assert-n-expert: expert_count above LLAMA_MAX_EXPERTS', () =>
    engineRejects(write('expert-count-huge', withNumber('qwen3moe.expert_count', 1634224631)), /qwen3moe\.expert_count is 1634224631/));

  it('llama-assert-n-expert-used: expert_used_count above expert_count', () =>
    engineRejects(write('expert-used-huge', withNumber('qwen3moe.expert_used_count', 3573246943)), /qwen3moe\.expert_used_count is 3573246943.*expert_count is 4/));

  it('llama-assert-n-expert-used-zero: expert_used_count 0 with experts', () =>
    engineRejects(write('expert-used-0', withNumber('qwen3moe.expert_used_count', 0)), /qwen3moe\.expert_used_count is 0/));

  it('llama-assert-n-expert-used-zero: expert_used_count missing with experts', () =>
    engineRejects(
      write('expert-used-missing', { ...seed, kvs: seed.kvs.filter((kv) => kv.key !== 'qwen3moe.expert_used_count') }),
      /qwen3moe\.expert_used_count is missing/,
    ));

  it('llama-assert-vocab-duplicates: two tokens with the same text', () =>
    engineRejects(
      write('duplicate-tokens', withTokens((t) => (t[t.length - 1] = t[t.length - 2]))),
      /tokenizer\.ggml\.tokens: tokens 258 and 259 have the same text/,
    ));

  it('tokenize-out-of-range-uncaught: a SentencePiece vocabulary without a byte token', () =>
    engineRejects(
      write('no-byte-token', withTokens((t) => (t[t.indexOf('<0x0A>')] = '<0x0a>'))),
      /tokenizer\.ggml\.tokens: .*no token for byte 0x0A/,
    ));

  it('cpu-rms-norm-negative-eps: a negative or NaN layer_norm_rms_epsilon', async () => {
    await engineRejects(write('eps-negative', withNumber('qwen3moe.attention.layer_norm_rms_epsilon', -3.9e-34)), /layer_norm_rms_epsilon is -3\.9/);
    await engineRejects(write('eps-nan', withNumber('qwen3moe.attention.layer_norm_rms_epsilon', NaN)), /layer_norm_rms_epsilon is NaN/);
  });

  it('graph-reshape-head-count-kv: a head_count_kv whose K/V width overflows 32 bits', () =>
    engineRejects(write('head-count-kv', withNumber('qwen3moe.attention.head_count_kv', 536870913)), /qwen3moe\.attention\.head_count_kv is 536870913/));

  it('decode-batch-past-tiny-training-context: context_length below 16 is a load error', () =>
    engineRejects(write('context-2', withNumber('qwen3moe.context_length', 2)), /qwen3moe\.context_length is 2; a context of at least 16 tokens/));

  it('decode-batch-past-tiny-training-context: a prompt longer than a 16-token training context decodes in batches llama.cpp accepts', async () => {
    const engine = await Engine.load({ path: write('context-16', withNumber('qwen3moe.context_length', 16)), parallel: 1, threads: 1, batchSize: 512, warmup: false });
    try {
      const prompt = 'the cat sat on the mat and the dog ran in the park with a ball and a stick '.repeat(2);
      assert.ok(engine.tokenize(prompt).length > 16);
      let final;
      for await (const event of engine.generate({ prompt, maxTokens: 2, sampling: { seed: 1 } })) if (event.type === 'final') final = event;
      assert.equal(final?.finishReason, 'length');
    } finally {
      await engine.close();
    }
  });

  it('cpu-norm-weight-not-f32: a norm weight of type q4_0 or f16', async () => {
    await engineRejects(write('norm-q4_0', withTensorType('output_norm.weight', GGML_TYPE.Q4_0)), /tensor 'output_norm\.weight' has type q4_0; norm weights and biases must be f32/);
    await engineRejects(write('norm-f16', withTensorType('blk.0.attn_norm.weight', GGML_TYPE.F16)), /tensor 'blk\.0\.attn_norm\.weight' has type f16/);
  });

  it('cpu-weight-type-without-vec-dot: a matrix weight of type q8_1', () =>
    engineRejects(write('weight-q8_1', withTensorType('blk.1.attn_q.weight', GGML_TYPE.Q8_1)), /tensor 'blk\.1\.attn_q\.weight' has type q8_1, which ggml cannot multiply/));

  it('expert-index-sizes: absurd layer numbers, block or expert counts and empty slabs are rejected at once', async () => {
    const renamed = (to: string) => ({ ...seed, tensors: seed.tensors.map((t) => (t.name === 'blk.1.ffn_up_exps.weight' ? { ...t, name: to } : t)) });
    const started = Date.now();
    await indexRejects(write('index-layer-1e8', renamed('blk.100000000.ffn_up_exps.weight')), /'blk\.100000000\.ffn_up_exps\.weight' is in layer 100000000, but qwen3moe\.block_count is 2/);
    const noBlockCount = { ...renamed('blk.4294967296.ffn_up_exps.weight'), kvs: seed.kvs.filter((kv) => kv.key !== 'qwen3moe.block_count') };
    await indexRejects(write('index-layer-2e32', noBlockCount), /is in layer 4294967296, but at most 4096 layers are indexed/);
    await indexRejects(write('index-block-count', withNumber('qwen3moe.block_count', 0xffffffff)), /qwen3moe\.block_count is 4294967295/);
    await indexRejects(write('index-expert-count', withNumber('qwen3moe.expert_count', 1634224631)), /qwen3moe\.expert_count is 1634224631/);
    const empty = relayoutGguf(seed, (tensors) => {
      const t = tensors.find((x) => x.name === 'blk.0.ffn_gate_exps.weight')!;
      t.ne[0] = 0n;
    });
    await indexRejects(write('index-empty-slabs', empty), /'blk\.0\.ffn_gate_exps\.weight' has 0 bytes/);
    assert.ok(Date.now() - started < 5_000, 'rejected without building a huge index');
  });

  it('Engine.load on a directory names the path', async () => {
    const path = join(dir, 'a-directory.gguf');
    mkdirSync(path);
    await engineRejects(path, /is a directory/);
  });
});
