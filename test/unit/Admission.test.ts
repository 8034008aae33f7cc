import assert from 'node:assert/strict';
import { ResourceExhaustedError, UnavailableError } from '../../services/common/errors';
import { Admission, type AdmissionTicket } from '../../services/router/Admission';
import { BackendPool, type ModelLoadInfo } from '../../services/router/BackendPool';

function admission(limit: number, maxQueued: number): Admission {
  return new Admission({ limit: () => limit, maxQueued, retryAfterMs: 750 });
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
    for (let i = 0; i < 4; i++) tickets.push(await a.acquire({ candidates: () => ['a', 'b'], pick: first }));
    assert.deepEqual(tickets.map((t) => t.backend), ['a', 'a', 'b', 'b']);
    assert.equal(a.inFlight('a'), 2);
    assert.equal(a.inFlight('b'), 2);
  });

  it('refuses at once with RESOURCE_EXHAUSTED and the retry delay when slots and queue are full', async () => {
    const a = admission(1, 1);
    await a.acquire({ candidates: () => ['a'], pick: first });
    const queued = a.acquire({ candidates: () => ['a'], pick: first });
    assert.equal(a.queued, 1);
    await assert.rejects(a.acquire({ candidates: () => ['a'], pick: first }), (err: unknown) => {
      assert.ok(err instanceof ResourceExhaustedError);
      assert.equal(err.retryAfterMs, 750);
      return true;
    });
    queued.catch(() => undefined);
  });

  it('with the queue full, a call beyond the limit is refused at once, not when a slot frees', async () => {
    const a = admission(1, 1);
    const held = await a.acquire({ candidates: () => ['a'], pick: first });
    const queued = a.acquire({ candidates: () => ['a'], pick: first });
    const refused = a.acquire({ candidates: () => ['a'], pick: first });
    assert.equal(await settledAtOnce(refused), true);
    await assert.rejects(refused, ResourceExhaustedError);
    assert.equal(await settledAtOnce(queued), false, 'the queued call still waits for the held slot');
    assert.equal(a.queued, 1);
    held.release();
    (await queued).release();
    assert.equal(a.inFlight('a'), 0);
  });

  it('with no queue (the default), a call beyond the limit is refused at once', async () => {
    const a = admission(2, 0);
    await a.acquire({ candidates: () => ['a'], pick: first });
    await a.acquire({ candidates: () => ['a'], pick: first });
    const refused = a.acquire({ candidates: () => ['a'], pick: first });
    assert.equal(await settledAtOnce(refused), true);
    await assert.rejects(refused, /all 2 call slots of the backends are taken and 0 calls are queued/);
    assert.equal(a.queued, 0);
  });

  it('the limit follows the capacity each backend reports, as it changes', async () => {
    // Wired as the router wires it when MOEFLASH_ROUTER_MAX_IN_FLIGHT is not set.
    const pool = new BackendPool(['a', 'b']);
    pool.setLoad('a', ready(2));
    pool.setLoad('b', ready(1));
    const a = new Admission({ limit: (b) => pool.capacity(b), maxQueued: 1, retryAfterMs: 750 });
    pool.on('change', () => a.poke());
    const both = { candidates: () => ['a', 'b'], pick: first };
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
    const onA = a.acquire({ candidates: () => ['a'], pick: first });
    assert.equal(await settledAtOnce(onA), false);
    tickets[1].release();
    assert.equal((await onA).backend, 'a');
    assert.equal(a.inFlight('a'), 1);
  });

  it('hands a released slot to the first queued call (FIFO)', async () => {
    const a = admission(1, 2);
    const held = await a.acquire({ candidates: () => ['a'], pick: first });
    const order: string[] = [];
    const one = a.acquire({ candidates: () => ['a'], pick: first }).then((t) => (order.push('one'), t));
    const two = a.acquire({ candidates: () => ['a'], pick: first }).then((t) => (order.push('two'), t));
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
    const onA = await a.acquire({ candidates: () => ['a'], pick: first });
    const onB = await a.acquire({ candidates: () => ['b'], pick: first });
    const waiting = a.acquire({ candidates: () => ['a', 'b'], pick: first });
    onB.release();
    assert.equal((await waiting).backend, 'b');
    onA.release();
  });

  it('a cancelled queued call leaves the queue and rejects with the abort reason', async () => {
    const a = admission(1, 1);
    const held = await a.acquire({ candidates: () => ['a'], pick: first });
    const controller = new AbortController();
    const waiting = a.acquire({ candidates: () => ['a'], pick: first, signal: controller.signal });
    controller.abort();
    await assert.rejects(waiting, { name: 'AbortError' });
    assert.equal(a.queued, 0);
    held.release();
    assert.equal(a.inFlight('a'), 0);
  });

  it('fails fast with UNAVAILABLE when no backend can serve, and fails queued calls whose backends all went away', async () => {
    const a = admission(1, 1);
    await assert.rejects(a.acquire({ candidates: () => [], pick: first }), UnavailableError);
    let healthy = ['a'];
    await a.acquire({ candidates: () => healthy, pick: first });
    const waiting = a.acquire({ candidates: () => healthy, pick: first });
    healthy = [];
    a.poke();
    await assert.rejects(waiting, UnavailableError);
  });

  it('lets the pick function choose among free backends', async () => {
    const a = admission(1, 0);
    const t = await a.acquire({ candidates: () => ['a', 'b', 'c'], pick: (free) => free[free.length - 1] });
    assert.equal(t.backend, 'c');
  });
});
