import assert from 'node:assert/strict';
import { ResourceExhaustedError, UnavailableError } from '../../services/common/errors';
import { Admission, type AdmissionTicket } from '../../services/router/Admission';

function admission(maxInFlightPerBackend: number, maxQueued: number): Admission {
  return new Admission({ maxInFlightPerBackend, maxQueued, retryAfterMs: 750 });
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
