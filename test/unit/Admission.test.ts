import assert from 'node:assert/strict';
import { ResourceExhaustedError, UnavailableError } from '../../services/common/errors';
import { Admission, AdmissionRefusal, type AdmissionOptions, type AdmissionRequest, type AdmissionTicket } from '../../services/router/Admission';
import { BackendPool, type ModelLoadInfo } from '../../services/router/BackendPool';

const OPTIONS = { maxQueueWaitMs: 30_000, burstMs: 250, retryAfterMs: 750 };

function admission(limit: number, maxQueued: number, options: Partial<AdmissionOptions> = {}): Admission {
  return new Admission({ limit: () => limit, maxQueued, ...OPTIONS, ...options });
}

/** A request of model m for 1 token from caller c1 at priority 0 unless `fields` say otherwise. */
function req(candidates: readonly string[], fields: Partial<AdmissionRequest> = {}): AdmissionRequest {
  return { model: 'm', maxTokens: 1, caller: 'c1', priority: 0, candidates: () => candidates, pick: first, ...fields };
}

function ready(capacity: number): Map<string, ModelLoadInfo> {
  return new Map([['m', { state: 'ready', activeSequences: 0, queuedRequests: 0, capacity }]]);
}

/** Whether `promise` has settled before anything else runs (timers, I/O): within the caller's own turn. */
async function settledAtOnce(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

const first = (free: readonly string[]) => free[0];

describe('Admission', () => {
  it('admits up to the per-backend limit, spreading over the candidates', async () => {
    const a = admission(2, 0);
    const tickets: AdmissionTicket[] = [];
    for (let i = 0; i < 4; i++) tickets.push(await a.acquire(req(['a', 'b'])));
    assert.deepEqual(tickets.map((t) => t.backend), ['a', 'a', 'b', 'b']);
    assert.equal(a.inFlight('a'), 2);
    assert.equal(a.inFlight('b'), 2);
  });

  it('refuses at once with RESOURCE_EXHAUSTED and the retry delay when slots and queue are full', async () => {
    const a = admission(1, 1);
    await a.acquire(req(['a']));
    const queued = a.acquire(req(['a']));
    assert.equal(a.queued, 1);
    await assert.rejects(a.acquire(req(['a'])), (err: unknown) => {
      assert.ok(err instanceof ResourceExhaustedError);
      assert.equal(err.retryAfterMs, 750);
      return true;
    });
    queued.catch(() => undefined);
  });

  it('with the queue full, a call beyond the limit is refused at once, not when a slot frees', async () => {
    const a = admission(1, 1);
    const held = await a.acquire(req(['a']));
    const queued = a.acquire(req(['a']));
    const refused = a.acquire(req(['a']));
    assert.equal(await settledAtOnce(refused), true);
    await assert.rejects(refused, ResourceExhaustedError);
    assert.equal(await settledAtOnce(queued), false, 'the queued call still waits for the held slot');
    assert.equal(a.queued, 1);
    held.release();
    (await queued).release();
    assert.equal(a.inFlight('a'), 0);
  });

  it('with no queue (maxQueued 0), a call beyond the limit is refused at once', async () => {
    const a = admission(2, 0);
    await a.acquire(req(['a']));
    await a.acquire(req(['a']));
    const refused = a.acquire(req(['a']));
    assert.equal(await settledAtOnce(refused), true);
    await assert.rejects(refused, /every call slot is taken and the queue is full \(0 calls\)/);
    assert.equal(a.queued, 0);
  });

  it('the limit follows the capacity each backend reports, as it changes', async () => {
    // Wired as the router wires it when MOEFLASH_ROUTER_MAX_IN_FLIGHT is not set.
    const pool = new BackendPool(['a', 'b']);
    pool.setLoad('a', ready(2));
    pool.setLoad('b', ready(1));
    const a = new Admission({ limit: (b) => pool.capacity(b), maxQueued: 1, ...OPTIONS });
    pool.on('change', () => a.poke());
    const both = req(['a', 'b']);
    const tickets: AdmissionTicket[] = [];
    for (let i = 0; i < 3; i++) tickets.push(await a.acquire(both));
    assert.deepEqual(tickets.map((t) => t.backend), ['a', 'a', 'b']);
    const waiting = a.acquire(both);
    assert.equal(a.queued, 1);
    await assert.rejects(a.acquire(both), ResourceExhaustedError);
    // b reports a larger engine (reloaded with more parallel sequences): the queued call gets the new slot.
    pool.setLoad('b', ready(2));
    tickets.push(await waiting);
    assert.equal(tickets[3].backend, 'b');
    assert.equal(a.inFlight('b'), 2);
    // a shrinks to 1: its two calls run on, but a released slot is not handed out again until it is below 1.
    pool.setLoad('a', ready(1));
    tickets[0].release();
    const onA = a.acquire(req(['a']));
    assert.equal(await settledAtOnce(onA), false);
    tickets[1].release();
    assert.equal((await onA).backend, 'a');
    assert.equal(a.inFlight('a'), 1);
  });

  it('hands a released slot to the first queued call (FIFO)', async () => {
    const a = admission(1, 2);
    const held = await a.acquire(req(['a']));
    const order: string[] = [];
    const one = a.acquire(req(['a'])).then((t) => (order.push('one'), t));
    const two = a.acquire(req(['a'])).then((t) => (order.push('two'), t));
    held.release();
    held.release(); // idempotent: must not free a second slot
    const t1 = await one;
    assert.equal(a.inFlight('a'), 1);
    assert.equal(a.queued, 1);
    t1.release();
    (await two).release();
    assert.deepEqual(order, ['one', 'two']);
    assert.equal(a.inFlight('a'), 0);
  });

  it('a queued call can take a slot on any of its candidates, not only the one that was full first', async () => {
    const a = admission(1, 1);
    const onA = await a.acquire(req(['a']));
    const onB = await a.acquire(req(['b']));
    const waiting = a.acquire(req(['a', 'b']));
    onB.release();
    assert.equal((await waiting).backend, 'b');
    onA.release();
  });

  it('a cancelled queued call leaves the queue and rejects with the abort reason', async () => {
    const a = admission(1, 1);
    const held = await a.acquire(req(['a']));
    const controller = new AbortController();
    const waiting = a.acquire(req(['a'], { signal: controller.signal }));
    controller.abort();
    await assert.rejects(waiting, { name: 'AbortError' });
    assert.equal(a.queued, 0);
    held.release();
    assert.equal(a.inFlight('a'), 0);
  });

  it('fails fast with UNAVAILABLE when no backend can serve, and fails queued calls whose backends all went away', async () => {
    const a = admission(1, 1);
    await assert.rejects(a.acquire(req([])), UnavailableError);
    let healthy = ['a'];
    await a.acquire({ ...req([]), candidates: () => healthy });
    const waiting = a.acquire({ ...req([]), candidates: () => healthy });
    healthy = [];
    a.poke();
    await assert.rejects(waiting, UnavailableError);
  });

  it('lets the pick function choose among free backends', async () => {
    const a = admission(1, 0);
    const t = await a.acquire(req(['a', 'b', 'c'], { pick: (free) => free[free.length - 1] }));
    assert.equal(t.backend, 'c');
  });

  describe('the queue', () => {
    /** An admission on one backend with `limit` slots and a clock the test moves. */
    function clocked(limit: number, options: Partial<AdmissionOptions> = {}) {
      const clock = { ms: 0 };
      const a = admission(limit, 100, { now: () => clock.ms, ...options });
      return { a, clock };
    }

    /** Runs `n` calls of `ms` each to their end, so that the model's service time is `ms`. */
    async function serve(a: Admission, clock: { ms: number }, n: number, ms: number): Promise<void> {
      for (let i = 0; i < n; i++) {
        const t = await a.acquire(req(['a']));
        clock.ms += ms;
        t.release(true);
      }
    }

    /** Queues one call per name; each records its name when granted and gives its slot straight back. */
    function queueNamed(a: Admission, order: string[], names: readonly string[], fields: (name: string) => Partial<AdmissionRequest>): Promise<void>[] {
      return names.map((name) =>
        a.acquire(req(['a'], fields(name))).then((t) => {
          order.push(name);
          t.release();
        }),
      );
    }

    it('serves callers in turn, so one caller with many queued calls cannot starve another', async () => {
      const a = admission(1, 100);
      const held = await a.acquire(req(['a']));
      const order: string[] = [];
      const calls = [
        ...queueNamed(a, order, ['A0', 'A1', 'A2', 'A3', 'A4', 'A5'], () => ({ caller: 'A' })),
        ...queueNamed(a, order, ['B0', 'B1'], () => ({ caller: 'B' })),
      ];
      held.release();
      await Promise.all(calls);
      assert.deepEqual(order, ['A0', 'B0', 'A1', 'B1', 'A2', 'A3', 'A4', 'A5']);
    });

    it('a caller that was idle joins the current round instead of cashing in credit', async () => {
      const a = admission(1, 100);
      const held = await a.acquire(req(['a']));
      const order: string[] = [];
      const named = (name: string, caller: string) => a.acquire(req(['a'], { caller })).then((t) => (order.push(name), t));
      const [a0, a1, a2, a3] = ['A0', 'A1', 'A2', 'A3'].map((name) => named(name, 'A'));
      held.release();
      (await a0).release();
      // B turns up while A1 runs.
      const running = await a1;
      const [b0, b1] = ['B0', 'B1'].map((name) => named(name, 'B'));
      running.release();
      for (const call of [b0, a2, b1, a3]) (await call).release();
      // A credit for the rounds B was idle would put both of B's calls before A2.
      assert.deepEqual(order, ['A0', 'A1', 'B0', 'A2', 'B1', 'A3']);
    });

    it('a higher priority leaves the queue first; FIFO within a priority for one caller', async () => {
      const a = admission(1, 100);
      const held = await a.acquire(req(['a']));
      const order: string[] = [];
      const priorities: Record<string, number> = { low: -1, n1: 0, n2: 0, high: 5 };
      const calls = queueNamed(a, order, ['low', 'n1', 'n2', 'high'], (name) => ({ priority: priorities[name] }));
      held.release();
      await Promise.all(calls);
      assert.deepEqual(order, ['high', 'n1', 'n2', 'low']);
    });

    it('expects a wait of one service time per call ahead over the slots, and tells it with the ticket', async () => {
      const { a, clock } = clocked(2);
      await serve(a, clock, 3, 100);
      assert.equal(a.serviceTimeMs('m'), 100);
      const running = [await a.acquire(req(['a'])), await a.acquire(req(['a']))];
      const first = a.acquire(req(['a']));
      const second = a.acquire(req(['a']));
      clock.ms += 30;
      running[0].release();
      const t1 = await first;
      assert.equal(t1.expectedWaitMs, 50, '(0 ahead + 1) x 100 ms / 2 slots');
      assert.equal(t1.queuedMs, 30);
      running[1].release();
      assert.equal((await second).expectedWaitMs, 100, '(1 ahead + 1) x 100 ms / 2 slots');
    });

    it('counts a call ahead by the tokens it asks for', async () => {
      const { a, clock } = clocked(1);
      await serve(a, clock, 2, 100); // 1 token each: 100 ms a token, 100 ms a call
      const held = await a.acquire(req(['a']));
      const long = a.acquire(req(['a'], { maxTokens: 4 }));
      const after = a.acquire(req(['a']));
      held.release();
      (await long).release();
      assert.equal((await after).expectedWaitMs, 500, '400 ms for the 4-token call ahead + 100 ms for the slot to free');
    });

    it('refuses at once, with the expected wait as RetryInfo, a call whose wait and generation overrun its deadline', async () => {
      const { a, clock } = clocked(1);
      await serve(a, clock, 1, 200);
      const held = await a.acquire(req(['a']));
      const ahead = a.acquire(req(['a']));
      const refused = a.acquire(req(['a'], { deadline: Date.now() + 500 }));
      assert.equal(await settledAtOnce(refused), true);
      await assert.rejects(refused, (err: unknown) => {
        assert.ok(err instanceof AdmissionRefusal);
        assert.equal(err.reason, 'wait_over_deadline');
        assert.equal(err.retryAfterMs, 400, '2 calls x 200 ms on 1 slot');
        assert.match(err.message, /expected wait for a call slot \(400 ms\) and generation \(200 ms\) exceed the call's deadline/);
        return true;
      });
      // With room for the wait and the generation it queues.
      const fits = a.acquire(req(['a'], { deadline: Date.now() + 5_000 }));
      assert.equal(a.queued, 2);
      held.release();
      (await ahead).release();
      (await fits).release();
    });

    it('refuses a call whose expected wait exceeds the maximum queue wait', async () => {
      const { a, clock } = clocked(1, { maxQueueWaitMs: 250 });
      await serve(a, clock, 1, 100);
      const held = await a.acquire(req(['a']));
      const queued = [a.acquire(req(['a'])), a.acquire(req(['a']))];
      await assert.rejects(a.acquire(req(['a'])), (err: unknown) => err instanceof AdmissionRefusal && err.reason === 'wait_over_max' && err.retryAfterMs === 300);
      held.release();
      for (const q of queued) (await q).release();
    });

    /** Whether `call` was refused by the standing queue at once (false while it is queued). */
    async function isRefusal(call: Promise<unknown>): Promise<boolean> {
      if (!(await settledAtOnce(call))) return false;
      return call.then(
        () => false,
        (err: unknown) => err instanceof AdmissionRefusal && err.reason === 'standing_queue',
      );
    }

    it('absorbs a burst; once calls keep outpacing the queue past the burst time, it is cut to half a generation', async () => {
      const { a, clock } = clocked(4, { burstMs: 250 });
      await serve(a, clock, 1, 100);
      const refusals: string[] = [];
      a.on('refused', (_model, reason) => refusals.push(reason));
      const held = [];
      for (let i = 0; i < 4; i++) held.push(await a.acquire(req(['a'])));
      // A burst: ten calls within the burst time all queue, for waits of up to 275 ms.
      const burst = Array.from({ length: 10 }, () => a.acquire(req(['a'])));
      assert.equal(a.queued, 10);
      // Calls keep coming, one every 20 ms, and none leaves: once the queue has stood for the burst time with
      // arrivals outpacing departures in both halves of it, the overload is told from a burst...
      const later: Promise<AdmissionTicket>[] = [];
      let refusedAt: number | undefined;
      while (refusedAt === undefined && clock.ms < 1_000) {
        clock.ms += 20;
        const call = a.acquire(req(['a']));
        if (await isRefusal(call)) refusedAt = clock.ms;
        else later.push(call);
      }
      assert.equal(refusedAt, 360, 'the first call after the queue stood 250 ms with both halves growing');
      // ...the queue is cut to the calls that wait at most half a generation (25 ms and 50 ms on 4 slots); the rest
      // are refused with the wait they would have in the queue that is left (75 ms), and so is the newcomer, at once.
      assert.equal(a.queued, 2);
      const queued = [...burst, ...later];
      const outcomes = await Promise.allSettled(queued.slice(2));
      assert.ok(outcomes.every((o) => o.status === 'rejected' && o.reason instanceof AdmissionRefusal && o.reason.reason === 'shed'));
      assert.deepEqual(
        new Set(outcomes.map((o) => o.status === 'rejected' && (o.reason as AdmissionRefusal).retryAfterMs)),
        new Set([75]),
      );
      assert.deepEqual(refusals.filter((r) => r === 'standing_queue'), ['standing_queue']);
      // The calls kept are served; once empty and with nothing shed for the burst time, a burst is absorbed again.
      for (const t of held) t.release(true);
      for (const call of queued.slice(0, 2)) (await call).release(true);
      clock.ms += 1_000;
      for (let i = 0; i < 4; i++) held[i] = await a.acquire(req(['a']));
      const next = Array.from({ length: 6 }, () => a.acquire(req(['a'])));
      assert.equal(a.queued, 6);
      for (const t of held) t.release();
      for (const call of next) (await call).release();
    });

    it('keeps admitting long waits to a queue that is deep but stable: a caller sending a call as each ends', async () => {
      const { a, clock } = clocked(1, { burstMs: 250 });
      await serve(a, clock, 1, 100);
      const refusals: string[] = [];
      a.on('refused', (_model, reason) => refusals.push(reason));
      let running = await a.acquire(req(['a']));
      const queued = Array.from({ length: 5 }, () => a.acquire(req(['a'])));
      // For a second, each call that ends makes room for the next queued one and the caller sends another.
      for (let i = 0; i < 10; i++) {
        clock.ms += 100;
        running.release(true);
        running = await queued.shift()!;
        queued.push(a.acquire(req(['a'])));
        assert.equal(a.queued, 5);
      }
      assert.deepEqual(refusals, [], 'a wait of 5 generations stays admitted: the queue does not grow');
      running.release();
      for (const call of queued) (await call).release();
    });

    it('a queued call that waited the maximum queue wait leaves with RESOURCE_EXHAUSTED and frees its place', async () => {
      const a = admission(1, 100, { maxQueueWaitMs: 20 });
      const held = await a.acquire(req(['a']));
      const refusals: string[] = [];
      a.on('refused', (_model, reason) => refusals.push(reason));
      await assert.rejects(a.acquire(req(['a'])), (err: unknown) => err instanceof AdmissionRefusal && err.reason === 'waited_max');
      assert.equal(a.queued, 0);
      assert.deepEqual(refusals, ['waited_max']);
      held.release();
      assert.equal(a.inFlight('a'), 0);
    });
  });
});