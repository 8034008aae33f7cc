/**
 * Long run of the load-path fuzzer: `node dist/bench/fuzzLoadPath.js [MUTATIONS=10000] [SEED=1] [TIMEOUT_MS=5000]`. Mutates the
 * generated micro MoE model and loads every mutation through readGgufLayout, loadExpertIndex and Engine.load (+ a
 * two-token generation) in a child process; prints the outcome per stage, the top rejection reasons and every
 * finding (crash, hang, unclear error, with its reproducer under build/fuzz/load-path/findings/), and writes
 * bench/results/fuzz-load-path.json. Exits 1 when there are findings other than the known ones
 * (test/hardening/knownLoadPathFindings.ts). `node dist/bench/fuzzLoadPath.js repro SEED INDEX` rewrites one mutation.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../services/engine/loadAddon';
import { GgufMutator } from '../harness/GgufMutator';
import { knownFindingOf } from '../harness/knownLoadPathFindings';
import { fuzzLoadPath } from '../harness/loadPathFuzz';
import { writeMicroModel } from '../harness/writeMicroModel';

/** `repro SEED INDEX`: writes that one mutation of the micro model and says how to load it stage by stage. */
async function repro(seed: number, index: number): Promise<void> {
  const dir = join(repoRoot(), 'build', 'fuzz', 'load-path');
  mkdirSync(dir, { recursive: true });
  const { bytes, label } = GgufMutator(readFileSync(await writeMicroModel(join(dir, 'micro-seed.gguf'))), seed)(index);
  const file = join(dir, `repro-seed${seed}-${index}.gguf`);
  writeFileSync(file, bytes);
  console.log(`${file}: ${label}\nload it stage by stage: node dist/harness/loadPathWorker.js ${file}`);
}

async function main(): Promise<void> {
  if (process.argv[2] === 'repro') return repro(Number(process.argv[3]), Number(process.argv[4]));
  const mutations = Number(process.argv[2] ?? 10_000);
  const seed = Number(process.argv[3] ?? 1);
  // Loads of the micro model take milliseconds; what is still running after this is a hang.
  const timeoutMs = Number(process.argv[4] ?? 5_000);
  const workDir = join(repoRoot(), 'build', 'fuzz', 'load-path');
  mkdirSync(workDir, { recursive: true });
  const seedFile = await writeMicroModel(join(workDir, 'micro-seed.gguf'));
  let last = Date.now();
  const report = await fuzzLoadPath({
    seedFile,
    mutations,
    seed,
    workDir,
    timeoutMs,
    onProgress: (done, r) => {
      if (Date.now() - last < 10_000 && done < mutations) return;
      last = Date.now();
      process.stderr.write(`${done}/${mutations} mutations, ${r.findings.length} findings, ${r.workerStarts} worker starts\n`);
    },
  });
  const rate = report.mutations / (report.ms / 1000);
  console.log(`load-path fuzz: ${report.mutations} mutations of ${seedFile} (seed ${seed}) in ${(report.ms / 1000).toFixed(1)} s (${rate.toFixed(0)}/s)`);
  console.log('stage   loaded  rejected  unclear');
  for (const [stage, s] of Object.entries(report.stages)) console.log(`${stage.padEnd(7)} ${String(s.loaded).padStart(6)} ${String(s.rejected).padStart(9)} ${String(s.unclear).padStart(8)}`);
  for (const [stage, reasons] of Object.entries(report.reasons)) {
    console.log(`\ntop ${stage} rejections:`);
    for (const [reason, n] of Object.entries(reasons)) console.log(`  ${String(n).padStart(6)}  ${reason}`);
  }
  const known = new Map<string, number>();
  const unknown = report.findings.filter((f) => {
    const k = knownFindingOf(f);
    if (k) known.set(k.id, (known.get(k.id) ?? 0) + 1);
    return !k;
  });
  console.log(`\nfindings: ${report.findings.length} (worker started ${report.workerStarts} times); known, not fixed yet:`);
  for (const [id, n] of known) console.log(`  ${String(n).padStart(6)}  ${id}`);
  console.log(`new findings: ${unknown.length}`);
  for (const f of unknown.slice(0, 50)) console.log(`  #${f.index} ${f.kind}${f.stage ? ` in ${f.stage}` : ''}: ${f.label}\n      ${f.detail.slice(0, 300)}\n      ${f.reproducer}`);
  const out = join(repoRoot(), 'bench', 'results');
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, 'fuzz-load-path.json'),
    JSON.stringify({ date: new Date().toISOString(), node: process.version, ...report, known: Object.fromEntries(known), newFindings: unknown.length }, null, 2),
  );
  process.exitCode = unknown.length > 0 ? 1 : 0;
}

void main();
