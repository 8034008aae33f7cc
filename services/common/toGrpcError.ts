import { ServerError, Status } from 'nice-grpc';
import type { Logger } from 'pino';
import {
  CancelledError,
  DeadlineExceededError,
  InvalidArgumentError,
  ModelLoadError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
} from './errors';
import { isAbortError } from './isAbortError';
import { encodeStatusDetails } from './StatusDetails';
import { UpstreamError } from './UpstreamError';

/** How a failed call ends: the status, and the google.rpc.Status bytes for grpc-status-details-bin when any. */
export interface GrpcErrorStatus {
  error: ServerError;
  statusDetails?: Uint8Array;
  /** When to retry, for the grpc-retry-pushback-ms trailer (the same delay as the RetryInfo detail). */
  retryPushbackMs?: number;
}

const DOMAIN = 'moeflash.dev';
const INTERNAL_MESSAGE = 'internal error; see the server log';

/**
 * The one mapping from what handlers throw to gRPC statuses. Typed errors carry their details (field violations,
 * retry delay, resource); anything else is a bug: INTERNAL with a fixed message, the stack only in the log.
 */
export function toGrpcError(err: unknown, log: Logger, method = ''): GrpcErrorStatus {
  if (err instanceof ServerError) return { error: err };
  if (err instanceof UpstreamError) return { error: new ServerError(err.code as Status, err.details), statusDetails: err.statusDetails };
  if (err instanceof InvalidArgumentError) {
    const code = Status.INVALID_ARGUMENT;
    return {
      error: new ServerError(code, err.message),
      statusDetails: encodeStatusDetails({ code, message: err.message, fieldViolations: err.violations }),
    };
  }
  if (err instanceof NotFoundError) {
    const code = Status.NOT_FOUND;
    return {
      error: new ServerError(code, err.message),
      statusDetails: encodeStatusDetails({
        code,
        message: err.message,
        resourceInfo: { resourceType: err.resourceType, resourceName: err.resourceName },
        errorInfo: { reason: `${err.resourceType.toUpperCase().replace(/[^A-Z0-9]+/g, '_')}_NOT_FOUND`, domain: DOMAIN },
      }),
    };
  }
  if (err instanceof ResourceExhaustedError) return retryLater(Status.RESOURCE_EXHAUSTED, err.message, err.retryAfterMs);
  if (err instanceof UnavailableError) return retryLater(Status.UNAVAILABLE, err.message, err.retryAfterMs);
  if (err instanceof DeadlineExceededError) return { error: new ServerError(Status.DEADLINE_EXCEEDED, err.message) };
  if (err instanceof CancelledError) return { error: new ServerError(Status.CANCELLED, err.message) };
  // A model that failed to load is a deployment problem the caller cannot fix by changing the request.
  if (err instanceof ModelLoadError) return { error: new ServerError(Status.FAILED_PRECONDITION, err.message) };
  // The caller went away (or its deadline passed): the status is only for the log, the client has its own.
  if (isAbortError(err)) return { error: new ServerError(Status.CANCELLED, 'the call was cancelled') };
  log.error({ err, method }, 'unexpected error in a handler');
  return { error: new ServerError(Status.INTERNAL, INTERNAL_MESSAGE) };
}

/** A status that says when to try again, if known: RetryInfo for code that reads it, pushback for gRPC's retry. */
function retryLater(code: Status, message: string, retryAfterMs: number | undefined): GrpcErrorStatus {
  if (retryAfterMs === undefined) return { error: new ServerError(code, message) };
  return {
    error: new ServerError(code, message),
    statusDetails: encodeStatusDetails({ code, message, retryDelayMs: retryAfterMs }),
    retryPushbackMs: retryAfterMs,
  };
}
