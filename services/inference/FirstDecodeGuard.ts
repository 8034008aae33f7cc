import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

interface Marker {
  model: string;
  path: string;
  /** The model file as it was: a changed file gets another chance. */
  size: number;
  mtimeMs: number;
  /** The engine build (its CPU build record's probe time): a rebuilt engine gets another chance. */
  build: string;
  pid: number;
  startedAt: string;
}

/**
 * Remembers, across process deaths, which model was in its first decode (load + warm-up decode) when the process
 * died. A marker is written before a model's first decode and removed after it; a marker left by an earlier
 * process means that model took the engine down (an instruction the CPU cannot run, a kernel bug), so it is
 * reported as failed with that reason instead of being loaded again in a restart loop. A new model file or a
 * rebuilt engine clears the verdict.
 */
export class FirstDecodeGuard {
  private readonly dir: string;
  /** Why markers cannot be kept (the state folder is not writable); the guard then does nothing. */
  readonly disabled?: string;

  /** `previousExit`: how the previous process of this service ended, as its supervisor saw it (e.g. 'SIGILL'). */
  constructor(stateDir: string, private readonly build: string, private readonly previousExit?: string) {
    this.dir = join(stateDir, 'inference', 'first-decode');
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      // a guard is no reason to refuse service: models load as before, without crash protection
      this.disabled = `${this.dir}: ${(err as Error).message}`;
    }
  }

  private file(path: string): string {
    return join(this.dir, `${createHash('sha256').update(path).digest('hex').slice(0, 16)}.json`);
  }

  private read(file: string): Marker | undefined {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as Marker;
    } catch {
      return undefined;
    }
  }

  /** Why the model must not be loaded again (an earlier process died in its first decode), else undefined. */
  crashedBefore(model: string, path: string): string | undefined {
    if (this.disabled) return undefined;
    const marker = this.read(this.file(path));
    if (!marker || marker.pid === process.pid) return undefined;
    let stat;
    try {
      stat = statSync(path);
    } catch {
      return undefined; // the load itself will name the missing file
    }
    if (marker.size !== stat.size || marker.mtimeMs !== stat.mtimeMs || marker.build !== this.build) {
      rmSync(this.file(path), { force: true }); // something changed: try again
      return undefined;
    }
    const how = this.previousExit ? ` (it ended with ${this.previousExit})` : '';
    return (
      `the inference process died during this model's first decode on ${marker.startedAt}${how}; ` +
      `it is not loaded again until the model file or the engine build changes (npm run build:native re-probes the ` +
      `CPU build) or ${this.file(path)} is removed`
    );
  }

  /** Before the first decode of `path`. */
  begin(model: string, path: string): void {
    if (this.disabled) return;
    let size = -1;
    let mtimeMs = -1;
    try {
      ({ size, mtimeMs } = statSync(path));
    } catch {
      // the load reports it
    }
    const marker: Marker = { model, path, size, mtimeMs, build: this.build, pid: process.pid, startedAt: new Date().toISOString() };
    const file = this.file(path);
    try {
      writeFileSync(`${file}.tmp`, JSON.stringify(marker) + '\n', { mode: 0o600 });
      renameSync(`${file}.tmp`, file);
    } catch {
      rmSync(`${file}.tmp`, { force: true }); // e.g. a full disk: no marker, no half-written one
    }
  }

  /** After the first decode of `path` returned (loaded, or failed with an error rather than a crash). */
  end(path: string): void {
    if (this.disabled) return;
    rmSync(this.file(path), { force: true });
  }
}
