import { EventEmitter } from 'node:events';
import { InvalidArgumentError } from '../services/common/errors';
import { validateGenerate } from '../services/engine/validateOptions';
import type {
  ChatPrompt,
  EngineLike,
  EngineStats,
  GenerateOptions,
  GenerationEvent,
  GenerationFinal,
  ModelInfo,
} from '../services/engine/types';

export interface FakeEngineOptions {
  /** Time per generated token, on a timer; 0 yields to the event loop between tokens (setImmediate). */
  tokenDelayMs?: number;
  /** Sequences decoded together; more wait in the engine's queue. Default 4. */
  parallel?: number;
  contextSize?: number;
  /** Tokens per chunk. Default 1. */
  tokensPerChunk?: number;
  /** Fields to add to a generation's final record, e.g. the per-layer expert counts the real engine reports. */
  finalExtra?: (options: GenerateOptions) => Partial<GenerationFinal>;
  /** The model file it claims to serve (ModelInfo.path; a real GGUF lets the service measure its residency). */
  path?: string;
}

const BOS = 1;
/** Token id of byte b is b + BYTE_BASE; 0 and 1 are EOS and BOS. */
const BYTE_BASE = 2;
const N_VOCAB = 256 + BYTE_BASE;

/**
 * A deterministic, model-free EngineLike for transport and policy tests. Tokens are bytes (id = byte + 2); the
 * continuation of a prompt is a run of lowercase letters fixed by the prompt and the seed, so the same request
 * always gives the same tokens, in-process or across any number of hops. Validation is the real engine's
 * (validateGenerate), so field names match. Stop strings end generation as soon as the text ends with one,
 * without the real engine's hold-back of text that might start one. Emits 'change' whenever its active or queued
 * counts move.
 */
export class FakeEngine extends EventEmitter<{ change: [] }> implements EngineLike {
  readonly info: ModelInfo;
  /** Every final record, in the order generations ended. */
  readonly finals: GenerationFinal[] = [];
  private active = 0;
  private queued = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private readonly closing = new AbortController();
  private totals = { requests: 0, prompt: 0, completion: 0 };
  private readonly tokenDelayMs: number;
  private readonly tokensPerChunk: number;
  private readonly finalExtra: FakeEngineOptions['finalExtra'];

  constructor(options: FakeEngineOptions = {}) {
    super();
    this.finalExtra = options.finalExtra;
    this.tokenDelayMs = options.tokenDelayMs ?? 0;
    this.tokensPerChunk = options.tokensPerChunk ?? 1;
    const parallel = options.parallel ?? 4;
    const contextSize = options.contextSize ?? 65_536;
    this.info = {
      path: options.path ?? '/fake/fake.gguf',
      architecture: 'fake',
      description: 'deterministic fake engine',
      expertRead: 'load',
      nLayer: 2,
      nEmbd: 8,
      nVocab: N_VOCAB,
      nCtxTrain: contextSize,
      nExpert: 4,
      nExpertUsed: 2,
      expertBytesPerLayer: [1024, 1024],
      bytesPerExpert: 256,
      totalBytes: 4096,
      nParams: 1000,
      addBos: true,
      contextSize,
      parallel,
    };
  }

  tokenize(text: string, options: { addSpecial?: boolean } = {}): number[] {
    const ids = [...Buffer.from(text, 'utf8')].map((b) => b + BYTE_BASE);
    return options.addSpecial ?? true ? [BOS, ...ids] : ids;
  }

  /** A ChatML-like rendering, enough for tests of the service around the engine (the real one is llama.cpp's). */
  tokenizeChat(chat: ChatPrompt): number[] {
    return this.tokenize(chat.messages.map((m) => `<${m.role}>${m.content}\n`).join('') + '<assistant>');
  }

  detokenize(tokenIds: number[]): string {
    this.checkIds('token_ids', tokenIds);
    return Buffer.from(tokenIds.filter((t) => t >= BYTE_BASE).map((t) => t - BYTE_BASE)).toString('utf8');
  }

  /** The tokens this engine generates for `options` (what a full generation streams, before stop strings). */
  expectedTokens(options: Pick<GenerateOptions, 'prompt' | 'promptTokens' | 'maxTokens' | 'sampling'>): number[] {
    const prompt = options.promptTokens ?? this.tokenize(options.prompt ?? '');
    const n = options.maxTokens ?? 256;
    return Array.from({ length: n }, (_, i) => this.tokenAt(prompt, options.sampling?.seed ?? 0, i));
  }

  generate(options: GenerateOptions): AsyncIterable<GenerationEvent> {
    if (this.closing.signal.aborted) throw new Error('engine is closed');
    validateGenerate(options, this.info.contextSize);
    const prompt = options.promptTokens ?? (options.chat ? this.tokenizeChat(options.chat) : this.tokenize(options.prompt ?? ''));
    if (options.promptTokens) this.checkIds('prompt_token_ids', prompt);
    if (prompt.length >= this.info.contextSize) throw InvalidArgumentError.field('prompt', 'does not fit the context');
    return this.run(prompt, options);
  }

