import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';

/**
 * A small authoritative DNS server over UDP on 127.0.0.1 for tests: answers A queries for the names it is given
 * (TTL 0, so resolvers ask again), an empty answer for other types of those names, NXDOMAIN for the rest. Enough
 * for the platform's resolver (c-ares, as node:dns uses it) to resolve a headless-Service-like name whose answer
 * the test changes while the router runs.
 */
export class LoopbackDnsServer {
  private readonly records = new Map<string, string[]>();

  private constructor(
    private readonly socket: Socket,
    /** host:port, for MOEFLASH_ROUTER_DNS_SERVERS. */
    readonly address: string,
  ) {
    socket.on('message', (query, peer) => this.answer(query, peer));
  }

  static async start(): Promise<LoopbackDnsServer> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return new LoopbackDnsServer(socket, `127.0.0.1:${socket.address().port}`);
  }

  /** `name` answers with these IPv4 addresses from now on. */
  set(name: string, ips: string[]): void {
    this.records.set(name.toLowerCase(), ips);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }

  private answer(query: Buffer, peer: RemoteInfo): void {
    if (query.length < 12) return;
    // the question: labels up to the zero byte, then type and class
    const labels: string[] = [];
    let at = 12;
    while (at < query.length && query[at] !== 0) {
      labels.push(query.toString('latin1', at + 1, at + 1 + query[at]));
      at += 1 + query[at];
    }
    const questionEnd = at + 5;
    if (questionEnd > query.length) return;
    const type = query.readUInt16BE(at + 1);
    const ips = this.records.get(labels.join('.').toLowerCase());
    const answers = ips && type === 1 ? ips : [];
    const header = Buffer.alloc(12);
    query.copy(header, 0, 0, 2); // id
    // QR, the query's opcode and RD, AA, RA; NXDOMAIN for an unknown name
    header.writeUInt16BE(0x8000 | (query.readUInt16BE(2) & 0x7900) | 0x0400 | 0x0080 | (ips ? 0 : 3), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    const records = answers.map((ip) => {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
      rr.writeUInt16BE(1, 2); // A
      rr.writeUInt16BE(1, 4); // IN
      rr.writeUInt32BE(0, 6); // TTL
      rr.writeUInt16BE(4, 10);
      ip.split('.').forEach((octet, i) => rr.writeUInt8(Number(octet), 12 + i));
      return rr;
    });
    this.socket.send(Buffer.concat([header, query.subarray(12, questionEnd), ...records]), peer.port, peer.address);
  }
}
