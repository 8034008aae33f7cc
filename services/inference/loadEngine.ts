import { Engine } from '../engine/Engine';
import type { EngineLike, LoadOptions } from '../engine/types';
import { hintChannelName } from '../common/hintChannelName';

/**
 * The one place the inference service meets the real engine; everything else programs against EngineLike.
 * Unless the model's options say otherwise, the engine publishes its routing to the hint channel the colocated
 * expert-store reads (both derive the channel's name from the model path).
 */
export function loadEngine(options: LoadOptions): Promise<EngineLike> {
  const hintChannel = options.hintChannel ?? (process.env.MOEFLASH_HINTS === '0' ? undefined : hintChannelName(options.path));
  return Engine.load({ ...options, hintChannel });
}
