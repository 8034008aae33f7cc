import { MoeflashError } from './errors';

/**
 * A backend ended a call with a non-OK gRPC status. The router forwards it as is (code, message and the raw
 * grpc-status-details-bin, so a backend's field violations reach the client), except that it may retry an
 * UNAVAILABLE one before the first token.
 */
export class UpstreamError extends MoeflashError {
  constructor(
    readonly code: number,
    readonly details: string,
    readonly backend: string,
    readonly statusDetails?: Uint8Array,
  ) {
    super(`${backend}: ${details}`);
  }
}
