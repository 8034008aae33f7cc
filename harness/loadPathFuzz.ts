import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GgufMutator } from './GgufMutator';
import type { StageName, WorkerProgress, WorkerReply, WorkerRequest } from './loadPathWorker';

export interface LoadPathFuzzOptions {
  /** A well-formed GGUF to mutate. */
  seedFile: string;
  mutations: number;
  /** PRNG seed: the same seed and index give the same mutation. */
  seed: number;
  /** Where each mutated file is written (one file, rewritten). */
  workDir: string;
  /** Where reproducers of findings are kept (default: workDir/findings). */
  findingsDir?: string;
  /** A load taking longer is a hang (default 30 s). */
  timeoutMs?: number;
  /** Data segment limit of the worker (ulimit -d): a file that makes the loader allocate more crashes it. Default 2048. */
  memoryLimitMb?: number;
  onProgress?: (done: number, report: LoadPathFuzzReport) => void;
}

export interface LoadPathFinding {
  index: number;
  label: string;
  kind: 'crash' | 'hang' | 'unclear';
  /** The stage that failed (for a crash or hang: the last one that started). */
  stage?: StageName;
  /** ggml types of the file's tensors, when its layout could be read. */
  tensorTypes?: string[];
  detail: string;
  /** The mutated file, kept. */
  reproducer: string;
}

export interface LoadPathFuzzReport {
  mutations: number;
  seed: number;
  ms: number;
  /** Per stage: files loaded, rejected with a clear error, and ended with an unclear error. */
  stages: Record<StageName, { loaded: number; rejected: number; unclear: number }>;
  /** The most frequent rejection reasons per stage (paths and numbers blanked). */
  reasons: Record<StageName, Record<string, number>>;
  findings: LoadPathFinding[];
  workerStarts: number;
}

const WORKER = join(__dirname, 'loadPathWorker.js');

/** The worker process, under a data-segment limit, answering one file at a time. */
class Worker {
  private readonly child: ChildProcess;
  private stderr = '';
  private readonly ready: Promise<void>;
  private exit?: string;
  private readonly exited: Promise<string>;

  constructor(memoryLimitMb: number) {
    this.child = spawn('/bin/sh', ['-c', `ulimit -d ${memoryLimitMb * 1024} && exec "$0" "$@"`, process.execPath, WORKER], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { ...process.env, MOEFLASH_HINTS: '0' },
    });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr = (this.stderr + chunk.toString()).slice(-4000)));
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve((this.exit = signal ?? `exit ${code}`))));
    this.ready = new Promise((resolve, reject) => {
      this.child.once('message', () => resolve());
      void this.exited.then((how) => reject(new Error(`load-path worker died while starting (${how}): ${this.stderr}`)));
    });
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  /** The stages' outcomes, or how the process ended (crash, or killed after timeoutMs) and in which stage. */
  async load(request: WorkerRequest, timeoutMs: number): Promise<WorkerReply | { ended: string; stderr: string; last?: WorkerProgress }> {
    await this.ready;
    this.stderr = '';
    let timer: NodeJS.Timeout | undefined;
    let last: WorkerProgress | undefined;
    const reply = new Promise<WorkerReply>((resolve) => {
      const onMessage = (m: WorkerReply | WorkerProgress) => {
        if (m.id !== request.id) return;
        if ('starting' in m) {
          last = m;
          return;
        }
        this.child.off('message', onMessage);
        resolve(m);
      };
      this.child.on('message', onMessage);
    });
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    this.child.send(request);
    try {
      const first = await Promise.race([reply, this.exited, timeout]);
      if (typeof first === 'object') return first;
      if (first === 'timeout') {
        this.child.kill('SIGKILL');
        await this.exited;
        return { ended: `hang (killed after ${timeoutMs} ms)`, stderr: this.stderr, last };
      }
      return { ended: first, stderr: this.stderr, last };
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    if (!this.alive) return;
    this.child.disconnect();
    this.child.kill('SIGTERM');
    await this.exited;
  }
}

/** A rejection's reason: its first line without the wrapper's prefix, with names, paths and numbers blanked. */
const normalize = (message: string) =>
  message
    .split('\n')[0]
    .replace(/^\w*Error: (cannot load model '[^']*': )?/, '')
    .replace(/'[^']*'/g, "'…'")
    .replace(/\d+/g, 'N')
    .slice(0, 140);

/**
 * Mutates `seedFile` `mutations` times and loads every mutation through the real load paths in a child process:
 * each must load or be rejected with a clear error; a worker that dies (signal, abort, out of memory) or hangs is
 * a finding, its input kept as a reproducer, and a fresh worker takes over.
 */
export async function fuzzLoadPath(options: LoadPathFuzzOptions): Promise<LoadPathFuzzReport> {
  const started = Date.now();
  const findingsDir = options.findingsDir ?? join(options.workDir, 'findings');
  const file = join(options.workDir, 'mutation.gguf');
  const mutate = GgufMutator(readFileSync(options.seedFile), options.seed);
  const stageNames: StageName[] = ['layout', 'index', 'engine'];
  const report: LoadPathFuzzReport = {
    mutations: 0,
    seed: options.seed,
    ms: 0,
    stages: Object.fromEntries(stageNames.map((s) => [s, { loaded: 0, rejected: 0, unclear: 0 }])) as LoadPathFuzzReport['stages'],
    reasons: Object.fromEntries(stageNames.map((s) => [s, {}])) as LoadPathFuzzReport['reasons'],
    findings: [],
    workerStarts: 0,
  };
  const keep = (index: number, bytes: Buffer) => {
    mkdirSync(findingsDir, { recursive: true });
    const path = join(findingsDir, `seed${options.seed}-${index}.gguf`);
    writeFileSync(path, bytes);
    return path;
  };
  let worker: Worker | undefined;
  try {
    for (let index = 0; index < options.mutations; index++) {
      const { bytes, label } = mutate(index);
      writeFileSync(file, bytes);
      if (!worker?.alive) {
        worker = new Worker(options.memoryLimitMb ?? 2048);
        report.workerStarts++;
      }
      const outcome = await worker.load({ id: index, path: file }, options.timeoutMs ?? 30_000);
      report.mutations++;
      if ('ended' in outcome) {
        report.findings.push({
          index,
          label,
          kind: outcome.ended.startsWith('hang') ? 'hang' : 'crash',
          stage: outcome.last?.starting,
          tensorTypes: outcome.last?.tensorTypes,
          detail: `${outcome.ended}: ${outcome.stderr.trim().split('\n').slice(-6).join(' | ')}`,
          reproducer: keep(index, bytes),
        });
      } else {
        for (const s of outcome.stages) {
          report.stages[s.stage][s.result]++;
          if (s.result === 'rejected' && s.error) {
            const reason = normalize(s.error);
            report.reasons[s.stage][reason] = (report.reasons[s.stage][reason] ?? 0) + 1;
          }
          if (s.result === 'unclear') report.findings.push({ index, label, kind: 'unclear', stage: s.stage, detail: s.error ?? '', reproducer: keep(index, bytes) });
        }
      }
      options.onProgress?.(index + 1, report);
    }
  } finally {
    await worker?.close();
  }
  for (const s of stageNames) {
    report.reasons[s] = Object.fromEntries(Object.entries(report.reasons[s]).sort((a, b) => b[1] - a[1]).slice(0, 12));
  }
  report.ms = Date.now() - started;
  return report;
}
