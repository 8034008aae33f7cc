/**
 * The engine's public types: what the inference service, the CLI and the benchmarks program against.
 * The native addon (native/) implements them; Engine.ts adapts the addon to these shapes.
 */

/** Where the model's weights live and how the context is shaped. */
export interface LoadOptions {
  /** GGUF file (the first shard of a split model). */
  path: string;
  /** Layers offloaded to the GPU backend; 0 on the CPU build. Default 0 (99 = all). */
  nGpuLayers?: number;
  /** Keep the expert tensors of the first N layers in host memory (llama.cpp --n-cpu-moe). */
  nCpuMoe?: number;
  /** Extra tensor placement rules, like llama.cpp -ot: tensors whose name matches `pattern` go to `bufferType`. */
  tensorOverrides?: { pattern: string; bufferType: 'cpu' | 'pinned' }[];
  /** Tokens of context per sequence. Default 4096 (capped by the model's training context). */
  contextSize?: number;
  /** Sequences decoded together (continuous batching). Default 4. */
  parallel?: number;
  /** Tokens per llama_decode. Default 512, or 2048 with the expert cache on a GPU (where it is also the ubatch: prefill copies each layer's experts once per ubatch). */
  batchSize?: number;
  /** Compute threads. Default: the number of cores. */
  threads?: number;
  /** How weights are read: mmap (default, keeps experts in the page cache), none (read into memory), mlock. */
  loadMode?: 'mmap' | 'none' | 'mlock';
  /**
   * How the experts of MoE layers computed on the CPU come from the file (with loadMode mmap): 'load' reads the whole
   * file at load like stock llama.cpp; 'demand' maps the experts without read-ahead and reads a layer's routed experts
   * once its router has picked them, ahead of the matmuls, with the next layer's predicted ones (models larger than
   * RAM; patches/llama.cpp/0012, native/src/ExpertPager.h). Default 'auto': demand when the model file does not fit
   * in the memory the process may use (MemAvailable, its cgroup's limit) and no layer is offloaded.
   */
  expertRead?: 'auto' | 'load' | 'demand';
  /**
   * Where experts read on demand are held (expertRead 'demand'; with the expert cache, the copies its host path makes):
   * at most this many bytes of memory the engine owns, filled by O_DIRECT reads straight into place
   * (native/src/ExpertRam.h), or the page cache ('off'). The page cache costs the kernel a page allocation, a cgroup
   * charge and, at the memory limit, a reclaim for every 4 KiB read. Left out (auto): the memory limit less the
   * non-expert weights, what the process holds now, the context's KV cache, one layer's experts and a headroom of
   * max(128 MiB, 5 %), at most all the experts; the page cache where that is not a layer's experts or io_uring is
   * unavailable. At least one layer's experts.
   */
  expertRam?: number | 'off';
  /** Run llama.cpp's warmup decode after loading. Default true. */
  warmup?: boolean;
  /**
   * Record which experts each MoE layer routes tokens to (stats, hints, traces). Default: on for the CPU backend,
   * off for GPU backends (it prevents the fused router kernels there); MOEFLASH_RECORD_ROUTING overrides.
   */
  recordRouting?: boolean;
  /** Shared-memory hint channel to publish routing to (the expert-store reads it); none by default. */
  hintChannel?: string;
  /**
   * Append the routing of every token the engine decodes to this file as JSON lines {seq, token, layer, experts}
   * (records the routing, whatever recordRouting says). MOEFLASH_ROUTING_LOG sets it for every engine. For
   * measuring the expert cache on real traffic: expertCache.replayRouting replays such a file.
   */
  routingLog?: string;
  /**
   * GPU expert slot cache (patches/llama.cpp/0003): routed experts stay in host memory and each MoE layer keeps
   * `slots` of them in device memory, copied in on misses. Off when absent.
   */
  expertCache?: ExpertCacheOptions;
}

