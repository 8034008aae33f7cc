// bench:engine's peer: node-llama-cpp's prebuilt CPU binary on the same model, same threads.
// Prints one JSON line {pp, tg} (tokens/s; median of reps) or {error}. Run by bench/benchEngine.ts in a child
// process (node-llama-cpp is ESM-only and lives in build/bench-peers, see scripts/install-bench-peers.sh).
// usage: node nodeLlamaCpp.mjs PEERS_DIR MODEL THREADS PP TG REPS
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [peersDir, modelPath, threadsArg, ppArg, tgArg, repsArg] = process.argv.slice(2);
const [threads, PP, TG, reps] = [threadsArg, ppArg, tgArg, repsArg].map(Number);
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

try {
  const entry = createRequire(join(peersDir, 'package.json')).resolve('node-llama-cpp');
  const { getLlama } = await import(pathToFileURL(entry).href);
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
  const model = await llama.loadModel({ modelPath });
  const context = await model.createContext({ contextSize: PP + TG + 16, threads, batchSize: PP, sequences: 1 });
  const sequence = context.getSequence();
  const nVocab = model.tokens.bos === undefined ? 1000 : 1000;
  const pp = [];
  const tg = [];
  for (let r = 0; r < reps + 1; r++) {
    const prompt = Array.from({ length: PP }, (_, i) => 3 + ((i * 7919 + r * 104729) % (nVocab - 3)));
    await sequence.clearHistory();
    let t0 = performance.now();
    await sequence.evaluateWithoutGeneratingNewTokens(prompt);
    const ppTime = performance.now() - t0;
    await sequence.clearHistory();
    let n = 0;
    let first = 0;
    for await (const _ of sequence.evaluate([1], { temperature: 0 })) {
      if (n === 0) first = performance.now();
      if (++n === TG) break;
    }
    const tgTime = performance.now() - first;
    if (r === 0) continue;
    pp.push((PP * 1000) / ppTime);
    tg.push(((TG - 1) * 1000) / tgTime);
  }
  console.log(JSON.stringify({ pp: median(pp), tg: median(tg), binary: llama.buildType ?? 'prebuilt' }));
  await context.dispose();
  await model.dispose();
  await llama.dispose();
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.message ?? e).split('\n')[0] }));
}
