import { InvalidArgumentError, type FieldViolation } from '../common/errors';
import type { NativeIoMode } from '../common/native/ioAddon';

/** Expert-store settings beyond the shared service config (parseConfig): environment variables only. */
export interface ExpertStoreSettings {
  /** MOEFLASH_STATE_DIR: heat maps. Default ./.state */
  stateDir: string;
  /** MOEFLASH_EXPERT_STORE_HTTP_ADDR: heat map SVG and metrics; null ('off'): none. Default 127.0.0.1:9466 */
  httpAddr: string | null;
  /** MOEFLASH_HINT_CHANNEL: channel name or path; false ('off'): no hints; undefined: derived from the model. */
  hintChannel: string | false | undefined;
  /** MOEFLASH_IO_MODE: auto | uring | fadvise. Default auto */
  ioMode: NativeIoMode;
  /** MOEFLASH_IO_QUEUE_DEPTH: io_uring reads in flight. Default 32 */
  queueDepth: number;
  /** MOEFLASH_WARM_ON_START: heat (experts the heat map has seen) | all | none. Default heat */
  warmOnStart: 'heat' | 'all' | 'none';
  /** MOEFLASH_WARM_BUDGET_BYTES: fixed warm budget; default MemAvailable minus the headroom. */
  budgetBytes: number | undefined;
  /** MOEFLASH_WARM_HEADROOM_BYTES: memory the default budget leaves free. Default 1 GiB */
  headroomBytes: number;
  /** MOEFLASH_HEAT_HALF_LIFE_S: heat half-life. Default 1800 */
  halfLifeMs: number;
  /** MOEFLASH_PREFETCH_SPAN_INTERVAL_MS: how much prefetch work one span aggregates. Default 1000 */
  prefetchSpanIntervalMs: number;
  /**
   * With a startup warm: how long the store may report NOT_SERVING while it warms (MOEFLASH_WARM_READY_BUDGET_MS,
   * default 120 s; 0: ready at once). The pod's readiness includes it, so a replica scaled up from zero joins the
   * headless Service, and the router's backends, once its hottest experts are in the page cache.
   */
  warmReadyBudgetMs: number;
}

/** Reads and validates the settings; throws InvalidArgumentError naming each bad variable. */
export function expertStoreSettings(env: NodeJS.ProcessEnv = process.env): ExpertStoreSettings {
  const violations: FieldViolation[] = [];
  const get = (name: string) => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const int = (name: string, min: number, fallback?: number): number | undefined => {
    const raw = get(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min) {
      violations.push({ field: name, description: `must be an integer >= ${min}, got '${raw}'` });
      return fallback;
    }
    return n;
  };
  const oneOf = <T extends string>(name: string, values: readonly T[], fallback: T): T => {
    const raw = get(name);
    if (raw === undefined) return fallback;
    if ((values as readonly string[]).includes(raw)) return raw as T;
    violations.push({ field: name, description: `must be one of ${values.join(', ')}, got '${raw}'` });
    return fallback;
  };
  const http = get('MOEFLASH_EXPERT_STORE_HTTP_ADDR') ?? '127.0.0.1:9466';
  if (http !== 'off' && !/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(http)) {
    violations.push({ field: 'MOEFLASH_EXPERT_STORE_HTTP_ADDR', description: `must be host:port or off, got '${http}'` });
  }
  const channel = get('MOEFLASH_HINT_CHANNEL');
  const settings: ExpertStoreSettings = {
    stateDir: get('MOEFLASH_STATE_DIR') ?? './.state',
    httpAddr: http === 'off' ? null : http,
    hintChannel: channel === 'off' ? false : channel,
    ioMode: oneOf('MOEFLASH_IO_MODE', ['auto', 'uring', 'fadvise'] as const, 'auto'),
    queueDepth: int('MOEFLASH_IO_QUEUE_DEPTH', 1, 32) as number,
    warmOnStart: oneOf('MOEFLASH_WARM_ON_START', ['heat', 'all', 'none'] as const, 'heat'),
    budgetBytes: int('MOEFLASH_WARM_BUDGET_BYTES', 0),
    headroomBytes: int('MOEFLASH_WARM_HEADROOM_BYTES', 0, 1 << 30) as number,
    halfLifeMs: (int('MOEFLASH_HEAT_HALF_LIFE_S', 1, 1800) as number) * 1000,
    prefetchSpanIntervalMs: int('MOEFLASH_PREFETCH_SPAN_INTERVAL_MS', 10, 1000) as number,
    warmReadyBudgetMs: int('MOEFLASH_WARM_READY_BUDGET_MS', 0, 120_000) as number,
  };
  if (violations.length > 0) throw new InvalidArgumentError(violations);
  return settings;
}
