import { EventEmitter } from 'node:events';

/** One model's load on one backend, as its GetLoad reports it. */
export interface ModelLoadInfo {
  state: 'loading' | 'ready' | 'failed';
  activeSequences: number;
  queuedRequests: number;
  /** Sequences decoded together; 0 while loading. */
  capacity: number;
  /** Why the model failed there (state 'failed'). */
  error?: string;
  /** Share of the model's expert bytes in that host's page cache (0-1); undefined when not measured. */
  expertResidency?: number;
}

/**
 * A backend whose page cache holds at least this share of the model's expert bytes is warm. Kept in step with the
 * inference service's WARM_RESIDENCY (the router may not import it).
 */
const WARM_RESIDENCY = 0.9;

interface Backend {
  address: string;
  healthy: boolean;
  models: Map<string, ModelLoadInfo>;
}

/**
 * What the router knows about its backends: health (from grpc.health.v1 watches), the models each hosts and
 * their load (from GetLoad), and the routing choice made from that. Pure state and policy: BackendMonitor feeds
 * it from the network, tests feed it directly. Emits 'change' on every update and 'suspect' (address) when a
 * call found a backend unavailable, so its health can be re-checked.
 */
export class BackendPool extends EventEmitter<{ change: []; suspect: [address: string] }> {
  private readonly backends = new Map<string, Backend>();
  private turn = 0;

  constructor(addresses: readonly string[]) {
    super();
    for (const address of new Set(addresses)) this.backends.set(address, { address, healthy: false, models: new Map() });
  }

  get addresses(): string[] {
    return [...this.backends.keys()];
  }

  /** A backend that appeared (discovery): unhealthy, with no models, until its health watch says otherwise. */
  add(address: string): void {
    if (this.backends.has(address)) return;
    this.backends.set(address, { address, healthy: false, models: new Map() });
    this.emit('change');
  }

  /**
   * A backend that went away (discovery): no new call is routed to it. Calls already on it run on over their
   * channel (or fail over before their first token, as for any backend that fails).
   */
  remove(address: string): void {
    if (!this.backends.delete(address)) return;
    this.emit('change');
  }

  has(address: string): boolean {
    return this.backends.has(address);
  }

  /** What `address` last reported of `model` (GetLoad). */
  load(address: string, model: string): ModelLoadInfo | undefined {
    return this.backends.get(address)?.models.get(model);
  }

  setHealth(address: string, healthy: boolean): void {
    const backend = this.backends.get(address);
    if (!backend || backend.healthy === healthy) return;
    backend.healthy = healthy;
    this.emit('change');
  }

  setLoad(address: string, models: ReadonlyMap<string, ModelLoadInfo>): void {
    const backend = this.backends.get(address);
    if (!backend) return; // removed while its poll was in flight
    backend.models = new Map(models);
    this.emit('change');
  }

  /** A call found `address` unavailable: stop routing to it until its health is confirmed again. */
  markUnavailable(address: string): void {
    const backend = this.backends.get(address);
    if (!backend?.healthy) return;
    backend.healthy = false;
    this.emit('change');
    this.emit('suspect', address);
  }

  isHealthy(address: string): boolean {
    return this.backends.get(address)?.healthy ?? false;
  }

  anyHealthy(): boolean {
    for (const b of this.backends.values()) if (b.healthy) return true;
    return false;
  }

  /** Healthy backends on which `model` is ready. */
  candidates(model: string): string[] {
    const out: string[] = [];
    for (const b of this.backends.values()) if (b.healthy && b.models.get(model)?.state === 'ready') out.push(b.address);
    return out;
  }

  /** Whether any backend, healthy or not, has reported `model` (so a request for it is UNAVAILABLE, not NOT_FOUND). */
  knowsModel(model: string): boolean {
    for (const b of this.backends.values()) if (b.models.has(model)) return true;
    return false;
  }

  /** Why `model` is not served: each backend's reason for its failure, as "address: reason"; empty when none failed. */
  failures(model: string): string[] {
    const out: string[] = [];
    for (const b of this.backends.values()) {
      const load = b.models.get(model);
      if (load?.state === 'failed') out.push(`${b.address}: ${load.error ?? 'failed to load'}`);
    }
    return out;
  }

  /** Models ready on at least one healthy backend, sorted. */
  readyModels(): string[] {
    const names = new Set<string>();
    for (const b of this.backends.values())
      if (b.healthy) for (const [name, load] of b.models) if (load.state === 'ready') names.add(name);
    return [...names].sort();
  }

  /**
   * The sequences `address` decodes at once: the sum of its ready models' capacity (each model has its own engine),
   * as its last GetLoad reported it; 0 while none is ready. A ready model reporting no capacity (a backend older
   * than the field) counts as 1, so it is sent one call at a time rather than flooded.
   */
  capacity(address: string): number {
    let total = 0;
    for (const load of this.backends.get(address)?.models.values() ?? []) if (load.state === 'ready') total += Math.max(1, load.capacity);
    return total;
  }

  /**
   * The least loaded of `free` for `model`, among the warm ones when any has room: the larger of the backend's
   * reported work on the model (active + queued, possibly stale) and the router's own calls in flight to it
   * (current, but blind to other routers), over the model's capacity there. A backend whose page cache lacks the
   * model's experts (just scaled up, still warming) would read them from disk at every token, so it gets calls only
   * when no warm one has room; one that does not measure counts as warm. Ties go round-robin.
   */
  pick(model: string, candidates: readonly string[], inFlight: (address: string) => number): string {
    if (candidates.length === 0) throw new Error('pick needs at least one backend');
    const warm = candidates.filter((address) => (this.backends.get(address)?.models.get(model)?.expertResidency ?? 1) >= WARM_RESIDENCY);
    const free = warm.length > 0 ? warm : candidates;
    const start = this.turn++ % free.length;
    let best = free[start];
    let bestScore = Infinity;
    for (let i = 0; i < free.length; i++) {
      const address = free[(start + i) % free.length];
      const load = this.backends.get(address)?.models.get(model);
      const reported = load ? load.activeSequences + load.queuedRequests : 0;
      const score = Math.max(reported, inFlight(address)) / Math.max(1, load?.capacity ?? 1);
      if (score < bestScore) {
        best = address;
        bestScore = score;
      }
    }
    return best;
  }
}
