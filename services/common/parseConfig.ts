import type { LoadOptions } from '../engine/types';
import { LOAD_OPTIONS } from './options/loadOptionTable';
import { loadOptionsFromText } from './options/optionTable';
import { InvalidArgumentError, type FieldViolation } from './errors';

/** Settings of the moeflash services, from flags over environment over defaults (ports from INTERFACES.md). */
export interface ServiceConfig {
  logLevel: string;
  /** On SIGTERM, how long calls in flight may take to finish before they are ended with UNAVAILABLE. */
  shutdownGraceMs: number;
  routerAddr: string;
  inferenceAddr: string;
  expertStoreAddr: string;
  router: RouterConfig;
  inference: InferenceConfig;
}

export interface RouterConfig {
  /** Inference services to route to: host:port each, or dns:///name:port for every address the name resolves to. */
  backends: string[];
  /** How often dns:/// backends are resolved again (also at once when a call finds a backend unavailable). */
  resolveMs: number;
  /** DNS servers (host:port) for dns:/// backends instead of the system's (/etc/resolv.conf). */
  dnsServers?: string[];
  /**
   * Generate calls in flight per backend; unset (the default), the sequences the backend reports it decodes at once
   * (its ready models' capacity in GetLoad), so no call waits in an engine's queue.
   */
  maxInFlightPerBackend?: number;
  /** Generate calls waiting in the router for a backend slot, the queue's memory bound; beyond it RESOURCE_EXHAUSTED. */
  maxQueued: number;
  /** The longest wait a call may expect when it joins the queue, and the longest it is kept there. */
  maxQueueWaitMs: number;
  /** How long the queue may stay non-empty and still count as a burst; after that only short waits are admitted. */
  queueBurstMs: number;
  /** RetryInfo delay sent with RESOURCE_EXHAUSTED while no call has ended to estimate waits from. */
  retryAfterMs: number;
  /** Attempts of a call that fails with UNAVAILABLE before its first token (each on another backend). */
  maxAttempts: number;
  /** How often each healthy backend's load is polled. */
  loadPollMs: number;
  /** Bearer tokens, one a line (MOEFLASH_API_KEYS_FILE); with apiKeys, every call but health needs one. */
  apiKeysFile?: string;
  /** Bearer tokens, comma-separated (MOEFLASH_API_KEYS). Neither set: no authentication. */
  apiKeys?: string[];
}

export interface InferenceConfig {
  /** GGUF path of the default model (MOEFLASH_MODEL); its name is the file name without .gguf. */
  model?: string;
  /** JSON file { "<name>": { "path": "...", "options": { LoadOptions } } } (MOEFLASH_MODELS). */
  modelsFile?: string;
  /**
   * The default model's engine options from the option table's flags and variables (MOEFLASH_N_GPU_LAYERS,
   * MOEFLASH_EXPERT_CACHE_SLOTS, ...; services/common/options/loadOptionTable.ts). Models of the MOEFLASH_MODELS
   * file set the same options, by the table's keys, in their `options`.
   */
  modelOptions?: Partial<LoadOptions>;
  /** MOEFLASH_STATE_DIR: where the service keeps what must outlive a crash (first-decode markers). Default ./.state */
  stateDir: string;
}

type Parse<T> = (raw: string, violations: FieldViolation[], field: string) => T | undefined;

interface Setting<T> {
  flag: string;
  env: string;
  parse: Parse<T>;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

const text: Parse<string> = (raw) => raw;

function integer(min: number, max = Number.MAX_SAFE_INTEGER): Parse<number> {
  return (raw, v, field) => {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
      v.push({ field, description: `must be an integer in [${min}, ${max}], got '${raw}'` });
      return undefined;
    }
    return n;
  };
}

const hostPort: Parse<string> = (raw, v, field) => {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(raw.trim());
  if (!m || Number(m[2]) > 65535) {
    v.push({ field, description: `must be host:port, got '${raw}'` });
    return undefined;
  }
  return raw.trim();
};

