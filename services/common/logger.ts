import pino, { type Logger } from 'pino';

/**
 * The services' structured logger: JSON lines to stderr (stdout stays free for a CLI's output). Synchronous
 * writes, so the last lines before an exit are never lost; requests log at debug, so this costs nothing at the
 * default level. The level comes from MOEFLASH_LOG_LEVEL unless given.
 */
export function createLogger(service: string, level = process.env.MOEFLASH_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name: service, level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

export type { Logger };
