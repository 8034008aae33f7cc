import type { Model } from '../../gen/moeflash/v1/generation';
import type { ModelInfo } from '../engine/types';

/** The public description of a loaded model (no filesystem path: that is the server's business). */
export function toModelMessage(name: string, info: ModelInfo): Model {
  return {
    name,
    architecture: info.architecture,
    description: info.description,
    nLayer: info.nLayer,
    nEmbd: info.nEmbd,
    nVocab: info.nVocab,
    nCtxTrain: info.nCtxTrain,
    nExpert: info.nExpert,
    nExpertUsed: info.nExpertUsed,
    bytesPerExpert: info.bytesPerExpert,
    totalBytes: info.totalBytes,
    nParams: info.nParams,
    contextSize: info.contextSize,
    parallel: info.parallel,
  };
}
