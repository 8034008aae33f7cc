/** Mocha root hooks: fail fast with a clear message when the native build is missing. */
import { existsSync } from 'node:fs';

import { addonPath } from '../../services/engine/loadAddon';

export const mochaHooks = {
  beforeAll(): void {
    const addon = addonPath();
    if (!existsSync(addon)) throw new Error(`${addon} is missing: run npm install (or npm run build:native) first`);
  },
};
