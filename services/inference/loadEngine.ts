import { Engine } from '../engine/Engine';
import type { EngineLike, LoadOptions } from '../engine/types';

/** The one place the inference service meets the real engine; everything else programs against EngineLike. */
export function loadEngine(options: LoadOptions): Promise<EngineLike> {
  return Engine.load(options);
}
