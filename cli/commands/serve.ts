/**
 * `moeflash serve` (what `npm start` runs): expert-store, inference and router as three supervised processes on
 * the default model. Prints the endpoints once each listens; a crashed service is restarted (with backoff);
 * Ctrl-C / SIGTERM drains all three and exits once every child has exited — no orphans.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

import { makeModel } from '../../services/engine/makeModel';
import { repoRoot } from '../../services/engine/loadAddon';

const SERVICES = ['expert-store', 'inference', 'router'] as const;
type ServiceName = (typeof SERVICES)[number];
const MAX_RESTARTS_PER_MINUTE = 5;

interface Supervised {
  name: ServiceName;
  child?: ChildProcess;
  restarts: number[];
}

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { model: { type: 'string' } }, strict: true });
  const root = repoRoot();
  const env = { ...process.env };
  if (!env.MOEFLASH_MODELS) {
    const model = values.model ?? env.MOEFLASH_MODEL ?? join(root, 'models', 'tiny.gguf');
    if (!existsSync(model) && !values.model && !env.MOEFLASH_MODEL) {
      mkdirSync(dirname(model), { recursive: true });
      process.stderr.write(`serve: generating the default model ${model}\n`);
      await makeModel(model, { preset: 'tiny', seed: 1 });
    }
    env.MOEFLASH_MODEL = model;
  }

  let stopping = false;
  const services: Supervised[] = SERVICES.map((name) => ({ name, restarts: [] }));
  let resolveAllExited: () => void = () => {};
  const allExited = new Promise<void>((r) => (resolveAllExited = r));
  let failed = false;

  const start = (s: Supervised, previousExit?: string) => {
    // Own process group, so a terminal's Ctrl-C reaches only this supervisor, which then drains the children in
    // order; the IPC channel closes if the supervisor dies, and each child then stops by itself (no orphans).
    const child = spawn(process.execPath, [join(root, 'dist', 'services', s.name, 'main.js')], {
      // how the previous process ended: inference names it when it refuses a model that crashed it
      env: previousExit ? { ...env, MOEFLASH_PREVIOUS_EXIT: previousExit } : env,
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
      detached: true,
    });
    s.child = child;
    // children log JSON lines on stderr: pass them through and announce the endpoint when one listens
    createInterface({ input: child.stderr! }).on('line', (line) => {
      process.stderr.write(line + '\n');
      if (line.includes('"listening"')) {
        const address = /"address":"([^"]+)"/.exec(line)?.[1];
        if (address) process.stdout.write(`moeflash ${s.name.padEnd(12)} grpc://${address}\n`);
      }
    });
    child.on('exit', (code, signal) => {
      s.child = undefined;
      if (stopping) {
        if (services.every((x) => !x.child)) resolveAllExited();
        return;
      }
      const now = Date.now();
      s.restarts = s.restarts.filter((t) => now - t < 60_000);
      if (s.restarts.length >= MAX_RESTARTS_PER_MINUTE) {
        process.stderr.write(`serve: ${s.name} exited (${signal ?? code}) ${MAX_RESTARTS_PER_MINUTE} times within a minute; stopping\n`);
        failed = true;
        stopAll('SIGTERM');
        return;
      }
      s.restarts.push(now);
      const delay = 250 * 2 ** (s.restarts.length - 1);
      process.stderr.write(`serve: ${s.name} exited (${signal ?? code}); restarting in ${delay} ms\n`);
      setTimeout(() => !stopping && start(s, signal ?? `exit code ${code}`), delay);
    });
  };

  const stopAll = (signal: NodeJS.Signals) => {
    if (stopping) {
      // a second Ctrl-C: no more draining
      for (const s of services) s.child?.kill('SIGKILL');
      return;
    }
    stopping = true;
    process.stderr.write(`serve: ${signal}: stopping router, inference and expert-store\n`);
    if (services.every((s) => !s.child)) resolveAllExited();
    for (const s of [...services].reverse()) s.child?.kill('SIGTERM');
  };
  process.on('SIGINT', () => stopAll('SIGINT'));
  process.on('SIGTERM', () => stopAll('SIGTERM'));
  // if this process dies without a signal, take the children along
  process.on('exit', () => services.forEach((s) => s.child?.kill('SIGKILL')));

  for (const s of services) start(s);
  await allExited;
  return failed ? 1 : 0;
}
