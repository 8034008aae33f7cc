import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';

/** A port free right now on 127.0.0.1 (for endpoints that cannot report the port they bound, like Prometheus'). */
export async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
