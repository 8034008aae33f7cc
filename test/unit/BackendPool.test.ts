import assert from 'node:assert/strict';
import { BackendPool, type ModelLoadInfo } from '../../services/router/BackendPool';

function load(model: string, info: Partial<ModelLoadInfo> = {}): Map<string, ModelLoadInfo> {
  return new Map([[model, { state: 'ready', activeSequences: 0, queuedRequests: 0, capacity: 4, ...info }]]);
}

const noneInFlight = () => 0;

describe('BackendPool', () => {
  it('routes only to healthy backends on which the model is ready', () => {
    const pool = new BackendPool(['a', 'b', 'c']);
    pool.setLoad('a', load('m'));
    pool.setLoad('b', load('m', { state: 'loading' }));
    pool.setLoad('c', load('other'));
    for (const b of ['a', 'b', 'c']) pool.setHealth(b, true);
    assert.deepEqual(pool.candidates('m'), ['a']);
    pool.setHealth('a', false);
    assert.deepEqual(pool.candidates('m'), []);
  });

  it('knows models of unhealthy backends (UNAVAILABLE rather than NOT_FOUND)', () => {
    const pool = new BackendPool(['a']);
    pool.setLoad('a', load('m'));
    assert.equal(pool.knowsModel('m'), true);
    assert.equal(pool.knowsModel('x'), false);
    assert.equal(pool.anyHealthy(), false);
    assert.deepEqual(pool.readyModels(), []);
    pool.setHealth('a', true);
    assert.deepEqual(pool.readyModels(), ['m']);
  });

  it("reports a backend's capacity: its ready models' parallel sequences, at least 1 for a ready model", () => {
    const pool = new BackendPool(['a', 'b']);
    assert.equal(pool.capacity('a'), 0);
    pool.setLoad(
      'a',
      new Map([
        ['m', { state: 'ready', activeSequences: 0, queuedRequests: 0, capacity: 4 }],
        ['n', { state: 'ready', activeSequences: 0, queuedRequests: 0, capacity: 2 }],
        ['loading', { state: 'loading', activeSequences: 0, queuedRequests: 0, capacity: 0 }],
        ['failed', { state: 'failed', activeSequences: 0, queuedRequests: 0, capacity: 8 }],
      ]),
    );
    assert.equal(pool.capacity('a'), 6);
    // A ready model that reports no capacity is sent one call at a time rather than flooded.
    pool.setLoad('b', load('m', { capacity: 0 }));
    assert.equal(pool.capacity('b'), 1);
  });

  it('picks the least loaded backend relative to its capacity', () => {
    const pool = new BackendPool(['a', 'b']);
    pool.setLoad('a', load('m', { activeSequences: 4, queuedRequests: 2, capacity: 4 }));
    pool.setLoad('b', load('m', { activeSequences: 6, capacity: 8 }));
    for (let i = 0; i < 4; i++) assert.equal(pool.pick('m', ['a', 'b'], noneInFlight), 'b');
  });

  it("counts the router's own calls in flight when the backend's report is stale", () => {
    const pool = new BackendPool(['a', 'b']);
    pool.setLoad('a', load('m'));
    pool.setLoad('b', load('m'));
    const inFlight = (b: string) => (b === 'a' ? 3 : 1);
    for (let i = 0; i < 4; i++) assert.equal(pool.pick('m', ['a', 'b'], inFlight), 'b');
  });

  it('shares work round-robin between equally loaded backends', () => {
    const pool = new BackendPool(['a', 'b', 'c']);
    for (const b of ['a', 'b', 'c']) pool.setLoad(b, load('m'));
    const picks = Array.from({ length: 6 }, () => pool.pick('m', ['a', 'b', 'c'], noneInFlight));
    assert.deepEqual(picks, ['a', 'b', 'c', 'a', 'b', 'c']);
  });

  it('markUnavailable takes a backend out and asks for a health re-check', () => {
    const pool = new BackendPool(['a']);
    pool.setLoad('a', load('m'));
    pool.setHealth('a', true);
    const suspects: string[] = [];
    let changes = 0;
    pool.on('suspect', (b) => suspects.push(b));
    pool.on('change', () => changes++);
    pool.markUnavailable('a');
    assert.deepEqual(pool.candidates('m'), []);
    assert.deepEqual(suspects, ['a']);
    assert.equal(changes, 1);
    pool.markUnavailable('a'); // already out: no second re-check
    assert.deepEqual(suspects, ['a']);
  });
});
