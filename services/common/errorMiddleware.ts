import type { CallContext, ServerMiddleware, ServerMiddlewareCall } from 'nice-grpc-common';
import type { Logger } from 'pino';
import { STATUS_DETAILS_KEY } from './StatusDetails';
import { toGrpcError } from './toGrpcError';

/**
 * gRPC's own retry (a client with a retryPolicy in its service config) waits exactly this many milliseconds before
 * the next attempt; it does not read RetryInfo, which is for code that handles the error itself.
 */
const RETRY_PUSHBACK_KEY = 'grpc-retry-pushback-ms';

/**
 * Server middleware that ends every failed call through toGrpcError: the status from the typed error, its
 * google.rpc details in the grpc-status-details-bin trailer and, for a retry delay, the pushback trailer.
 */
export function errorMiddleware(log: Logger): ServerMiddleware {
  return async function* errors<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    try {
      return yield* call.next(call.request, context);
    } catch (err) {
      const { error, statusDetails, retryPushbackMs } = toGrpcError(err, log, call.method.path);
      if (statusDetails) context.trailer.set(STATUS_DETAILS_KEY, statusDetails);
      if (retryPushbackMs !== undefined) context.trailer.set(RETRY_PUSHBACK_KEY, String(Math.max(0, Math.round(retryPushbackMs))));
      throw error;
    }
  };
}
