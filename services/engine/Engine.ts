import { open } from 'node:fs/promises';
import { availableParallelism } from 'node:os';

import { InvalidArgumentError, ModelLoadError, UnavailableError, type FieldViolation } from '../common/errors';
import { AsyncQueue } from '../common/AsyncQueue';
import { checkModelMetadata } from './checkModelMetadata';
import { chooseExpertRead } from './chooseExpertRead';
import { readRoutingLog } from './readRoutingLog';
import { expertBytesPerLayer } from '../common/expertLayout';
import { addonBackend, loadAddon, type GgufLayout, type NativeEngine, type NativeEvent, type NativeModel } from './loadAddon';
import type {
  ChatPrompt,
  EngineLike,
  EngineStats,
  ExpertCacheStats,
  ExpertPagingStats,
  FinishReason,
  GenerateOptions,
  GenerationEvent,
  LoadOptions,
  ModelInfo,
} from './types';
import { kvCacheBytes, sizeExpertRam } from './sizeExpertRam';
import { DEFAULT_MAX_TOKENS, DEFAULT_SAMPLING, validateChat, validateGenerate, validateLoad } from './validateOptions';

/**
 * Default batch (and ubatch) with the expert cache on a GPU: a prefill ubatch copies the experts it needs once per
 * layer, so larger ubatches amortise the copies (docs/EXPERT_CACHE.md, prefill).
 */
const EXPERT_CACHE_BATCH = 2048;

/** llama.cpp's pattern for the routed-expert tensors of layer `il` (as its --n-cpu-moe builds them). */
function expertOverridePattern(layer: number | string): string {
  return `blk\\.${layer}\\.ffn_(up|down|gate|gate_up)_(ch|)exps`;
}

/** The reason of a file-system error, in words. */
function fileErrorReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory, not a model file';
  return (e as Error).message ?? String(e);
}

/** Reads the first bytes so a wrong file is named as such before llama.cpp sees it. */
async function checkModelFile(path: string): Promise<void> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    throw new ModelLoadError(path, fileErrorReason(e));
  }
  try {
    // open() succeeds on a directory; reading it fails with EISDIR
    if ((await handle.stat()).isDirectory()) throw new ModelLoadError(path, 'is a directory, not a model file');
    const magic = Buffer.alloc(4);
    const { bytesRead } = await handle.read(magic, 0, 4, 0).catch((e: unknown) => {
      throw new ModelLoadError(path, fileErrorReason(e));
    });
    if (bytesRead < 4 || magic.toString('latin1') !== 'GGUF') throw new ModelLoadError(path, 'not a GGUF file (bad magic)');
  } finally {
    await handle.close();
  }
}

/**
 * The in-process engine: one llama.cpp model and context, many concurrent generations batched together on a
 * native thread. Generations stream as AsyncIterables; aborting the signal (or leaving the loop) cancels decoding
 * within one step and frees the sequence.
 */
export class Engine implements EngineLike {
  private nextId = 1;
  private inFlight = 0;
  private readonly listeners = new Map<number, (event: NativeEvent) => void>();
  private closed = false;

  private constructor(
    readonly info: ModelInfo,
    private readonly model: NativeModel,
    private readonly native: NativeEngine,
  ) {}

