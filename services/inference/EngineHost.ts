import { EventEmitter } from 'node:events';
import { NotFoundError, UnavailableError } from '../common/errors';
import type { EngineLike } from '../engine/types';

export type ModelStatus = 'loading' | 'ready' | 'failed';

export interface HostedModel {
  name: string;
  status: ModelStatus;
  /** Set when ready. */
  engine?: EngineLike;
  /** Why loading failed. */
  error?: string;
}

/**
 * The models of one inference process, by name, through their life cycle (loading -> ready | failed). Emits
 * 'change' on every transition; serves the engines to the request handlers.
 */
export class EngineHost extends EventEmitter<{ change: [] }> {
  private readonly models = new Map<string, HostedModel>();
  private closing = false;

  setLoading(name: string): void {
    this.models.set(name, { name, status: 'loading' });
    this.emit('change');
  }

  setReady(name: string, engine: EngineLike): void {
    this.models.set(name, { name, status: 'ready', engine });
    this.emit('change');
  }

  setFailed(name: string, error: string): void {
    this.models.set(name, { name, status: 'failed', error });
    this.emit('change');
  }

  /** The engine serving `name`; NotFoundError for a model this process does not host, UnavailableError while not ready. */
  engine(name: string): EngineLike {
    const model = this.models.get(name);
    if (!model) throw new NotFoundError('model', name);
    if (this.closing) throw new UnavailableError('the inference service is shutting down');
    if (model.status === 'loading') throw new UnavailableError(`model '${name}' is still loading`);
    if (model.status === 'failed' || !model.engine) throw new UnavailableError(`model '${name}' failed to load: ${model.error ?? 'no reason given'}`);
    return model.engine;
  }

  /** Every model, sorted by name. */
  list(): HostedModel[] {
    return [...this.models.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Ready to serve: no model still loading and at least one ready. */
  get ready(): boolean {
    const models = [...this.models.values()];
    return models.some((m) => m.status === 'ready') && models.every((m) => m.status !== 'loading');
  }

  get isClosing(): boolean {
    return this.closing;
  }

  /** Refuses new work, then closes every engine (ending its generations). */
  async close(): Promise<void> {
    this.closing = true;
    const engines = [...this.models.values()].flatMap((m) => (m.engine ? [m.engine] : []));
    await Promise.all(engines.map((e) => e.close()));
  }
}
