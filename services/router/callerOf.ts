import { createHash } from 'node:crypto';
import type { CallContext } from 'nice-grpc-common';

/**
 * Who is calling, for fair queueing: the API key when the call carries one (already checked by the auth
 * middleware), else the peer's address and port, i.e. the connection, which is one client channel in practice.
 * A key is kept only as a digest so that queue state never holds a secret.
 */
export function callerOf(context: Pick<CallContext, 'metadata' | 'peer'>): string {
  const authorization = context.metadata.get('authorization');
  if (typeof authorization === 'string' && authorization.length > 0)
    return `key:${createHash('sha256').update(authorization).digest('base64url').slice(0, 16)}`;
  return `peer:${context.peer}`;
}
