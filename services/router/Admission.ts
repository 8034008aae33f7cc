import { EventEmitter } from 'node:events';
import { ResourceExhaustedError, UnavailableError } from '../common/errors';
import { FairQueue } from './FairQueue';
import { ServiceTimes } from './ServiceTimes';
import { StandingQueue } from './StandingQueue';

export interface AdmissionOptions {
  /**
   * Calls in flight allowed on a backend, asked at every decision so it can follow what the backend reports (the
   * router passes its engines' parallel sequences, or a fixed override).
   */
  limit(backend: string): number;
  /** Calls waiting for a slot, over all backends (the memory bound); a call beyond it is refused at once. */
  maxQueued: number;
  /**
   * The time bound: a call joins the queue only if its expected wait is at most this, and a queued call that has
   * waited this long (the estimate was wrong, a backend slowed down) leaves with RESOURCE_EXHAUSTED.
   */
  maxQueueWaitMs: number;
  /** How long the queue may stay non-empty and still be a burst rather than overload (StandingQueue). */
  burstMs: number;
  /** The retry delay told to refused callers while no call has ended yet to estimate waits from. */
  retryAfterMs: number;
  /** The clock, in ms (tests pass their own). */
  now?: () => number;
}

export interface AdmissionRequest {
  /** The model asked for: service times, and so expected waits, are per model. */
  model: string;
  /** The tokens it asks for at most: a call's expected service time scales with them. */
  maxTokens: number;
  /** Who is calling (an API key's digest or the peer): callers share the queue fairly (FairQueue). */
  caller: string;
  /** Higher leaves the queue first. */
  priority: number;
  /** The call's deadline (ms since the epoch), if it has one: a call whose expected wait and service do not fit is
   * refused at once. */
  deadline?: number;
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
  /** How long the call waited in the queue (0 when a slot was free). */
  readonly queuedMs: number;
  /** The wait predicted when it joined the queue; undefined when it did not queue or no estimate existed. */
  readonly expectedWaitMs?: number;
  /** `completed`: the call ran to its end, so its slot time is a sample of the model's service time. */
  release(completed?: boolean): void;
}

/** Why admission turned a call away; the label of the refusals metric. */
export type RefusalReason = 'queue_full' | 'wait_over_deadline' | 'wait_over_max' | 'standing_queue' | 'shed' | 'waited_max';

/** RESOURCE_EXHAUSTED from admission, with the reason and (as RetryInfo) the wait it expected. */
export class AdmissionRefusal extends ResourceExhaustedError {
  constructor(
    message: string,
    retryAfterMs: number,
    readonly reason: RefusalReason,
  ) {
    super(message, retryAfterMs);
  }
}

/**
 * While the queue is standing, the longest wait a call may join with, in mean generations: half of one keeps an
 * admitted call's latency within 1.5 times an unqueued one's.
 */
const STANDING_TARGET = 0.5;

interface Waiter {
  request: AdmissionRequest;
  queuedAt: number;
  expectedWaitMs?: number;
  resolve(ticket: AdmissionTicket): void;
  reject(err: unknown): void;
}

interface AdmissionEvents {
  /** Counts changed (in flight, queued). */
  change: [];
  /** A call got a slot after `queuedMs` in the queue. */
  admitted: [model: string, queuedMs: number];
  refused: [model: string, reason: RefusalReason];
}

/**
 * Admission of generations: at most limit(backend) calls per backend; beyond that a queue, fair between callers and
 * ordered by priority (FairQueue), that a call joins only when the wait it can expect (from the measured service
 * times of its model and the calls ahead of it) fits its deadline, the maximum queue wait, and, while the queue is
 * standing rather than absorbing a burst, a target of half a service time (StandingQueue). Everything else is refused
 * at once with RESOURCE_EXHAUSTED and the expected wait as the retry delay. Queued calls leave on cancel or
 * deadline without having occupied anything.
 * Invariant: after every change no queued call has a free candidate, so a newcomer that finds a free slot may take
 * it without overtaking anyone who could have used it.
 */
export class Admission extends EventEmitter<AdmissionEvents> {
  private readonly inFlightBy = new Map<string, number>();
  private readonly queue = new FairQueue<Waiter>();
  private readonly serviceTimes = new ServiceTimes();
  private readonly standing: StandingQueue;
  /** Whether the last arrival found the queue standing: the moment it starts, the queue is cut to its target. */
  private wasStanding = false;
  private readonly now: () => number;