export interface ExpertCacheOptions {
  /** Slots per layer (at least the experts a token uses). Default: from memBytes, else from free device memory. */
  slots?: number;
  /** Memory budget for all layers' slots together, in bytes. */
  memBytes?: number;
  /**
   * Where the host copy of the experts lives: pinned (page-locked, copies run at link speed; needs the experts to fit
   * in RAM) or mmap (the page cache: for models larger than RAM, copies run at memcpy speed). Default: pinned when
   * layers are offloaded to a GPU, mmap otherwise.
   */
  hostMemory?: 'pinned' | 'mmap';
  /**
   * Eviction policy: lru2 (default: evicts the expert whose second-to-last use is oldest), lru, or slru (segmented
   * LRU: experts used once are evicted before a protected segment of 80% of the slots).
   */
  policy?: 'lru' | 'lru2' | 'slru';
  /**
   * Predictive prefetch: the next cached layer's router applied to this layer's input predicts its experts, which
   * are copied on a second stream of the device while this layer computes. Output stays exact; a wrong prediction
   * only costs a copy. Default off.
   */
  prefetch?: boolean;
  /**
   * Where a decode step's experts are matched to slots: 'device' (default: in the graph, by llama.cpp's
   * GGML_OP_MOE_SLOTS, with no host round trip, where the backend has the op and reads the host experts directly:
   * the CPU, CUDA with pinned experts) or 'host' (the scheduler stops after each layer's router and the host assigns
   * slots: every backend; prefetch and slru always run this way). ModelInfo.expertCache.path says which one runs.
   */
  resolve?: 'device' | 'host';
  /**
   * Benchmarks only: replace the model's routing with a generated trace with realistic temporal locality
   * (random-weight models route almost uniformly). Output text is meaningless with it.
   */
  syntheticRouting?: { seed?: number; reusePrevious?: number; reuseWindow?: number };
  /**
   * Benchmarks only: replay a routing file written through `routingLog` (one sequence's tokens, wrapping around)
   * instead of the model's routing of decode steps. Checked against the model: layers, experts per token, ids.
   */
  replayRouting?: string;
}

/** Expert cache counters (since start for the engine, or of the steps a request took part in). */
export interface ExpertCacheCounters {
  hits: number;
  misses: number;
  evictions: number;
  bytesCopied: number;
  /** Layer evaluations that ran on the slots / were too large for them (more possible experts than slots) and ran on
   * the staging bank (or, for a layer shaped unlike it, the stock path). */
  steps: number;
  bypassed: number;
  copyMs: number;
  stallMs: number;
  /** Predictive prefetch: distinct experts predicted for a layer step, and of those the ones the step needed. */
  predicted: number;
  predictedUsed: number;
  /** Experts copied speculatively (predicted and not resident), and of those the ones the step needed. */
  prefetched: number;
  prefetchedUsed: number;
  /** Bytes of the speculative copies (included in bytesCopied). */
  bytesPrefetched: number;
  /** Predicted experts not copied ahead because their bytes were still on disk (experts read on demand): a copy from
   * the file mapping would have stalled the step on a guess. */
  prefetchDeferred: number;
  /** Bytes copied from host memory to the staging bank for ubatches too large for the slots (prefill); not in bytesCopied. */
  bytesStaged: number;
  /** Staging copies of experts resident in the layer's slots, made device to device (not in bytesStaged). */
  bytesStagedOnDevice: number;
}

export interface ExpertCacheStats {
  slots: number;
  /** Bytes of one slot summed over the cached layers. */
  slotBytes: number;
  /** How the slot count was chosen: "slots", "memory budget" or "free device memory (<device>)". */
  sizedBy: string;
  total: ExpertCacheCounters;
  layers: (ExpertCacheCounters & { layer: number })[];
}

/**
 * Experts read on demand (expertRead 'demand'), counters since start: the RAM tier (page cache) and the disk below it.
 */
export interface ExpertPagingStats {
  /**
   * MoE layer evaluations paged, routed experts (distinct per evaluation) and of those the ones found in RAM: the
   * engine's own expert memory with expertRam, else the page cache.
   */
  layerSteps: number;
  experts: number;
  pageCacheHits: number;
  /** Bytes of the routed experts, and of those the bytes missing from the page cache (read from disk in the step). */
  bytesRouted: number;
  bytesMissing: number;
  /** Experts predicted for a layer by the one before it, of those the ones routed there, and the ones the engine read ahead. */
  predicted: number;
  predictedUsed: number;
  predictedRead: number;
  /**
   * Bytes the engine read ahead from disk on a guess (its predictions, the expert cache's speculative copies), and of
   * those the bytes of experts the layer's next routing (or miss list) then needed: the useful part of the read-ahead.
   * bytesMissing + bytesReadAheadUsed is what the disk supplied that decoding used.
   */
  bytesReadAhead: number;
  bytesReadAheadUsed: number;
  /** Decode-thread time spent measuring residency, queueing reads and predicting. */
  pagingMs: number;
  /** With expertRam: bytes of experts held in the engine's own memory (resident or being read); 0 otherwise. */
  ramResidentBytes: number;
  /** Routing and predictions go to the expert-store during the step (a hint channel is attached). */
  hintsInStep: boolean;
}

