import type { Logger } from 'pino';
import { InvalidArgumentError } from './errors';
import { createLogger } from './logger';
import { parseConfig, type ServiceConfig } from './parseConfig';

/** Starts a service; resolves with the function that stops it (gracefully, within the configured grace period). */
export type StartService = (config: ServiceConfig, log: Logger) => Promise<() => Promise<void>>;

/**
 * The life of a service process: configuration from argv and env (exit 2 when invalid), start (exit 1 when it
 * fails), then SIGTERM or SIGINT stops it gracefully and exits 0; a second signal exits at once.
 */
export function runService(name: string, start: StartService, argv = process.argv.slice(2)): void {
  let config: ServiceConfig;
  try {
    config = parseConfig(argv);
  } catch (err) {
    const violations = err instanceof InvalidArgumentError ? err.violations : [{ field: 'config', description: String(err) }];
    for (const v of violations) process.stderr.write(`moeflash ${name}: ${v.field}: ${v.description}\n`);
    process.exit(2);
  }
  const log = createLogger(name, config.logLevel);
  let stop: (() => Promise<void>) | undefined;
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, 'second signal; exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal, graceMs: config.shutdownGraceMs }, 'shutting down');
    // Before start() resolved there is nothing to drain yet.
    (stop ? stop() : Promise.resolve()).then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // started by a supervisor (moeflash serve) over IPC: if it goes away, stop rather than linger as an orphan
  if (process.send) process.once('disconnect', () => !stopping && onSignal('SIGTERM'));
  start(config, log).then(
    (s) => {
      stop = s;
    },
    (err: unknown) => {
      log.fatal({ err }, 'failed to start');
      process.exit(1);
    },
  );
}
