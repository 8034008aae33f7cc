import { ServerError, Status } from 'nice-grpc';
import type { CallContext, ServerMiddleware, ServerMiddlewareCall } from 'nice-grpc-common';
import type { ApiKeys } from './ApiKeys';

/** Health checks stay open: load balancers and kubelet probes carry no token. */
export const AUTH_EXEMPT_PREFIXES: readonly string[] = ['/grpc.health.v1.Health/'];

const BEARER = /^Bearer ([\x21-\x7e]+)$/;

/**
 * Server middleware requiring `authorization: Bearer <key>` with one of `keys` on every call except those under
 * `exempt` (health). A call without a valid token ends UNAUTHENTICATED before its handler runs; the reply never
 * says whether a key was missing, malformed or unknown.
 */
export function bearerAuthMiddleware(keys: ApiKeys, exempt: readonly string[] = AUTH_EXEMPT_PREFIXES): ServerMiddleware {
  return async function* bearerAuth<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    if (!exempt.some((prefix) => call.method.path.startsWith(prefix))) {
      const header = context.metadata.get('authorization');
      const m = typeof header === 'string' ? BEARER.exec(header) : null;
      if (!m || !keys.accepts(m[1])) throw new ServerError(Status.UNAUTHENTICATED, 'a valid bearer token is required');
    }
    return yield* call.next(call.request, context);
  };
}
