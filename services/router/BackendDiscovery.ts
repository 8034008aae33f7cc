import { Resolver } from 'node:dns/promises';
import type { ChannelOptions } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { DNS_SCHEME } from '../common/parseConfig';

export interface BackendDiscoveryOptions {
  log: Logger;
  /** MOEFLASH_BACKENDS: host:port entries (static) and dns:///name:port entries (resolved). */
  entries: readonly string[];
  resolveMs: number;
  /** host:port DNS servers instead of the system's. */
  dnsServers?: readonly string[];
  /** Whether the backend channels use TLS: a discovered address then keeps the DNS name as its TLS server name. */
  tls: boolean;
  /** The backend set changed: these joined (with the channel options they need) and these left. */
  apply(added: ReadonlyMap<string, ChannelOptions>, removed: readonly string[]): void;
}

/** A dns:/// entry: the name and port. */
interface DnsEntry {
  name: string;
  port: number;
}

/**
 * The router's backend set from MOEFLASH_BACKENDS: static host:port entries as they are, and dns:///name:port entries
 * (a Kubernetes headless Service) resolved into every address the name has, through the platform's resolver (c-ares,
 * /etc/resolv.conf), again every resolveMs and at once when asked (a call found a backend unavailable). Backends
 * that appear are added (the monitor health-checks them before any call goes there); ones that disappear are
 * removed. A failed lookup (timeout, server failure) keeps the last answer; an empty one empties the name's set.
 */
export class BackendDiscovery {
  private readonly resolver = new Resolver();
  private readonly names: DnsEntry[];
  /** What each name resolved to last: address -> channel options. */
  private readonly resolved = new Map<string, Map<string, ChannelOptions>>();
  private timer?: NodeJS.Timeout;
  private resolving?: Promise<void>;
  private again = false;
  private closed = false;

  constructor(private readonly options: BackendDiscoveryOptions) {
    this.names = options.entries.filter((e) => e.startsWith(DNS_SCHEME)).map((e) => {
      const hostPort = e.slice(DNS_SCHEME.length);
      const at = hostPort.lastIndexOf(':');
      return { name: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)) };
    });
    if (options.dnsServers?.length) this.resolver.setServers([...options.dnsServers]);
  }

  /** The static entries: known before any lookup. */
  get staticBackends(): string[] {
    return this.options.entries.filter((e) => !e.startsWith(DNS_SCHEME));
  }

  /** Resolves now and then every resolveMs; resolves when the first lookup of every name has been applied. */
  async start(): Promise<void> {
    if (this.names.length === 0) return;
    await this.resolveSoon();
    this.timer = setInterval(() => void this.resolveSoon(), this.options.resolveMs);
    this.timer.unref();
  }

  /** Looks the names up again now (or right after the lookup in progress). */
  resolveSoon(): Promise<void> {
    if (this.names.length === 0 || this.closed) return Promise.resolve();
    if (this.resolving) {
      this.again = true;
      return this.resolving;
    }
    this.resolving = (async () => {
      do {
        this.again = false;
        await Promise.all(this.names.map((entry) => this.resolveName(entry)));
      } while (this.again && !this.closed);
    })().finally(() => (this.resolving = undefined));
    return this.resolving;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.resolver.cancel();
  }

  private async resolveName({ name, port }: DnsEntry): Promise<void> {
    let ips: string[];
    try {
      const [v4, v6] = await Promise.all([this.lookup(() => this.resolver.resolve4(name)), this.lookup(() => this.resolver.resolve6(name))]);
      ips = [...v4, ...v6.map((ip) => `[${ip}]`)];
    } catch (err) {
      if (!this.closed) this.options.log.warn({ name, err: (err as Error).message }, 'backend lookup failed; keeping the last answer');
      return;
    }
    if (this.closed) return;
    // A discovered address is dialled by IP: TLS still checks the certificate against the name it came from.
    const channelOptions: ChannelOptions = this.options.tls ? { 'grpc.ssl_target_name_override': name, 'grpc.default_authority': `${name}:${port}` } : {};
    const next = new Map(ips.map((ip) => [`${ip}:${port}`, channelOptions]));
    const key = `${name}:${port}`;
    const previous = this.resolved.get(key) ?? new Map<string, ChannelOptions>();
    this.resolved.set(key, next);
    const stays = (address: string) => this.staticBackends.includes(address) || [...this.resolved.values()].some((m) => m.has(address));
    const added = new Map([...next].filter(([address]) => !previous.has(address) && !this.staticBackends.includes(address)));
    const removed = [...previous.keys()].filter((address) => !stays(address));
    if (added.size === 0 && removed.length === 0) return;
    this.options.log.info({ name, backends: [...next.keys()], added: [...added.keys()], removed }, 'backends resolved');
    this.options.apply(added, removed);
  }

  /** One record type's addresses; a name with none of that type is an empty answer, not a failure. */
  private async lookup(query: () => Promise<string[]>): Promise<string[]> {
    try {
      return await query();
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ENODATA' || code === 'ENOTFOUND') return [];
      throw err;
    }
  }
}
