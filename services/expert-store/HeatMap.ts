import { readFileSync } from 'node:fs';

import { writeFileAtomic } from './writeFileAtomic';

/** Which model a heat map belongs to: a saved map is used only for the same shape and file size. */
export interface HeatMapModel {
  path: string;
  size: number;
  name: string;
}

/** The file format (JSON). heat[layer][expert] is the decayed use as of heatTimeMs; counts are plain totals. */
export interface HeatMapFile {
  format: 'moeflash-heatmap';
  version: 1;
  model: HeatMapModel;
  nLayer: number;
  nExpert: number;
  halfLifeSeconds: number;
  savedAt: string;
  heatTimeMs: number;
  stepsObserved: number;
  observations: number;
  heat: number[][];
  counts: number[][];
}

export interface HotExpert {
  layer: number;
  expert: number;
  heat: number;
}

/**
 * Per (layer, expert) use with exponential decay: each observation adds 1, and heat halves every half-life, so the
 * map follows what the traffic uses now while remembering what it used before a restart. Also keeps plain totals.
 */
export class HeatMap {
  private heat: Float64Array;
  private heatTimeMs: number;
  readonly counts: Float64Array;
  stepsObserved = 0;
  observations = 0;
  /** Changed since the last save. */
  dirty = false;

  constructor(
    readonly nLayer: number,
    readonly nExpert: number,
    readonly halfLifeMs: number,
    now = Date.now(),
  ) {
    if (!(halfLifeMs > 0)) throw new RangeError('halfLifeMs must be positive');
    this.heat = new Float64Array(nLayer * nExpert);
    this.counts = new Float64Array(nLayer * nExpert);
    this.heatTimeMs = now;
  }

  private decayTo(now: number): void {
    if (now <= this.heatTimeMs) return;
    const f = Math.pow(0.5, (now - this.heatTimeMs) / this.halfLifeMs);
    for (let i = 0; i < this.heat.length; i++) this.heat[i] *= f;
    this.heatTimeMs = now;
  }

  /** Adds uses: deltas[layer * nExpert + expert]; `steps` engine steps were observed to produce them. */
  observe(deltas: ArrayLike<number>, now = Date.now(), steps = 0): void {
    if (deltas.length !== this.heat.length) throw new RangeError(`expected ${this.heat.length} counts, got ${deltas.length}`);
    this.decayTo(now);
    let any = steps > 0;
    for (let i = 0; i < deltas.length; i++) {
      const d = deltas[i];
      if (d > 0) {
        this.heat[i] += d;
        this.counts[i] += d;
        this.observations += d;
        any = true;
      }
    }
    this.stepsObserved += steps;
    if (any) this.dirty = true;
  }

  /** The decayed heat at `now`, index layer * nExpert + expert. */
  heatAt(now = Date.now()): Float64Array {
    this.decayTo(now);
    return Float64Array.from(this.heat);
  }

  /**
   * Experts of the given layers, hottest first; ties (and never-used experts) in layer, then expert order, so the
   * order is deterministic.
   */
  hotOrder(layers: readonly number[], now = Date.now()): HotExpert[] {
    const heat = this.heatAt(now);
    const out: HotExpert[] = [];
    for (const layer of layers) for (let e = 0; e < this.nExpert; e++) out.push({ layer, expert: e, heat: heat[layer * this.nExpert + e] });
    return out.sort((a, b) => b.heat - a.heat || a.layer - b.layer || a.expert - b.expert);
  }

  toFile(model: HeatMapModel, now = Date.now()): HeatMapFile {
    const heat = this.heatAt(now);
    const rows = (a: Float64Array) => Array.from({ length: this.nLayer }, (_, l) => Array.from(a.subarray(l * this.nExpert, (l + 1) * this.nExpert)));
    return {
      format: 'moeflash-heatmap',
      version: 1,
      model,
      nLayer: this.nLayer,
      nExpert: this.nExpert,
      halfLifeSeconds: this.halfLifeMs / 1000,
      savedAt: new Date(now).toISOString(),
      heatTimeMs: now,
      stepsObserved: this.stepsObserved,
      observations: this.observations,
      heat: rows(heat),
      counts: rows(this.counts),
    };
  }

  /** Writes the map atomically (temp file + fsync + rename, mode 0600); on failure the old file stays intact. */
  save(path: string, model: HeatMapModel, now = Date.now()): void {
    writeFileAtomic(path, JSON.stringify(this.toFile(model, now)), 0o600);
    this.dirty = false;
  }

  /**
   * The map saved at `path`, or undefined when there is none. Throws (with the reason) for a file that is not a
   * heat map or belongs to another model (other shape or file size).
   */
  static load(path: string, model: HeatMapModel, nLayer: number, nExpert: number, halfLifeMs: number): HeatMap | undefined {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    let f: HeatMapFile;
    try {
      f = JSON.parse(text) as HeatMapFile;
    } catch (e) {
      throw new Error(`heat map '${path}' is not valid JSON: ${(e as Error).message}`);
    }
    if (f?.format !== 'moeflash-heatmap' || f.version !== 1) throw new Error(`'${path}' is not a version 1 moeflash heat map`);
    if (f.nLayer !== nLayer || f.nExpert !== nExpert || f.model?.size !== model.size) {
      throw new Error(
        `heat map '${path}' is for a model of ${f.nLayer} layers x ${f.nExpert} experts (${f.model?.size} bytes), ` +
          `not this one (${nLayer} x ${nExpert}, ${model.size} bytes)`,
      );
    }
    const valid = (rows: unknown) =>
      Array.isArray(rows) && rows.length === nLayer && rows.every((r) => Array.isArray(r) && r.length === nExpert && r.every((x) => typeof x === 'number' && x >= 0));
    if (!valid(f.heat) || !valid(f.counts)) throw new Error(`heat map '${path}' has malformed heat or counts`);
    const map = new HeatMap(nLayer, nExpert, halfLifeMs, f.heatTimeMs);
    f.heat.forEach((row, l) => map.heat.set(row, l * nExpert));
    f.counts.forEach((row, l) => map.counts.set(row, l * nExpert));
    map.stepsObserved = f.stepsObserved ?? 0;
    map.observations = f.observations ?? 0;
    return map;
  }
}
