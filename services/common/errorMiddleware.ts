import type { CallContext, ServerMiddleware, ServerMiddlewareCall } from 'nice-grpc-common';
import type { Logger } from 'pino';
import { STATUS_DETAILS_KEY } from './StatusDetails';
import { toGrpcError } from './toGrpcError';

/**
 * Server middleware that ends every failed call through toGrpcError: the status from the typed error and its
 * google.rpc details in the grpc-status-details-bin trailer.
 */
export function errorMiddleware(log: Logger): ServerMiddleware {
  return async function* errors<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    try {
      return yield* call.next(call.request, context);
    } catch (err) {
      const { error, statusDetails } = toGrpcError(err, log, call.method.path);
      if (statusDetails) context.trailer.set(STATUS_DETAILS_KEY, statusDetails);
      throw error;
    }
  };
}