  /** Loads the model and starts its context. Errors name the file or option at fault. */
  static async load(options: LoadOptions): Promise<Engine> {
    validateLoad(options);
    const addon = loadAddon();
    await checkModelFile(options.path);
    let layout: GgufLayout;
    try {
      layout = await addon.readGgufLayout(options.path);
    } catch (e) {
      throw new ModelLoadError(options.path, (e as Error).message);
    }
    // what llama.cpp and ggml would abort the process on instead of failing the load
    checkModelMetadata(layout);

    const overrides = [...(options.tensorOverrides ?? [])];
    for (let il = 0; il < (options.nCpuMoe ?? 0); il++) overrides.push({ pattern: expertOverridePattern(il), bufferType: 'cpu' });
    // the cache copies experts from plain host memory (mmap): every layer's experts stay there
    if (options.expertCache) {
      const pinned = (options.expertCache.hostMemory ?? ((options.nGpuLayers ?? 0) !== 0 ? 'pinned' : 'mmap')) === 'pinned';
      overrides.push({ pattern: expertOverridePattern('\\d+'), bufferType: pinned ? 'pinned' : 'cpu' });
    }

    // llama.cpp maps host-resident tensors straight from the file when mmap is on, whatever their buffer type: pinned
    // experts need the weights read into their buffers instead
    const pinnedExperts = overrides.some((o) => o.bufferType === 'pinned');
    const loadMode = options.loadMode ?? (pinnedExperts ? 'none' : 'mmap');
    const expertRead = chooseExpertRead(options, layout.fileSize, loadMode);
    const model = new addon.AddonModel();
    try {
      await model.load(options.path, { nGpuLayers: options.nGpuLayers ?? 0, loadMode, expertRead, overrides });
    } catch (e) {
      throw new ModelLoadError(options.path, (e as Error).message);
    }

    const facts = model.info() as Omit<ModelInfo, 'path' | 'expertBytesPerLayer' | 'bytesPerExpert' | 'contextSize' | 'parallel'>;
    const perLayer = expertBytesPerLayer(layout, facts.nLayer);
    let expertRam;
    try {
      const expertBytes = perLayer.reduce((a, b) => a + b, 0);
      const cells = Math.min(options.contextSize ?? 4096, facts.nCtxTrain > 0 ? facts.nCtxTrain : Infinity) * (options.parallel ?? 4);
      expertRam = sizeExpertRam(options, expertRead, {
        layerExpertBytes: Math.max(0, ...perLayer),
        expertBytes,
        nonExpertBytes: layout.fileSize - expertBytes,
        contextBytes: kvCacheBytes(layout, facts.nLayer, cells),
      });
    } catch (e) {
      model.dispose();
      throw e; // names the option: the caller's input
    }
    const contextSize = Math.min(options.contextSize ?? 4096, facts.nCtxTrain > 0 ? facts.nCtxTrain : Infinity);
    const nSeq = options.parallel ?? 4;
    const routingLog = options.routingLog ?? (process.env.MOEFLASH_ROUTING_LOG || undefined);
    // With the expert cache on a GPU a prefill ubatch copies the experts it needs once per layer (staging bank):
    // ubatches as large as the batch amortise the copies. Elsewhere llama.cpp's usual 512-token ubatch.
    const cachedOnGpu = options.expertCache !== undefined && (options.nGpuLayers ?? 0) > 0;
    const nBatch = Math.min(options.batchSize ?? (cachedOnGpu ? EXPERT_CACHE_BATCH : 512), contextSize * nSeq);
    const nUbatch = cachedOnGpu ? nBatch : Math.min(nBatch, 512);
    let routeReplay;
    try {
      routeReplay = options.expertCache?.replayRouting !== undefined ? readRoutingLog(options.expertCache.replayRouting, facts) : undefined;
    } catch (e) {
      model.dispose();
      throw e; // names the option and the file: the caller's input, not the model's
    }
    const engine = new addon.AddonEngine(model, (events) => instance.dispatch(events));
    let started;
    try {
      started = await engine.start({
        nCtxPerSeq: contextSize,
        nSeq,
        // llama.cpp caps its batch at the (unpadded) context; the scheduler fills batches of the size given here,
        // so a larger one would overrun llama.cpp's (GGML_ASSERT in llama_decode)
        nBatch,
        nUbatch,
        nThreads: options.threads ?? availableParallelism(),
        warmup: options.warmup ?? true,
        // a routing log needs the routing recorded
        recordRouting: routingLog !== undefined || (options.recordRouting ?? defaultRecordRouting()),
        routingLog,
        hintChannel: options.hintChannel,
        expertRamBytes: expertRam?.bytes ?? 0,
        // on demand, the cache's misses are read on its host path (ExpertPager.HostRead), not inside a device op
        expertCache: options.expertCache && { ...options.expertCache, routeReplay, ...(expertRead === 'demand' ? { resolve: 'host' as const } : {}) },
      });
    } catch (e) {
      model.dispose();
      throw new ModelLoadError(options.path, (e as Error).message);
    }
    const info: ModelInfo = {
      ...facts,
      path: options.path,
      expertRead,
      // io_uring may be unavailable where the engine runs (seccomp, sysctl): then the page cache serves
      ...(expertRam && started.expertRam ? { expertRam } : {}),
      expertBytesPerLayer: perLayer,
      bytesPerExpert: facts.nExpert > 0 ? Math.max(0, ...perLayer) / facts.nExpert : 0,
      contextSize: started.contextSize,
      parallel: started.parallel,
      expertCache: started.expertCache,
      ...(started.hintChannelError ? { hintChannelError: `hint channel: ${started.hintChannelError}` } : {}),
    };
    const instance = new Engine(info, model, engine);
    return instance;
  }

  tokenize(text: string, options: { addSpecial?: boolean; parseSpecial?: boolean } = {}): number[] {
    try {
      return Array.from(this.model.tokenize(text, options.addSpecial ?? true, options.parseSpecial ?? true));
    } catch (e) {
      // the addon's message names the model and llama.cpp's reason (a vocabulary the text cannot be tokenized with)
      throw InvalidArgumentError.field('prompt', (e as Error).message);
    }
  }

