import { mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';

import { InvalidArgumentError, NotFoundError } from '../common/errors';
import type { Logger } from 'pino';
import { loadIoAddon, type NativeHintConsumer, type NativeHintConsumerStats, type NativeIoMode } from '../common/native/ioAddon';
import { expertRangeTable, loadExpertIndex, type ExpertIndex, type FileRange } from './ExpertIndex';
import { HeatMap, type HeatMapModel } from './HeatMap';
import { hintChannelName } from '../common/hintChannelName';
import { PageCache } from './PageCache';
import { availableMemoryBytes } from '../common/memoryLimits';
import { planWarm, runWarm, type WarmProgress } from './Warmer';

export interface ExpertStoreOptions {
  modelPath: string;
  /** Where heat maps are kept (created with mode 0700 if absent). */
  stateDir: string;
  log: Logger;
  /** Hint channel to read (name under /dev/shm or absolute path); false: none. Default hintChannelName(modelPath). */
  hintChannel?: string | false;
  ioMode?: NativeIoMode;
  queueDepth?: number;
  chunkBytes?: number;
  /** Heat half-life; default 30 minutes. */
  halfLifeMs?: number;
  /** Fixed warm budget in bytes; default MemAvailable minus headroomBytes. */
  budgetBytes?: number;
  /** Memory left free by the default warm budget; default 1 GiB. */
  headroomBytes?: number;
  /** An expert prefetched this recently is not prefetched again on a hint; default 2000 ms. */
  recentMs?: number;
  /** How often consumed hints are folded into the heat map; default 1000 ms. */
  foldIntervalMs?: number;
  /** How often a changed heat map is saved; default 30 s. */
  persistIntervalMs?: number;
}

export interface WarmOptions {
  experts?: readonly { layer: number; expert: number }[];
  hottestPerLayer?: number;
  budgetBytes?: number;
  skipNonExpert?: boolean;
  /** With experts absent: only experts the heat map has seen used (heat > 0). */
  onlyUsed?: boolean;
}

export interface LayerResidencyReport {
  layer: number;
  residentExperts: number[];
  expertsTotal: number;
  residentBytes: number;
  totalBytes: number;
  residentFraction: number;
}

export interface ResidencyReport {
  layers: LayerResidencyReport[];
  residentBytes: number;
  totalBytes: number;
  residentFraction: number;
  nonExpertResidentBytes: number;
  nonExpertTotalBytes: number;
  method: string;
}

export interface ExpertStoreStats {
  warmRequests: number;
  expertsWarmed: number;
  bytesWarmed: number;
  expertsEvicted: number;
  bytesEvicted: number;
  routingObservations: number;
  hintChannel: string;
  hints?: NativeHintConsumerStats;
  ioMode: string;
  ioFallbackReason: string;
}

export interface HeatReport {
  layers: { layer: number; counts: number[]; heat: number[] }[];
  stepsObserved: number;
  halfLifeSeconds: number;
}

const DEFAULT_HALF_LIFE_MS = 30 * 60 * 1000;
const DEFAULT_HEADROOM = 1 << 30;

/**
 * The expert-store of one model: its expert index, the page cache over its files, the heat map (fed by the hint
 * channel, persisted under the state directory) and the hint consumer that prefetches what the engine routes to.
 * The gRPC service and the HTTP endpoint are thin layers over this.
 */
export class ExpertStore {
  readonly cache: PageCache;
  readonly heatMapPath: string;
  readonly heatModel: HeatMapModel;
  private consumer: NativeHintConsumer | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private stepsFolded = 0;
  private closed = false;
  private readonly counters = { warmRequests: 0, expertsWarmed: 0, bytesWarmed: 0, expertsEvicted: 0, bytesEvicted: 0 };

  private constructor(
    readonly index: ExpertIndex,
    readonly heat: HeatMap,
    readonly options: ExpertStoreOptions,
    readonly hintChannel: string,
  ) {
    this.cache = new PageCache(index.files, { ioMode: options.ioMode, queueDepth: options.queueDepth, chunkBytes: options.chunkBytes });
    this.heatModel = { path: index.modelPath, size: index.files.reduce((s, f) => s + f.size, 0), name: index.name };
    this.heatMapPath = ExpertStore.heatMapFile(options.stateDir, index.modelPath);
  }

  /** Where the heat map of a model is kept: <stateDir>/heatmap-<hint channel name>.json (file name + path hash). */
  static heatMapFile(stateDir: string, modelPath: string): string {
    return join(stateDir, `heatmap-${hintChannelName(modelPath).replace(/^moeflash-/, '')}.json`);
  }

  /** Indexes the model, loads its heat map and starts the hint consumer. Rejects with ModelLoadError for a bad model. */
  static async open(options: ExpertStoreOptions): Promise<ExpertStore> {
    const index = await loadExpertIndex(options.modelPath);
    mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
    const halfLifeMs = options.halfLifeMs ?? DEFAULT_HALF_LIFE_MS;
    const channel = options.hintChannel === false ? '' : (options.hintChannel ?? hintChannelName(options.modelPath));
    const path = ExpertStore.heatMapFile(options.stateDir, index.modelPath);
    const model = { path: index.modelPath, size: index.files.reduce((s, f) => s + f.size, 0), name: index.name };
    let heat: HeatMap | undefined;
    try {
      heat = HeatMap.load(path, model, index.nLayer, index.nExpert, halfLifeMs);
      if (heat) options.log.info({ path, observations: heat.observations }, 'heat map loaded');
    } catch (e) {
      options.log.warn({ path, err: (e as Error).message }, 'heat map ignored; starting a new one');
    }
    const store = new ExpertStore(index, heat ?? new HeatMap(index.nLayer, index.nExpert, halfLifeMs), options, channel);
    if (channel) store.startConsumer();
    store.timers.push(setInterval(() => store.foldHints(), options.foldIntervalMs ?? 1000).unref());
    store.timers.push(setInterval(() => store.persist(), options.persistIntervalMs ?? 30_000).unref());
    return store;
  }

  private startConsumer(): void {
    const addon = loadIoAddon();
    this.consumer = new addon.HintConsumer({
      name: this.hintChannel,
      files: this.index.files.map((f) => f.path),
      nLayer: this.index.nLayer,
      nExpert: this.index.nExpert,
      ranges: expertRangeTable(this.index),
      mode: this.options.ioMode ?? 'auto',
      queueDepth: this.options.queueDepth,
      chunkBytes: this.options.chunkBytes,
      recentMs: this.options.recentMs,
    });
    this.consumer.start();
  }

  /** Accepts '' (the store's model), its file name with or without .gguf, its path or its general.name. */
  resolveModel(name: string): void {
    const file = basename(this.index.modelPath);
    const accepted = ['', file, file.replace(/\.gguf$/i, ''), this.index.modelPath, this.options.modelPath, this.index.name];
    if (!accepted.includes(name)) throw new NotFoundError('model', name, `this expert-store serves '${file}'`);
  }

  /** The warm budget when a request names none: the configured one, else MemAvailable minus the headroom. */
  defaultBudget(): number {
    if (this.options.budgetBytes !== undefined) return this.options.budgetBytes;
    return Math.max(0, availableMemoryBytes() - (this.options.headroomBytes ?? DEFAULT_HEADROOM));
  }

  /** Warms non-expert tensors, then experts (asked for, or in heat order) up to the budget, streaming progress. */
  async *warm(options: WarmOptions = {}, signal?: AbortSignal): AsyncGenerator<WarmProgress> {
    if (options.budgetBytes !== undefined && !(options.budgetBytes >= 0)) throw InvalidArgumentError.field('budget_bytes', 'must be >= 0');
    this.counters.warmRequests++;
    let order = this.heat.hotOrder(this.index.moeLayers);
    if (options.onlyUsed) order = order.filter((h) => h.heat > 0);
    const plan = planWarm(this.index, order, {
      budgetBytes: options.budgetBytes ?? this.defaultBudget(),
      experts: options.experts,
      hottestPerLayer: options.hottestPerLayer,
      skipNonExpert: options.skipNonExpert,
    });
    let reported = { bytes: 0, experts: 0 };
    try {
      for await (const p of runWarm(this.cache, plan, signal)) {
        this.counters.bytesWarmed += p.bytesDone - reported.bytes;
        this.counters.expertsWarmed += p.expertsWarmed - reported.experts;
        reported = { bytes: p.bytesDone, experts: p.expertsWarmed };
        yield p;
      }
    } finally {
      this.foldHints();
    }
  }

  /** Drops experts (all when none are named; the whole files with includeNonExpert) from the page cache. */
  async evict(experts: readonly { layer: number; expert: number }[] = [], includeNonExpert = false): Promise<{ experts: number; bytes: number }> {
    const violations = experts.flatMap((r, i) =>
      this.index.experts[r.layer]?.[r.expert] ? [] : [{ field: `experts[${i}]`, description: `no expert ${r.expert} in layer ${r.layer}` }],
    );
    if (violations.length > 0) throw new InvalidArgumentError(violations);
    const entries = experts.length > 0 ? experts.map((r) => this.index.experts[r.layer][r.expert]) : this.index.experts.flat();
    let bytes: number;
    if (experts.length === 0 && includeNonExpert) {
      bytes = await this.cache.evict(null);
    } else {
      bytes = 0;
      const ranges: FileRange[] = [];
      for (const e of entries) for (const r of e.ranges) ranges.push(r);
      await this.cache.evict(ranges);
      bytes = entries.reduce((s, e) => s + e.bytes, 0);
    }
    // The consumer must read these again on the next hint instead of trusting that it did a moment ago.
    this.consumer?.forget();
    this.counters.expertsEvicted += entries.length;
    this.counters.bytesEvicted += bytes;
    return { experts: entries.length, bytes };
  }

  /** Which experts are in the page cache, per layer and overall, plus the non-expert tensors. */
  async residency(): Promise<ResidencyReport> {
    const ranges: FileRange[] = [];
    for (const layer of this.index.experts) for (const e of layer) for (const r of e.ranges) ranges.push(r);
    const nExpertRanges = ranges.length;
    for (const t of this.index.nonExpert) ranges.push(t);
    const { method, resident } = await this.cache.residency(ranges);
    let i = 0;
    const layers: LayerResidencyReport[] = [];
    for (const layer of this.index.moeLayers) {
      const residentExperts: number[] = [];
      let residentBytes = 0;
      for (const e of this.index.experts[layer]) {
        let bytes = 0;
        for (let k = 0; k < e.ranges.length; k++) bytes += resident[i++];
        residentBytes += bytes;
        if (bytes === e.bytes) residentExperts.push(e.expert);
      }
      const totalBytes = this.index.expertBytesPerLayer[layer];
      layers.push({ layer, residentExperts, expertsTotal: this.index.nExpert, residentBytes, totalBytes, residentFraction: totalBytes ? residentBytes / totalBytes : 0 });
    }
    let nonExpertResidentBytes = 0;
    for (let k = nExpertRanges; k < ranges.length; k++) nonExpertResidentBytes += resident[k];
    const residentBytes = layers.reduce((s, l) => s + l.residentBytes, 0);
    return {
      layers,
      residentBytes,
      totalBytes: this.index.expertBytes,
      residentFraction: this.index.expertBytes ? residentBytes / this.index.expertBytes : 0,
      nonExpertResidentBytes,
      nonExpertTotalBytes: this.index.nonExpertBytes,
      method,
    };
  }

  /** The hint consumer's counters (undefined without a channel). */
  hintStats(): NativeHintConsumerStats | undefined {
    return this.consumer?.stats();
  }

  stats(): ExpertStoreStats {
    const hints = this.consumer?.stats();
    const uring = PageCache.ioUringStatus();
    const ioMode = hints?.mode ?? (this.options.ioMode === 'fadvise' || !uring.available ? 'fadvise' : 'uring');
    return {
      ...this.counters,
      routingObservations: this.heat.observations,
      hintChannel: this.hintChannel,
      hints,
      ioMode,
      ioFallbackReason: hints ? (hints.fallbackReason ?? '') : this.options.ioMode !== 'fadvise' ? (uring.reason ?? '') : '',
    };
  }

  /** Moves the uses the hint consumer counted into the heat map. */
  foldHints(now = Date.now()): void {
    if (!this.consumer || this.closed) return;
    const deltas = this.consumer.takeCounts();
    const steps = this.consumer.stats().steps;
    this.heat.observe(deltas, now, steps - this.stepsFolded);
    this.stepsFolded = steps;
  }

  heatReport(now = Date.now()): HeatReport {
    this.foldHints(now);
    const heat = this.heat.heatAt(now);
    const n = this.index.nExpert;
    return {
      layers: this.index.moeLayers.map((layer) => ({
        layer,
        counts: Array.from(this.heat.counts.subarray(layer * n, (layer + 1) * n)),
        heat: Array.from(heat.subarray(layer * n, (layer + 1) * n)),
      })),
      stepsObserved: this.heat.stepsObserved,
      halfLifeSeconds: this.heat.halfLifeMs / 1000,
    };
  }

  /** Saves the heat map if it changed. False (and the error logged) when the write failed: the old file is intact. */
  persist(force = false): boolean {
    this.foldHints();
    if (!force && !this.heat.dirty) return true;
    try {
      this.heat.save(this.heatMapPath, this.heatModel);
      return true;
    } catch (e) {
      this.options.log.error({ path: this.heatMapPath, err: (e as Error).message }, 'saving the heat map failed; the previous file is kept');
      return false;
    }
  }

  /** Stops the consumer and the timers and saves the heat map. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const t of this.timers) clearInterval(t);
    this.persist();
    this.closed = true;
    this.consumer?.stop();
    this.consumer = undefined;
  }
}
