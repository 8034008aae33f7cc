import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { freePort } from '../helpers/freePort';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'moeflash.js');

export type ServiceName = 'router' | 'inference' | 'expert-store';
/** A JSON log line of a supervised service (pino: name, pid, msg, ...), or a line of serve's own as { msg }. */
export type ServeLine = Record<string, unknown>;

export interface ServeProcess {
  child: ChildProcess;
  /** host:port of each service's gRPC endpoint. */
  addresses: Record<ServiceName, string>;
  /** Every line written to stderr so far, services' and serve's own. */
  lines: ServeLine[];
  /** Resolves with the first line at index `from` or later that matches. */
  waitForLine(match: (line: ServeLine) => boolean, from?: number): Promise<ServeLine>;
  /** The pid of `service`'s process that logged 'listening' at index `from` or later. */
  listening(service: ServiceName, from?: number): Promise<number>;
  /** The exit code, or the signal's name. */
  exited: Promise<number | string>;
}

/** A port free right now on 127.0.0.1. */
/**
 * Starts `moeflash serve --model <model>` with its three services on free loopback ports, no metrics or HTTP
 * endpoints, heat maps under `stateDir`; `env` overrides. Resolves once the process is spawned: wait for the
 * services with listening().
 */
export async function spawnServe(model: string, stateDir: string, env: Record<string, string> = {}): Promise<ServeProcess> {
  const addresses = {
    router: `127.0.0.1:${await freePort()}`,
    inference: `127.0.0.1:${await freePort()}`,
    'expert-store': `127.0.0.1:${await freePort()}`,
  };
  const inherited = { ...process.env };
  for (const name of ['MOEFLASH_MODELS', 'MOEFLASH_BACKENDS', 'MOEFLASH_HINT_CHANNEL']) delete inherited[name];
  const child = spawn(process.execPath, [BIN, 'serve', '--model', model], {
    env: {
      ...inherited,
      MOEFLASH_ROUTER_ADDR: addresses.router,
      MOEFLASH_INFERENCE_ADDR: addresses.inference,
      MOEFLASH_EXPERT_STORE_ADDR: addresses['expert-store'],
      MOEFLASH_EXPERT_STORE_HTTP_ADDR: 'off',
      MOEFLASH_METRICS_ADDR: 'off',
      MOEFLASH_STATE_DIR: stateDir,
      MOEFLASH_LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const lines: ServeLine[] = [];
  const events = new EventEmitter<{ line: [] }>();
  createInterface({ input: child.stderr! }).on('line', (text) => {
    let line: ServeLine;
    try {
      line = JSON.parse(text) as ServeLine;
    } catch {
      line = { msg: text };
    }
    lines.push(line);
    events.emit('line');
  });
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const waitForLine = async (match: (line: ServeLine) => boolean, from = 0): Promise<ServeLine> => {
    for (;;) {
      const found = lines.slice(from).find(match);
      if (found) return found;
      await Promise.race([once(events, 'line'), exited.then((code) => Promise.reject(new Error(`serve exited (${code}): ${JSON.stringify(lines.slice(-20))}`)))]);
    }
  };
  return {
    child,
    addresses,
    lines,
    waitForLine,
    exited,
    async listening(service, from = 0) {
      const line = await waitForLine((l) => l.name === service && l.msg === 'listening', from);
      return Number(line.pid);
    },
  };
}
