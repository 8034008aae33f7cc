import assert from 'node:assert/strict';
import pino from 'pino';

import { readyAfterWarm } from '../../services/expert-store/readyAfterWarm';

const log = pino({ level: 'silent' });

describe('expert-store readiness during the startup warm', () => {
  it('is NOT_SERVING from the start until the warm is done, then SERVING once', () => {
    const states: boolean[] = [];
    const gate = readyAfterWarm({ health: { setReady: (r) => states.push(r) } }, 60_000, log);
    assert.deepEqual(states, [false]);
    gate.ready('startup warm done');
    gate.ready('startup warm done');
    assert.deepEqual(states, [false, true]);
  });

  it('turns SERVING when the budget is spent, even while the warm goes on', async () => {
    const states: boolean[] = [];
    let serving!: () => void;
    const turned = new Promise<void>((resolve) => (serving = resolve));
    const gate = readyAfterWarm({ health: { setReady: (r) => (states.push(r), r && serving()) } }, 20, log);
    await turned;
    gate.ready('startup warm done'); // the warm ending later changes nothing
    assert.deepEqual(states, [false, true]);
  });
});