  constructor(private readonly options: AdmissionOptions) {
    super();
    this.standing = new StandingQueue(options.burstMs);
    this.now = options.now ?? (() => performance.now());
  }

  inFlight(backend: string): number {
    return this.inFlightBy.get(backend) ?? 0;
  }

  get queued(): number {
    return this.queue.size;
  }

  /** The mean slot time of `model`'s calls, once one has ended. */
  serviceTimeMs(model: string): number | undefined {
    return this.serviceTimes.mean(model);
  }

  acquire(request: AdmissionRequest): Promise<AdmissionTicket> {
    if (request.signal?.aborted) return Promise.reject(request.signal.reason);
    const candidates = request.candidates();
    if (candidates.length === 0) return Promise.reject(noBackend());
    const free = candidates.filter((b) => this.hasRoom(b));
    if (free.length > 0) return Promise.resolve(this.grant(request, request.pick(free), 0));

    const now = this.now();
    this.standing.arrived(now);
    const standing = this.standingNow(now);
    const placement = this.queue.placementOf(request.caller, request.priority);
    const expectedWaitMs = this.expectedWait(request.model, candidates, placement);
    const refusal = this.refusal(request, expectedWaitMs, standing, now);
    if (refusal) {
      this.emit('refused', request.model, refusal.reason);
      return Promise.reject(refusal);
    }

    return new Promise<AdmissionTicket>((resolve, reject) => {
      const waiter: Waiter = { request, queuedAt: now, expectedWaitMs, resolve, reject };
      const signal = request.signal;
      const leave = (err: unknown) => {
        if (this.queue.remove(waiter)) this.queueChanged();
        waiter.reject(err);
      };
      const onAbort = () => leave(signal?.reason);
      // The estimate was a promise to the caller: past the bound it is told so, rather than kept waiting.
      const timer = setTimeout(() => {
        this.emit('refused', request.model, 'waited_max');
        leave(new AdmissionRefusal(`the call waited ${this.options.maxQueueWaitMs} ms in the queue, the maximum, without a free slot`, this.options.retryAfterMs, 'waited_max'));
      }, this.options.maxQueueWaitMs);
      const settle = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      waiter.resolve = (ticket) => {
        settle();
        resolve(ticket);
      };
      waiter.reject = (err) => {
        settle();
        reject(err);
      };
      this.queue.push(waiter, placement, request.caller);
      this.queueChanged();
    });
  }

  /** Re-examines the queue; call when backend health or the model set changes. */
  poke(): void {
    this.drain();
  }

  /**
   * The wait of a call placed at `placement`, spread over its candidates' slots: the expected service of every call
   * ahead of it that can use one of its backends, plus one mean call for the slots to start freeing (the calls
   * running are on average half done, and the first of several ends sooner). Undefined before any call of the model
   * ended.
   */
  private expectedWait(model: string, candidates: readonly string[], placement: Parameters<FairQueue<Waiter>['ahead']>[0]): number | undefined {
    const meanMs = this.serviceTimes.mean(model);
    const slots = candidates.reduce((n, b) => n + this.options.limit(b), 0);
    if (meanMs === undefined || slots === 0) return undefined;
    const mine = new Set(candidates);
    let workMs = meanMs;
    for (const waiter of this.queue.ahead(placement))
      if (waiter.request.candidates().some((b) => mine.has(b))) workMs += this.serviceTimes.cost(waiter.request.model, waiter.request.maxTokens) ?? meanMs;
    return workMs / slots;
  }

  /**
   * Whether the queue is standing now. When it starts to, the calls that joined it while it looked like a burst and
   * would wait more than the target are dropped from it (refused, with their expected wait as RetryInfo): the
   * burst was the start of an overload, and they would make every call behind them wait as long.
   */
  private standingNow(now: number): boolean {
    const standing = this.standing.isStanding(now);
    if (standing && !this.wasStanding) this.shedBeyondTarget();
    this.wasStanding = standing;
    return standing;
  }

