import { EventEmitter } from 'node:events';
import { ResourceExhaustedError, UnavailableError } from '../common/errors';

export interface AdmissionOptions {
  /**
   * Calls in flight allowed on a backend, asked at every decision so it can follow what the backend reports (the
   * router passes its engines' parallel sequences, or a fixed override).
   */
  limit(backend: string): number;
  /** Calls waiting for a slot, over all backends; a call beyond it is refused at once. */
  maxQueued: number;
  /** The retry delay told to refused callers. */
  retryAfterMs: number;
}

export interface AdmissionRequest {
  /** Backends that may take the call, asked again whenever slots or health change (healthy ones serving the model). */
  candidates(): readonly string[];
  /** Chooses among the candidates with a free slot (at least one). */
  pick(free: readonly string[]): string;
  /** Aborting while queued leaves the queue and rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A slot on one backend; release it when the call ends (idempotent). */
export interface AdmissionTicket {
  readonly backend: string;
  release(): void;
}

interface Waiter {
  request: AdmissionRequest;
  resolve(ticket: AdmissionTicket): void;
  reject(err: unknown): void;
}

/**
 * Bounded admission of generations: at most limit(backend) calls per backend, then a FIFO queue of at most
 * maxQueued calls, then RESOURCE_EXHAUSTED with a retry delay, so overload is refused fast instead of piling up.
 * A limit that rises (a backend reporting more capacity) takes effect at the next poke or release.
 * Invariant: after every change no queued call has a free candidate, so a newcomer that finds a free slot may
 * take it without overtaking anyone who could have used it. Emits 'change' whenever counts change.
 */
export class Admission extends EventEmitter<{ change: [] }> {
  private readonly inFlightBy = new Map<string, number>();
  private readonly queue: Waiter[] = [];

  constructor(private readonly options: AdmissionOptions) {
    super();
  }

  inFlight(backend: string): number {
    return this.inFlightBy.get(backend) ?? 0;
  }

  get queued(): number {
    return this.queue.length;
  }

  acquire(request: AdmissionRequest): Promise<AdmissionTicket> {
    if (request.signal?.aborted) return Promise.reject(request.signal.reason);
    const candidates = request.candidates();
    if (candidates.length === 0) return Promise.reject(noBackend());
    const free = candidates.filter((b) => this.hasRoom(b));
    if (free.length > 0) return Promise.resolve(this.grant(request.pick(free)));
    if (this.queue.length >= this.options.maxQueued) {
      // Backend addresses stay out of the message: it goes to the client.
      const slots = candidates.reduce((n, b) => n + this.options.limit(b), 0);
      return Promise.reject(
        new ResourceExhaustedError(`all ${slots} call slots of the backends are taken and ${this.queue.length} calls are queued`, this.options.retryAfterMs),
      );
    }
    return new Promise<AdmissionTicket>((resolve, reject) => {
      const waiter: Waiter = { request, resolve, reject };
      const signal = request.signal;
      const onAbort = () => {
        const i = this.queue.indexOf(waiter);
        if (i >= 0) {
          this.queue.splice(i, 1);
          this.emit('change');
        }
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      waiter.resolve = (ticket) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(ticket);
      };
      waiter.reject = (err) => {
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      };
      this.queue.push(waiter);
      this.emit('change');
    });
  }

  /** Re-examines the queue; call when backend health or the model set changes. */
  poke(): void {
    this.drain();
  }

  private hasRoom(backend: string): boolean {
    return this.inFlight(backend) < this.options.limit(backend);
  }

  private grant(backend: string): AdmissionTicket {
    this.inFlightBy.set(backend, this.inFlight(backend) + 1);
    this.emit('change');
    let released = false;
    return {
      backend,
      release: () => {
        if (released) return;
        released = true;
        const n = this.inFlight(backend) - 1;
        if (n > 0) this.inFlightBy.set(backend, n);
        else this.inFlightBy.delete(backend);
        this.drain();
        this.emit('change');
      },
    };
  }

  private drain(): void {
    for (let i = 0; i < this.queue.length; ) {
      const waiter = this.queue[i];
      const candidates = waiter.request.candidates();
      if (candidates.length === 0) {
        this.queue.splice(i, 1);
        waiter.reject(noBackend());
        continue;
      }
      const free = candidates.filter((b) => this.hasRoom(b));
      if (free.length === 0) {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      waiter.resolve(this.grant(free.length === 1 ? free[0] : waiter.request.pick(free)));
    }
  }
}

function noBackend(): UnavailableError {
  return new UnavailableError('no healthy backend can take the call');
}