  /**
   * A conversation rendered with the model's chat template (or the given one), ending with the assistant's turn,
   * as llama-server renders it. Throws InvalidArgumentError naming messages or chat_template.
   */
  renderChat(chat: ChatPrompt): string {
    const violations: FieldViolation[] = [];
    validateChat(chat, violations);
    if (violations.length > 0) throw new InvalidArgumentError(violations);
    try {
      return this.model.applyChatTemplate(chat.messages, chat.template ?? '', chat.kwargs ?? {});
    } catch (e) {
      throw fieldError(e, ['messages', 'chat_template']);
    }
  }

  /** A conversation's prompt tokens, exactly as generate() makes them. */
  tokenizeChat(chat: ChatPrompt): number[] {
    return this.tokenize(this.renderChat(chat), { addSpecial: true, parseSpecial: true });
  }

  detokenize(tokenIds: number[]): string {
    this.checkTokenIds('token_ids', tokenIds);
    return this.model.detokenize(Int32Array.from(tokenIds));
  }

  /** The raw bytes the tokens' pieces concatenate to, as generation emits them (for byte-exact comparisons). */
  tokenBytes(tokenIds: number[]): Buffer {
    this.checkTokenIds('token_ids', tokenIds);
    return this.model.tokenBytes(Int32Array.from(tokenIds));
  }

  /** Tokens routed to each expert since load: counts[layer][expert]. Empty for a dense model. */
  expertUse(): number[][] {
    const { nExpert, counts } = this.native.expertUse();
    const out: number[][] = [];
    for (let il = 0; nExpert > 0 && il < counts.length / nExpert; il++) out.push(Array.from(counts.subarray(il * nExpert, (il + 1) * nExpert)));
    return out;
  }

  /** Counters of experts read on demand (the page cache and the disk below it); undefined when read at load. */
  expertPagingStats(): ExpertPagingStats | undefined {
    return this.native.expertPagingStats() ?? undefined;
  }

  /** Expert cache counters since start, per layer and in total; undefined when the cache is off. */
  expertCacheStats(): ExpertCacheStats | undefined {
    return this.native.expertCacheStats() ?? undefined;
  }

  stats(): EngineStats {
    const s = this.native.stats();
    return {
      activeSequences: s.activeSequences,
      queuedRequests: s.queuedRequests,
      parallel: s.parallel,
      totalRequests: s.totalRequests,
      totalPromptTokens: s.totalPromptTokens,
      totalCompletionTokens: s.totalCompletionTokens,
    };
  }

  /** Validates now (throws InvalidArgumentError), then streams chunks and one final record. */
  generate(options: GenerateOptions): AsyncIterable<GenerationEvent> {
    if (this.closed) throw new UnavailableError('engine is closed');
    validateGenerate(options, this.info.contextSize);
    const prompt = options.promptTokens ?? (options.chat ? this.tokenizeChat(options.chat) : this.tokenize(options.prompt ?? ''));
    if (options.promptTokens) this.checkTokenIds('prompt_token_ids', prompt);
    if (options.stopTokenIds) this.checkTokenIds('stop_token_ids', options.stopTokenIds);
    let grammar = options.grammar ?? '';
    if (options.jsonSchema !== undefined) {
      try {
        grammar = loadAddon().jsonSchemaToGrammar(options.jsonSchema);
      } catch (e) {
        throw fieldError(e, ['json_schema']);
      }
    }
    if (prompt.length === 0) throw InvalidArgumentError.field('prompt', 'the prompt has no tokens');
    if (prompt.length >= this.info.contextSize)
      throw InvalidArgumentError.field('prompt', `${prompt.length} tokens do not fit the context of ${this.info.contextSize} tokens per sequence`);
    const s = { ...DEFAULT_SAMPLING, ...definedOnly(options.sampling ?? {}) };
    const params = {
      ...s,
      maxTokens: options.maxTokens ?? DEFAULT_MAX_TOKENS,
      stops: options.stop ?? [],
      stopTokenIds: Int32Array.from(options.stopTokenIds ?? []),
      ignoreEos: options.ignoreEos ?? false,
      topLogprobs: options.topLogprobs ?? -1,
      seed: options.sampling?.seed ?? Math.floor(Math.random() * 0xffffffff),
      grammar,
      traceId: options.traceId,
    };
    const id = this.nextId++;
    const queue = new AsyncQueue<GenerationEvent>();
    if (options.signal?.aborted) {
      queue.push(cancelledBeforeStart(prompt.length));
      queue.end();
      return queue;
    }
    this.listeners.set(id, (event) => this.deliver(id, event, queue, prompt.length));
    try {
      this.native.submit(id, Int32Array.from(prompt), params);
    } catch (e) {
      this.listeners.delete(id);
      // a grammar made from json_schema that llama.cpp's parser refuses is the schema's problem
      throw fieldError(e, ['grammar'], options.jsonSchema !== undefined ? 'json_schema' : undefined);
    }
    if (this.inFlight++ === 0) loadAddon().refEngineEvents(this.native, true);
    return this.stream(id, queue, options.signal);
  }