  private shedBeyondTarget(): void {
    let workMs = 0;
    const shed: { waiter: Waiter; waitMs: number }[] = [];
    for (const waiter of this.queue) {
      const { model, maxTokens } = waiter.request;
      const meanMs = this.serviceTimes.mean(model);
      const slots = waiter.request.candidates().reduce((n, b) => n + this.options.limit(b), 0);
      if (meanMs === undefined || slots === 0) continue;
      const waitMs = (workMs + meanMs) / slots;
      if (waitMs > STANDING_TARGET * meanMs) shed.push({ waiter, waitMs });
      else workMs += this.serviceTimes.cost(model, maxTokens) ?? meanMs;
    }
    for (const { waiter, waitMs } of shed) {
      this.queue.remove(waiter);
      this.emit('refused', waiter.request.model, 'shed');
      waiter.reject(
        new AdmissionRefusal(
          `the backends are overloaded: calls kept arriving faster than they were served, and this call, queued for a wait of ${Math.round(waitMs)} ms, was dropped from the queue`,
          waitMs,
          'shed',
        ),
      );
    }
    if (shed.length > 0) this.queueChanged();
  }

  private refusal(request: AdmissionRequest, expectedWaitMs: number | undefined, standing: boolean, now: number): AdmissionRefusal | undefined {
    const retryMs = expectedWaitMs ?? this.options.retryAfterMs;
    // Backend addresses stay out of the messages: they go to the client.
    if (this.queue.size >= this.options.maxQueued)
      return new AdmissionRefusal(`every call slot is taken and the queue is full (${this.queue.size} calls)`, retryMs, 'queue_full');
    if (expectedWaitMs === undefined) return undefined;
    const wait = Math.round(expectedWaitMs);
    const serviceMs = this.serviceTimes.cost(request.model, request.maxTokens) ?? 0;
    const meanMs = this.serviceTimes.mean(request.model) ?? 0;
    if (request.deadline && expectedWaitMs + serviceMs > request.deadline - Date.now())
      return new AdmissionRefusal(
        `the expected wait for a call slot (${wait} ms) and generation (${Math.round(serviceMs)} ms) exceed the call's deadline`,
        retryMs,
        'wait_over_deadline',
      );
    if (expectedWaitMs > this.options.maxQueueWaitMs)
      return new AdmissionRefusal(`the expected wait for a call slot (${wait} ms) exceeds the maximum queue wait (${this.options.maxQueueWaitMs} ms)`, retryMs, 'wait_over_max');
    if (standing && expectedWaitMs > STANDING_TARGET * meanMs) {
      this.standing.shed(now);
      return new AdmissionRefusal(
        `the backends are overloaded: calls arrive faster than they are served, and the expected wait for a call slot (${wait} ms) exceeds half a mean generation (${Math.round(meanMs)} ms)`,
        retryMs,
        'standing_queue',
      );
    }
    return undefined;
  }

  private hasRoom(backend: string): boolean {
    return this.inFlight(backend) < this.options.limit(backend);
  }

  private grant(request: AdmissionRequest, backend: string, queuedMs: number, expectedWaitMs?: number): AdmissionTicket {
    this.inFlightBy.set(backend, this.inFlight(backend) + 1);
    this.emit('admitted', request.model, queuedMs);
    this.emit('change');
    const grantedAt = this.now();
    let released = false;
    return {
      backend,
      queuedMs,
      expectedWaitMs,
      release: (completed = false) => {
        if (released) return;
        released = true;
        if (completed) this.serviceTimes.record(request.model, this.now() - grantedAt, request.maxTokens);
        const n = this.inFlight(backend) - 1;
        if (n > 0) this.inFlightBy.set(backend, n);
        else this.inFlightBy.delete(backend);
        this.drain();
        this.emit('change');
      },
    };
  }

  private queueChanged(): void {
    this.standing.observe(this.queue.size, this.now());
    this.emit('change');
  }

  private drain(): void {
    let changed = false;
    for (const waiter of [...this.queue]) {
      const candidates = waiter.request.candidates();
      if (candidates.length === 0) {
        this.queue.remove(waiter);
        changed = true;
        waiter.reject(noBackend());
        continue;
      }
      const free = candidates.filter((b) => this.hasRoom(b));
      if (free.length === 0) continue;
      this.queue.take(waiter);
      this.standing.departed(this.now());
      changed = true;
      const backend = free.length === 1 ? free[0] : waiter.request.pick(free);
      waiter.resolve(this.grant(waiter.request, backend, this.now() - waiter.queuedAt, waiter.expectedWaitMs));
    }
    if (changed) this.queueChanged();
  }
}

function noBackend(): UnavailableError {
  return new UnavailableError('no healthy backend can take the call');
}