/** The scheme of a backend the router resolves through DNS, as gRPC names it: dns:///name:port. */
export const DNS_SCHEME = 'dns:///';

/** host:port entries, or dns:///name:port for a name resolved (and re-resolved) into every address it has. */
const backendList: Parse<string[]> = (raw, v, field) => {
  const items = raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (items.length === 0) v.push({ field, description: 'must list at least one host:port or dns:///name:port' });
  const parsed = items.map((item) => (item.startsWith(DNS_SCHEME) ? (hostPort(item.slice(DNS_SCHEME.length), v, field) && item) : hostPort(item, v, field)));
  return parsed.every((p): p is string => p !== undefined) ? parsed : undefined;
};

const hostPortList: Parse<string[]> = (raw, v, field) => {
  const items = raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  const parsed = items.map((item) => hostPort(item, v, field));
  return parsed.every((p): p is string => p !== undefined) ? parsed : undefined;
};

const commaList: Parse<string[]> = (raw) => raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);

const logLevel: Parse<string> = (raw, v, field) => {
  if (LOG_LEVELS.includes(raw)) return raw;
  v.push({ field, description: `must be one of ${LOG_LEVELS.join(', ')}, got '${raw}'` });
  return undefined;
};

const SETTINGS = {
  logLevel: { flag: 'log-level', env: 'MOEFLASH_LOG_LEVEL', parse: logLevel },
  shutdownGraceMs: { flag: 'shutdown-grace-ms', env: 'MOEFLASH_SHUTDOWN_GRACE_MS', parse: integer(0) },
  routerAddr: { flag: 'router-addr', env: 'MOEFLASH_ROUTER_ADDR', parse: hostPort },
  inferenceAddr: { flag: 'inference-addr', env: 'MOEFLASH_INFERENCE_ADDR', parse: hostPort },
  expertStoreAddr: { flag: 'expert-store-addr', env: 'MOEFLASH_EXPERT_STORE_ADDR', parse: hostPort },
  backends: { flag: 'backends', env: 'MOEFLASH_BACKENDS', parse: backendList },
  resolveMs: { flag: 'resolve-ms', env: 'MOEFLASH_ROUTER_RESOLVE_MS', parse: integer(100) },
  dnsServers: { flag: 'dns-servers', env: 'MOEFLASH_ROUTER_DNS_SERVERS', parse: hostPortList },
  maxInFlightPerBackend: { flag: 'max-in-flight', env: 'MOEFLASH_ROUTER_MAX_IN_FLIGHT', parse: integer(1) },
  maxQueued: { flag: 'max-queued', env: 'MOEFLASH_ROUTER_MAX_QUEUED', parse: integer(0) },
  maxQueueWaitMs: { flag: 'max-queue-wait-ms', env: 'MOEFLASH_ROUTER_MAX_QUEUE_WAIT_MS', parse: integer(0) },
  queueBurstMs: { flag: 'queue-burst-ms', env: 'MOEFLASH_ROUTER_QUEUE_BURST_MS', parse: integer(0) },
  retryAfterMs: { flag: 'retry-after-ms', env: 'MOEFLASH_ROUTER_RETRY_AFTER_MS', parse: integer(0) },
  maxAttempts: { flag: 'max-attempts', env: 'MOEFLASH_ROUTER_MAX_ATTEMPTS', parse: integer(1, 10) },
  loadPollMs: { flag: 'load-poll-ms', env: 'MOEFLASH_ROUTER_LOAD_POLL_MS', parse: integer(10) },
  apiKeysFile: { flag: 'api-keys-file', env: 'MOEFLASH_API_KEYS_FILE', parse: text },
  // Keys on a command line are visible to every local user (ps): prefer the file or the environment.
  apiKeys: { flag: 'api-keys', env: 'MOEFLASH_API_KEYS', parse: commaList },
  model: { flag: 'model', env: 'MOEFLASH_MODEL', parse: text },
  modelsFile: { flag: 'models', env: 'MOEFLASH_MODELS', parse: text },
  stateDir: { flag: 'state-dir', env: 'MOEFLASH_STATE_DIR', parse: text },
} satisfies Record<string, Setting<unknown>>;

