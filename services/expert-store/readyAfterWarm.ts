import type { Logger } from 'pino';

/**
 * Reports the store NOT_SERVING (liveness stays SERVING) until ready() or `budgetMs`, whichever comes first: the
 * warm may take long on a large model, and a replica that serves while still warming beats one that never serves.
 */
export function readyAfterWarm(server: { health: { setReady(ready: boolean): void } }, budgetMs: number, log: Logger): { ready(why: string): void } {
  server.health.setReady(false);
  let done = false;
  const ready = (why: string) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    server.health.setReady(true);
    log.info({ why }, 'ready');
  };
  const timer = setTimeout(() => ready(`the warm-up budget of ${budgetMs} ms is spent`), budgetMs);
  timer.unref();
  return { ready };
}