/** The page cache and the disk during one request's steps (a step shared by several requests counts for each). */
export interface RequestExpertPaging {
  /** Routed experts (distinct per layer and step), and of those the ones with every page in the page cache. */
  experts: number;
  pageCacheHits: number;
  /** Bytes of routed experts that were not in the page cache: read from disk during the steps. */
  bytesRead: number;
}

/** The expert cache's activity during one request's steps (a step shared by several requests counts for each). */
export interface RequestExpertCache {
  hits: number[];
  misses: number[];
  bytesCopied: number;
  copyMs: number;
  stallMs: number;
}

export interface ModelInfo {
  path: string;
  architecture: string;
  description: string;
  nLayer: number;
  nEmbd: number;
  nVocab: number;
  nCtxTrain: number;
  /** Experts per MoE layer (0 for a dense model). */
  nExpert: number;
  /** Experts each token is routed to. */
  nExpertUsed: number;
  /** Expert cache slots per layer and bytes per slot (all cached layers), when the cache is on. */
  expertCache?: {
    slots: number;
    slotBytes: number;
    /** Device memory of the staging bank for prefill-sized ubatches (one layer's experts, per device). */
    stagingBytes: number;
    /** A slot for every expert: all loaded once, the layers run as fully offloaded (no lookups, no copies). */
    allResident: boolean;
    sizedBy: string;
    prefetch: boolean;
    /** How decode steps find their slots: in the graph on the device, at a host stop per layer, or all resident. */
    path: 'device' | 'host-stop' | 'all-resident';
  };
  /**
   * Why the engine publishes no routing although LoadOptions.hintChannel was given: the channel could not be opened
   * (e.g. another engine process on the same model holds it), or nothing would publish on it (routing not recorded,
   * as on GPU backends by default, and no expert cache with fewer slots than experts to report their use); the engine
   * serves without hints.
   */
  hintChannelError?: string;
  /** How experts come from the file: all at load, or the routed ones on demand (LoadOptions.expertRead). */
  expertRead: 'load' | 'demand';
  /** Experts read on demand into memory the engine owns (LoadOptions.expertRam): its size and how it was chosen. */
  expertRam?: { bytes: number; sizedBy: 'option' | 'memory limit' };
  /** Bytes of routed-expert weights (gate+up+down) per layer, index = layer. */
  expertBytesPerLayer: number[];
  /** Bytes of one expert (gate+up+down) of one layer: the size of one cache slot. */
  bytesPerExpert: number;
  /** All tensor bytes in the file. */
  totalBytes: number;
  nParams: number;
  /** Whether the tokenizer prepends BOS (from the model's metadata). */
  addBos: boolean;
  /** Context per sequence and number of sequences actually configured. */
  contextSize: number;
  parallel: number;
}

/** Sampling parameters; an absent field takes llama.cpp's default. temperature 0 = greedy. */
export interface SamplingOptions {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  seed?: number;
}

/** One turn of a conversation. */
export interface ChatMessage {
  role: string;
  content: string;
}

/** A conversation and how to render it: the model's chat template unless `template` is given. */
export interface ChatPrompt {
  messages: ChatMessage[];
  /** A Jinja template instead of the model's own. */
  template?: string;
  /** Template variables, each value JSON text ({ enable_thinking: 'false' }). */
  kwargs?: Record<string, string>;
}