/**
 * Parses `--flag value` / `--flag=value` arguments and MOEFLASH_* variables into a validated ServiceConfig.
 * Throws InvalidArgumentError naming every bad or unknown setting (fields read `--flag (ENV)`).
 */
export function parseConfig(argv: readonly string[] = process.argv.slice(2), env: NodeJS.ProcessEnv = process.env): ServiceConfig {
  const violations: FieldViolation[] = [];
  const flags = parseFlags(argv, violations);
  function get<T>(setting: Setting<T>, fallback: T): T;
  function get<T>(setting: Setting<T>): T | undefined;
  function get<T>(setting: Setting<T>, fallback?: T): T | undefined {
    const fromFlag = flags.get(setting.flag);
    flags.delete(setting.flag);
    const raw = fromFlag ?? env[setting.env];
    if (raw === undefined || raw === '') return fallback;
    return setting.parse(raw, violations, `--${setting.flag} (${setting.env})`) ?? fallback;
  }
  const inferenceAddr = get(SETTINGS.inferenceAddr, '127.0.0.1:50061');
  const config: ServiceConfig = {
    logLevel: get(SETTINGS.logLevel, 'info'),
    shutdownGraceMs: get(SETTINGS.shutdownGraceMs, 30_000),
    routerAddr: get(SETTINGS.routerAddr, '127.0.0.1:50051'),
    inferenceAddr,
    expertStoreAddr: get(SETTINGS.expertStoreAddr, '127.0.0.1:50071'),
    router: {
      backends: get(SETTINGS.backends, [inferenceAddr]),
      resolveMs: get(SETTINGS.resolveMs, 5_000),
      dnsServers: get(SETTINGS.dnsServers),
      maxInFlightPerBackend: get(SETTINGS.maxInFlightPerBackend),
      maxQueued: get(SETTINGS.maxQueued, 1024),
      maxQueueWaitMs: get(SETTINGS.maxQueueWaitMs, 30_000),
      queueBurstMs: get(SETTINGS.queueBurstMs, 250),
      retryAfterMs: get(SETTINGS.retryAfterMs, 1_000),
      maxAttempts: get(SETTINGS.maxAttempts, 3),
      loadPollMs: get(SETTINGS.loadPollMs, 1_000),
      apiKeysFile: get(SETTINGS.apiKeysFile),
      apiKeys: get(SETTINGS.apiKeys),
    },
    inference: { model: get(SETTINGS.model), modelsFile: get(SETTINGS.modelsFile), modelOptions: modelOptions(flags, env, violations), stateDir: get(SETTINGS.stateDir, './.state') },
  };
  for (const flag of flags.keys()) violations.push({ field: `--${flag}`, description: 'unknown option' });
  if (violations.length > 0) throw new InvalidArgumentError(violations);
  return config;
}

/** The default model's engine options, by the option table: flags over variables, named '--flag (VARIABLE)'. */
function modelOptions(flags: Map<string, string>, env: NodeJS.ProcessEnv, violations: FieldViolation[]): Partial<LoadOptions> {
  const options = loadOptionsFromText(
    (o) => flags.get(o.flag) ?? env[o.env],
    (o) => `--${o.flag} (${o.env})`,
    violations,
  );
  for (const o of LOAD_OPTIONS) flags.delete(o.flag);
  return options as Partial<LoadOptions>;
}

function parseFlags(argv: readonly string[], violations: FieldViolation[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/s.exec(arg);
    if (!m) {
      violations.push({ field: arg, description: 'unexpected argument' });
      continue;
    }
    let value = m[2];
    if (value === undefined) {
      if (i + 1 >= argv.length || argv[i + 1].startsWith('--')) {
        violations.push({ field: `--${m[1]}`, description: 'needs a value' });
        continue;
      }
      value = argv[++i];
    }
    flags.set(m[1], value);
  }
  return flags;
}
