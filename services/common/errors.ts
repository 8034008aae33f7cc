/**
 * Typed errors thrown by moeflash code. Each maps to exactly one gRPC status in toGrpcError (services/common);
 * anything else is a bug and becomes INTERNAL with a fixed message.
 */

export interface FieldViolation {
  field: string;
  description: string;
}

export class MoeflashError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A request or option is invalid; `violations` names each offending field. */
export class InvalidArgumentError extends MoeflashError {
  readonly violations: FieldViolation[];
  constructor(violations: FieldViolation[] | FieldViolation) {
    const list = Array.isArray(violations) ? violations : [violations];
    super(list.map((v) => `${v.field}: ${v.description}`).join('; '));
    this.violations = list;
  }
  static field(field: string, description: string): InvalidArgumentError {
    return new InvalidArgumentError({ field, description });
  }
}

/** A named thing (model, file, request) does not exist. */
export class NotFoundError extends MoeflashError {
  constructor(
    readonly resourceType: string,
    readonly resourceName: string,
    detail?: string,
  ) {
    super(`${resourceType} '${resourceName}' not found${detail ? `: ${detail}` : ''}`);
  }
}

/** A bounded queue or budget is full; retry after `retryAfterMs`. */
export class ResourceExhaustedError extends MoeflashError {
  constructor(
    message: string,
    readonly retryAfterMs = 1000,
  ) {
    super(message);
  }
}

/** A dependency (backend, model still loading) cannot serve right now. */
export class UnavailableError extends MoeflashError {
  constructor(
    message: string,
    /** When to try again, if known (sent as RetryInfo and grpc-retry-pushback-ms). */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** A model file exists but cannot be used (not a GGUF, truncated, unsupported architecture). */
export class ModelLoadError extends MoeflashError {
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`cannot load model '${path}': ${reason}`);
  }
}

export class DeadlineExceededError extends MoeflashError {}

export class CancelledError extends MoeflashError {}