  stats(): EngineStats {
    return {
      activeSequences: this.active,
      queuedRequests: this.queued,
      parallel: this.info.parallel,
      totalRequests: this.totals.requests,
      totalPromptTokens: this.totals.prompt,
      totalCompletionTokens: this.totals.completion,
    };
  }

  /** Resolves once no generation is active or queued. */
  whenIdle(): Promise<void> {
    return this.when(() => this.active === 0 && this.queued === 0);
  }

  /** Resolves once `n` generations are decoding. */
  whenActive(n: number): Promise<void> {
    return this.when(() => this.active >= n);
  }

  async close(): Promise<void> {
    this.closing.abort();
    await this.whenIdle();
  }

  private when(done: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (!done()) return;
        this.off('change', check);
        resolve();
      };
      this.on('change', check);
      check();
    });
  }

  private tokenAt(prompt: number[], seed: number, i: number): number {
    const base = prompt.reduce((a, t) => (a * 31 + t) % 26, seed % 26);
    return 'a'.charCodeAt(0) + ((base + i) % 26) + BYTE_BASE;
  }

  private async *run(prompt: number[], options: GenerateOptions): AsyncGenerator<GenerationEvent> {
    const signal = AbortSignal.any([this.closing.signal, ...(options.signal ? [options.signal] : [])]);
    const submitted = performance.now();
    const maxTokens = options.maxTokens ?? 256;
    const seed = options.sampling?.seed ?? 0;
    this.totals.requests++;
    this.totals.prompt += prompt.length;
    this.queued++;
    this.emit('change');
    let admitted = false;
    let completion = 0;
    let firstTokenAt = 0;
    let text = '';
    const final = (finishReason: GenerationFinal['finishReason'], matchedStop?: string): GenerationFinal => {
      const now = performance.now();
      const decodeMs = firstTokenAt ? now - firstTokenAt : 0;
      const record: GenerationFinal = {
        type: 'final',
        finishReason,
        matchedStop,
        promptTokens: prompt.length,
        completionTokens: completion,
        timings: {
          queueMs: 0,
          prefillMs: 0,
          ttftMs: firstTokenAt ? firstTokenAt - submitted : 0,
          decodeMs,
          decodeTokensPerSecond: completion > 1 && decodeMs > 0 ? ((completion - 1) * 1000) / decodeMs : 0,
          prefillTokensPerSecond: 0,
        },
        ...this.finalExtra?.(options),
      };
      this.finals.push(record);
      return record;
    };
    try {
      if (!(await this.slot(signal))) {
        yield final('cancelled');
        return;
      }
      admitted = true;
      this.emit('change');
      let pending: number[] = [];
      while (completion < maxTokens) {
        if (!(await this.step(signal))) break;
        const token = this.tokenAt(prompt, seed, completion);
        completion++;
        this.totals.completion++;
        if (!firstTokenAt) firstTokenAt = performance.now();
        pending.push(token);
        text += String.fromCharCode(token - BYTE_BASE);
        const stop = options.stop?.find((s) => text.endsWith(s));
        if (stop) {
          yield final('stop', stop);
          return;
        }
        if (pending.length >= this.tokensPerChunk || completion === maxTokens) {
          yield { type: 'chunk', tokenIds: pending, text: this.detokenize(pending), promptTokens: prompt.length };
          pending = [];
        }
      }
      yield final(signal.aborted ? 'cancelled' : 'length');
    } finally {
      if (admitted) {
        this.active--;
        // Hands the slot over synchronously, so no newcomer can take it in between.
        this.slotWaiters.shift()?.();
      } else {
        this.queued--;
      }
      this.emit('change');
    }
  }

  /** Waits for a sequence slot and takes it (queued -> active); false when aborted first. */
  private slot(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.resolve(false);
    if (this.active < this.info.parallel) {
      this.queued--;
      this.active++;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const grant = () => {
        signal.removeEventListener('abort', onAbort);
        this.queued--;
        this.active++;
        resolve(true);
      };
      const onAbort = () => {
        const i = this.slotWaiters.indexOf(grant);
        if (i >= 0) this.slotWaiters.splice(i, 1);
        resolve(false);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.slotWaiters.push(grant);
    });
  }

  /** One decoding step's worth of time; false when aborted during it (so a cancel stops within one step). */
  private step(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = () => {
        signal.removeEventListener('abort', onAbort);
        resolve(true);
      };
      const timer = this.tokenDelayMs > 0 ? setTimeout(done, this.tokenDelayMs) : setImmediate(done);
      const onAbort = () => {
        if (this.tokenDelayMs > 0) clearTimeout(timer as NodeJS.Timeout);
        else clearImmediate(timer as NodeJS.Immediate);
        resolve(false);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private checkIds(field: string, ids: number[]): void {
    const bad = ids.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= N_VOCAB);
    if (bad >= 0) throw InvalidArgumentError.field(`${field}[${bad}]`, `token id ${ids[bad]} is outside the vocabulary [0, ${N_VOCAB})`);
  }
}
