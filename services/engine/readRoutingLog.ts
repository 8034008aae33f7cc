import { readFileSync } from 'node:fs';

import { InvalidArgumentError } from '../common/errors';

/** A routing trace for the expert cache's replay: [tokens][layers][used] expert ids, one sequence's tokens. */
export interface RoutingTrace {
  ids: Int32Array;
  layers: number;
  used: number;
  tokens: number;
}

/**
 * Reads a routing log (JSON lines {seq, token, layer, experts}, as `routingLog` / MOEFLASH_ROUTING_LOG write them)
 * for a model of `shape`: the first sequence in the file, every logged layer with the same tokens. Errors name the
 * field, the file and the line, and say how the file differs from the model.
 */
export function readRoutingLog(path: string, shape: { nLayer: number; nExpert: number; nExpertUsed: number }, field = 'expertCache.replayRouting'): RoutingTrace {
  const fail = (why: string) => InvalidArgumentError.field(field, `routing file '${path}': ${why}`);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw fail((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message);
  }
  let seq: number | undefined;
  const rows = new Map<number, Map<number, number[]>>(); // layer -> token -> experts
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let r: { seq?: unknown; token?: unknown; layer?: unknown; experts?: unknown };
    try {
      r = JSON.parse(line);
    } catch {
      throw fail(`line ${i + 1} is not JSON`);
    }
    const { token, layer, experts } = r;
    if (!Number.isInteger(token) || (token as number) < 0 || !Number.isInteger(layer) || !Array.isArray(experts)) {
      throw fail(`line ${i + 1} needs integer token and layer and an experts array`);
    }
    if ((layer as number) >= shape.nLayer) throw fail(`line ${i + 1}: layer ${layer} but the model has ${shape.nLayer} layers`);
    if (experts.length !== shape.nExpertUsed) {
      throw fail(`line ${i + 1}: ${experts.length} experts per token but the model routes each token to ${shape.nExpertUsed}`);
    }
    for (const e of experts) {
      if (!Number.isInteger(e) || e < 0 || e >= shape.nExpert) throw fail(`line ${i + 1}: expert ${e} is not in [0, ${shape.nExpert})`);
    }
    seq ??= r.seq as number;
    if (r.seq !== seq) return; // one sequence's traffic: its tokens follow each other
    let byToken = rows.get(layer as number);
    if (!byToken) rows.set(layer as number, (byToken = new Map()));
    byToken.set(token as number, experts as number[]);
  });
  if (rows.size === 0) throw fail('no routing lines');
  // the last layer has fewer prompt tokens (llama.cpp computes only the output rows there): each layer replays its
  // own tokens in order, as many as every layer has
  const tokens = Math.min(...[...rows.values()].map((m) => m.size));
  const ids = new Int32Array(tokens * shape.nLayer * shape.nExpertUsed);
  for (const [layer, byToken] of rows) {
    for (let t = 0; t < tokens; t++) {
      const experts = byToken.get(t);
      if (!experts) throw fail(`layer ${layer} has no token ${t}`);
      ids.set(experts, (t * shape.nLayer + layer) * shape.nExpertUsed);
    }
  }
  return { ids, layers: shape.nLayer, used: shape.nExpertUsed, tokens };
}
