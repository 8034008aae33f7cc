import { BadRequest, ErrorInfo, ResourceInfo, RetryInfo } from '../../gen/google/rpc/error_details';
import { Status } from '../../gen/google/rpc/status';
import type { FieldViolation } from './errors';

/**
 * The google.rpc rich error model that moeflash sends in the `grpc-status-details-bin` trailer, in plain shapes.
 * Encoded as google.rpc.Status with Any-wrapped details, so any gRPC client with googleapis' error_details.proto
 * (Python's grpcio-status, Go's status.FromError) reads it.
 */
export interface StatusDetails {
  code: number;
  message: string;
  /** google.rpc.BadRequest: one entry per invalid field. */
  fieldViolations?: FieldViolation[];
  /** google.rpc.RetryInfo: how long to wait before retrying. */
  retryDelayMs?: number;
  /** google.rpc.ErrorInfo. */
  errorInfo?: { reason: string; domain: string; metadata?: Record<string, string> };
  /** google.rpc.ResourceInfo. */
  resourceInfo?: { resourceType: string; resourceName: string; description?: string };
}

/** The grpc-status-details-bin trailer key. */
export const STATUS_DETAILS_KEY = 'grpc-status-details-bin';

const TYPE_URL_PREFIX = 'type.googleapis.com/google.rpc.';

export function encodeStatusDetails(d: StatusDetails): Uint8Array {
  const details: { typeUrl: string; value: Uint8Array }[] = [];
  if (d.fieldViolations)
    details.push({ typeUrl: `${TYPE_URL_PREFIX}BadRequest`, value: BadRequest.encode({ fieldViolations: d.fieldViolations }).finish() });
  if (d.retryDelayMs !== undefined) {
    const ms = Math.max(0, Math.round(d.retryDelayMs));
    const retryDelay = { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
    details.push({ typeUrl: `${TYPE_URL_PREFIX}RetryInfo`, value: RetryInfo.encode({ retryDelay }).finish() });
  }
  if (d.errorInfo)
    details.push({
      typeUrl: `${TYPE_URL_PREFIX}ErrorInfo`,
      value: ErrorInfo.encode({ reason: d.errorInfo.reason, domain: d.errorInfo.domain, metadata: d.errorInfo.metadata ?? {} }).finish(),
    });
  if (d.resourceInfo)
    details.push({
      typeUrl: `${TYPE_URL_PREFIX}ResourceInfo`,
      value: ResourceInfo.encode({ ...d.resourceInfo, owner: '', description: d.resourceInfo.description ?? '' }).finish(),
    });
  return Status.encode({ code: d.code, message: d.message, details }).finish();
}

/** Decodes a grpc-status-details-bin value; details of unknown types are skipped. */
export function decodeStatusDetails(bytes: Uint8Array): StatusDetails {
  const status = Status.decode(bytes);
  const out: StatusDetails = { code: status.code, message: status.message };
  for (const any of status.details) {
    switch (any.typeUrl.slice(any.typeUrl.lastIndexOf('/') + 1)) {
      case 'google.rpc.BadRequest':
        out.fieldViolations = BadRequest.decode(any.value).fieldViolations.map((v) => ({ field: v.field, description: v.description }));
        break;
      case 'google.rpc.RetryInfo': {
        const delay = RetryInfo.decode(any.value).retryDelay;
        out.retryDelayMs = delay ? delay.seconds * 1000 + delay.nanos / 1_000_000 : 0;
        break;
      }
      case 'google.rpc.ErrorInfo': {
        const info = ErrorInfo.decode(any.value);
        out.errorInfo = { reason: info.reason, domain: info.domain, metadata: info.metadata };
        break;
      }
      case 'google.rpc.ResourceInfo': {
        const info = ResourceInfo.decode(any.value);
        out.resourceInfo = { resourceType: info.resourceType, resourceName: info.resourceName, description: info.description };
        break;
      }
    }
  }
  return out;
}
