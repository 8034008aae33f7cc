/**
 * Child process of the load-path fuzzer (loadPathFuzz.ts): for each file path it is sent over IPC, runs the three
 * real load paths - the addon's readGgufLayout, the expert-store's loadExpertIndex and the engine's Engine.load
 * followed by a two-token generation - and answers how each ended. Before each stage it says which one starts
 * (with the tensor types the layout found), so that when the process dies the parent knows where. A crash of
 * this process is the finding the fuzzer looks for: nothing here catches more than each stage's promise.
 *
 * By hand, on a reproducer: `node dist/harness/loadPathWorker.js FILE` prints the same messages as lines.
 */
import { InvalidArgumentError, ModelLoadError } from '../services/common/errors';
import { Engine } from '../services/engine/Engine';
import { loadAddon } from '../services/engine/loadAddon';
import { loadExpertIndex } from '../services/expert-store/ExpertIndex';

export type StageName = 'layout' | 'index' | 'engine';

export interface StageOutcome {
  stage: StageName;
  /** loaded; rejected with a typed error naming the file; unclear: any other error (a finding). */
  result: 'loaded' | 'rejected' | 'unclear';
  error?: string;
}

export interface WorkerRequest {
  id: number;
  path: string;
}

/** Sent as each stage starts. */
export interface WorkerProgress {
  id: number;
  starting: StageName;
  /** ggml type names of the file's tensors (known once the layout stage loaded it). */
  tensorTypes: string[];
}

/** Sent when every stage has ended. */
export interface WorkerReply {
  id: number;
  stages: StageOutcome[];
}

async function stage(name: StageName, path: string, run: () => Promise<void>): Promise<StageOutcome> {
  try {
    await run();
    return { stage: name, result: 'loaded' };
  } catch (err) {
    const e = err as Error;
    // The addon rejects with a plain Error whose message names the file; the TypeScript layers wrap it.
    const clear = e instanceof ModelLoadError || e instanceof InvalidArgumentError || (name === 'layout' && e instanceof Error && e.message.includes(path));
    return { stage: name, result: clear ? 'rejected' : 'unclear', error: `${e?.name}: ${e?.message}`.slice(0, 500) };
  }
}

async function loadAll(request: WorkerRequest, send: (m: WorkerProgress | WorkerReply) => void): Promise<void> {
  const { id, path } = request;
  const stages: StageOutcome[] = [];
  let tensorTypes: string[] = [];
  const run = async (name: StageName, body: () => Promise<void>) => {
    send({ id, starting: name, tensorTypes });
    stages.push(await stage(name, path, body));
  };
  await run('layout', async () => {
    const layout = await loadAddon().readGgufLayout(path);
    tensorTypes = [...new Set(layout.tensors.map((t) => t.type))];
  });
  await run('index', async () => void (await loadExpertIndex(path)));
  await run('engine', async () => {
    const engine = await Engine.load({ path, contextSize: 64, parallel: 1, threads: 1, batchSize: 32, warmup: false });
    try {
      for await (const event of engine.generate({ prompt: 'fuzz', maxTokens: 2, sampling: { seed: 1 } })) void event;
    } finally {
      await engine.close();
    }
  });
  send({ id, stages });
}

if (require.main === module && process.argv[2]) {
  void loadAll({ id: 0, path: process.argv[2] }, (m) => console.log(JSON.stringify(m)));
} else if (require.main === module) {
  process.on('message', (request: WorkerRequest) => void loadAll(request, (m) => process.send!(m)));
  process.send!({ id: -1, stages: [] } satisfies WorkerReply);
}