  private async *stream(id: number, queue: AsyncQueue<GenerationEvent>, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    const onAbort = () => this.native.cancel(id);
    signal?.addEventListener('abort', onAbort, { once: true });
    let finished = false;
    try {
      for await (const event of queue) {
        if (event.type === 'final') finished = true;
        yield event;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // a consumer that stops iterating early cancels the generation, so its sequence is freed
      if (!finished) this.native.cancel(id);
    }
  }

  private deliver(id: number, event: NativeEvent, queue: AsyncQueue<GenerationEvent>, promptTokens: number): void {
    if (!event.final) {
      const logprobs = event.logprobs?.map((l) => ({ tokenId: l.token, logprob: l.logprob, top: l.top.map((t) => ({ tokenId: t.token, logprob: t.logprob })) }));
      queue.push({ type: 'chunk', tokenIds: Array.from(event.tokens), text: event.text, promptTokens, ...(logprobs && { logprobs }) });
      return;
    }
    const completion = event.completionTokens ?? 0;
    const decodeMs = event.decodeMs ?? 0;
    const prefillMs = event.prefillMs ?? 0;
    queue.push({
      type: 'final',
      finishReason: event.finishReason as FinishReason,
      matchedStop: event.matchedStop || undefined,
      promptTokens: event.promptTokens ?? 0,
      completionTokens: completion,
      timings: {
        queueMs: event.queueMs ?? 0,
        prefillMs,
        ttftMs: event.ttftMs ?? 0,
        decodeMs,
        decodeTokensPerSecond: completion > 1 && decodeMs > 0 ? ((completion - 1) * 1000) / decodeMs : 0,
        prefillTokensPerSecond: prefillMs > 0 ? ((event.promptTokens ?? 0) * 1000) / prefillMs : 0,
      },
      error: event.error || undefined,
      expertsPerLayer: event.expertsPerLayer ? Array.from(event.expertsPerLayer) : undefined,
      sampling: completion > 0 ? (event.sampledInGraph ? 'graph' : 'host') : undefined,
      expertCache: event.expertCache
        ? {
            hits: Array.from(event.expertCache.hits),
            misses: Array.from(event.expertCache.misses),
            bytesCopied: event.expertCache.bytesCopied,
            copyMs: event.expertCache.copyMs,
            stallMs: event.expertCache.stallMs,
          }
        : undefined,
      expertPaging: event.expertPaging,
    });
    queue.end();
    this.listeners.delete(id);
    if (--this.inFlight === 0) loadAddon().refEngineEvents(this.native, false);
  }

  private dispatch(events: NativeEvent[]): void {
    for (const event of events) this.listeners.get(event.id)?.(event);
  }

  private checkTokenIds(field: string, ids: number[]): void {
    const bad = ids.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= this.info.nVocab);
    if (bad >= 0) throw InvalidArgumentError.field(`${field}[${bad}]`, `token id ${ids[bad]} is outside the vocabulary [0, ${this.info.nVocab})`);
  }

  /** Ends every generation ("engine closed"), frees the context, then the model. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.native.close();
    this.model.dispose();
  }
}

/**
 * Routing is recorded by default on the CPU backend only: on CUDA, marking the top-k ids as graph outputs stops
 * ggml from fusing the router's softmax/top-k kernels, which costs decode speed and changes results in the last
 * bits. MOEFLASH_RECORD_ROUTING=1/0 overrides.
 */
function defaultRecordRouting(): boolean {
  const env = process.env.MOEFLASH_RECORD_ROUTING;
  return env !== undefined ? env === '1' : addonBackend() === 'cpu';
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function cancelledBeforeStart(promptTokens: number): GenerationEvent {
  return {
    type: 'final',
    finishReason: 'cancelled',
    promptTokens,
    completionTokens: 0,
    timings: { queueMs: 0, prefillMs: 0, ttftMs: 0, decodeMs: 0, decodeTokensPerSecond: 0, prefillTokensPerSecond: 0 },
  };
}

/**
 * The addon reports a request's mistake as '<field>: <why>'; for one of `fields` that becomes InvalidArgumentError
 * naming the field (or `rename`), anything else is rethrown as it is.
 */
function fieldError(e: unknown, fields: readonly string[], rename?: string): unknown {
  const message = e instanceof Error ? e.message : '';
  const field = fields.find((f) => message.startsWith(`${f}: `));
  return field ? InvalidArgumentError.field(rename ?? field, message.slice(field.length + 2)) : e;
}
