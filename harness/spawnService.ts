import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';

type LogLine = Record<string, unknown>;

export interface SpawnedService {
  child: ChildProcess;
  /** The port from the service's 'listening' log line. */
  port: number;
  /** Resolves with the exit code (or the signal's name) when the process ends. */
  exited: Promise<number | string>;
  /** Every log line so far (JSON). */
  logs: LogLine[];
  /** Resolves at the first log line (past or future) that matches. */
  waitForLog(match: (line: LogLine) => boolean): Promise<LogLine>;
}

/**
 * Starts a compiled service entry (dist/...js) in its own process and resolves once it logs 'listening'
 * (bind it to port 0 and read the port from that line). Rejects with the logs if it exits first.
 */
export function spawnService(script: string, env: Record<string, string>): Promise<SpawnedService> {
  const child = spawn(process.execPath, [script], {
    env: { ...process.env, MOEFLASH_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logs: LogLine[] = [];
  const lines = new EventEmitter<{ line: [LogLine] }>();
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const waitForLog = (match: (line: LogLine) => boolean) =>
    new Promise<LogLine>((resolve) => {
      const seen = logs.find(match);
      if (seen) return resolve(seen);
      const onLine = (line: LogLine) => {
        if (!match(line)) return;
        lines.off('line', onLine);
        resolve(line);
      };
      lines.on('line', onLine);
    });
  createInterface({ input: child.stderr! }).on('line', (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      line = { msg: text };
    }
    logs.push(line);
    lines.emit('line', line);
  });
  return new Promise((resolve, reject) => {
    void waitForLog((l) => l.msg === 'listening' && typeof l.address === 'string').then((l) =>
      resolve({ child, port: Number(String(l.address).split(':').pop()), exited, logs, waitForLog }),
    );
    void exited.then((code) => reject(new Error(`${script} exited (${code}) before listening: ${JSON.stringify(logs)}`)));
  });
}