export interface GenerateOptions {
  /** Raw prompt text (no chat template); BOS is added when the model's metadata says so. */
  prompt?: string;
  /** Pre-tokenized prompt. Exactly one of prompt, promptTokens and chat. */
  promptTokens?: number[];
  /** A conversation rendered with its chat template. */
  chat?: ChatPrompt;
  /** A GBNF grammar (root rule `root`) the output must match; not with jsonSchema. */
  grammar?: string;
  /** A JSON Schema (JSON text) the output must match, through a grammar made from it; not with grammar. */
  jsonSchema?: string;
  /** Sampling one of these tokens ends the generation (stop); it is not emitted. */
  stopTokenIds?: number[];
  /** Emit end-of-generation tokens like any other instead of stopping at them. */
  ignoreEos?: boolean;
  /** Log-probabilities with each chunk's tokens, with this many alternatives per token (0-20). */
  topLogprobs?: number;
  /** Default 256. */
  maxTokens?: number;
  sampling?: SamplingOptions;
  /** Generation stops when the text contains one of these; the stop string is not emitted. */
  stop?: string[];
  /** Aborting stops decoding within one step and frees the sequence. */
  signal?: AbortSignal;
  /** Caller's id, echoed in stats and logs. */
  requestId?: string;
  /** W3C trace id (32 hex chars) carried into the expert-store hints. */
  traceId?: string;
}

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error';

export interface GenerationTimings {
  /** Submitted -> admitted to a sequence slot. */
  queueMs: number;
  /** Admitted -> prompt fully processed. */
  prefillMs: number;
  /** Submitted -> first token sampled. */
  ttftMs: number;
  /** First token -> last token. */
  decodeMs: number;
  /** (completionTokens - 1) / decode seconds; 0 with fewer than 2 tokens. */
  decodeTokensPerSecond: number;
  prefillTokensPerSecond: number;
}

/** A generated token's log-probability and the most likely alternatives of its step, most likely first. */
export interface TokenLogprob {
  tokenId: number;
  logprob: number;
  top: { tokenId: number; logprob: number }[];
}

/** One step's output for a request: new token ids and the text they completed. */
export interface GenerationChunk {
  type: 'chunk';
  tokenIds: number[];
  /** With topLogprobs: one per token id. */
  logprobs?: TokenLogprob[];
  /** Text delta; may lag the tokens while a UTF-8 sequence or a possible stop string is incomplete. */
  text: string;
  /** Tokens of the prompt (for cumulative usage). */
  promptTokens: number;
}

/** The last record of every generation, also on cancel and error. */
export interface GenerationFinal {
  type: 'final';
  finishReason: FinishReason;
  /** The stop string that ended generation, when finishReason is 'stop' because of one. */
  matchedStop?: string;
  promptTokens: number;
  completionTokens: number;
  timings: GenerationTimings;
  /** Set when finishReason is 'error'. */
  error?: string;
  /** Distinct experts this request's tokens were routed to, per layer (empty for a dense model). */
  expertsPerLayer?: number[];
  /**
   * Where its tokens were picked: 'graph' (plain greedy, an argmax in the decode graph, one token id read back per
   * step) or 'host' (the sampler chain over the logits: log-probabilities, temperature, penalties, grammar, or a
   * backend that cannot sample in the graph). Absent when no token was generated.
   */
  sampling?: 'graph' | 'host';
  /** Expert cache hits/misses per layer, bytes copied, copy and stall time (when the cache is on). */
  expertCache?: RequestExpertCache;
  /** Experts read on demand: what the steps found in the page cache and read from disk (expertRead 'demand'). */
  expertPaging?: RequestExpertPaging;
}

export type GenerationEvent = GenerationChunk | GenerationFinal;

export interface EngineStats {
  activeSequences: number;
  queuedRequests: number;
  parallel: number;
  totalRequests: number;
  totalPromptTokens: number;
  totalCompletionTokens: number;
}

/** What a host of generations needs from an engine: the in-process Engine implements it, tests may fake it. */
export interface EngineLike {
  readonly info: ModelInfo;
  tokenize(text: string, options?: { addSpecial?: boolean; parseSpecial?: boolean }): number[];
  /** A conversation's prompt tokens, exactly as generate() makes them from `chat`. */
  tokenizeChat(chat: ChatPrompt): number[];
  detokenize(tokenIds: number[]): string;
  /**
   * Validates the options synchronously (throws InvalidArgumentError naming the field), then streams chunks and
   * exactly one final record.
   */
  generate(options: GenerateOptions): AsyncIterable<GenerationEvent>;
  stats(): EngineStats;
  /** Expert cache counters since start (engines with the cache on); undefined otherwise. */
  expertCacheStats?(): ExpertCacheStats | undefined;
  /** Counters of experts read on demand (expertRead 'demand'); undefined otherwise. */
  expertPagingStats?(): ExpertPagingStats | undefined;
  close(): Promise<void>;
}
