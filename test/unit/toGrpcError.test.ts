import assert from 'node:assert/strict';
import { ServerError, Status } from 'nice-grpc';
import pino from 'pino';
import {
  CancelledError,
  DeadlineExceededError,
  InvalidArgumentError,
  ModelLoadError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
} from '../../services/common/errors';
import { decodeStatusDetails } from '../../services/common/StatusDetails';
import { toGrpcError } from '../../services/common/toGrpcError';
import { UpstreamError } from '../../services/common/UpstreamError';

function capturingLog() {
  const lines: string[] = [];
  const log = pino({ level: 'error' }, { write: (line: string) => lines.push(line) });
  return { log, lines };
}

describe('toGrpcError', () => {
  const { log } = capturingLog();

  it('INVALID_ARGUMENT carries every field violation as google.rpc.BadRequest', () => {
    const err = new InvalidArgumentError([
      { field: 'sampling.temperature', description: 'must be >= 0' },
      { field: 'max_tokens', description: 'must be at least 1' },
    ]);
    const { error, statusDetails } = toGrpcError(err, log);
    assert.equal(error.code, Status.INVALID_ARGUMENT);
    const details = decodeStatusDetails(statusDetails!);
    assert.equal(details.code, Status.INVALID_ARGUMENT);
    assert.deepEqual(details.fieldViolations, err.violations);
  });

  it('RESOURCE_EXHAUSTED carries the retry delay as google.rpc.RetryInfo', () => {
    const { error, statusDetails } = toGrpcError(new ResourceExhaustedError('queue full', 1500), log);
    assert.equal(error.code, Status.RESOURCE_EXHAUSTED);
    assert.equal(decodeStatusDetails(statusDetails!).retryDelayMs, 1500);
  });

  it('NOT_FOUND names the resource', () => {
    const { error, statusDetails } = toGrpcError(new NotFoundError('model', 'nope'), log);
    assert.equal(error.code, Status.NOT_FOUND);
    const details = decodeStatusDetails(statusDetails!);
    assert.deepEqual(details.resourceInfo, { resourceType: 'model', resourceName: 'nope', description: '' });
    assert.equal(details.errorInfo?.reason, 'MODEL_NOT_FOUND');
  });

  it('maps each remaining typed error to its status', () => {
    const cases: [Error, Status][] = [
      [new UnavailableError('down'), Status.UNAVAILABLE],
      [new DeadlineExceededError('late'), Status.DEADLINE_EXCEEDED],
      [new CancelledError('gone'), Status.CANCELLED],
      [new ModelLoadError('/m.gguf', 'truncated'), Status.FAILED_PRECONDITION],
      [new DOMException('aborted', 'AbortError'), Status.CANCELLED],
    ];
    for (const [err, code] of cases) assert.equal(toGrpcError(err, log).error.code, code, err.name);
  });

  it('forwards a backend status unchanged, details included', () => {
    const bin = new Uint8Array([8, 3]);
    const { error, statusDetails } = toGrpcError(new UpstreamError(Status.INVALID_ARGUMENT, 'bad', '127.0.0.1:1', bin), log);
    assert.equal(error.code, Status.INVALID_ARGUMENT);
    assert.equal(error.details, 'bad');
    assert.equal(statusDetails, bin);
  });

  it('passes ServerError through', () => {
    const err = new ServerError(Status.ALREADY_EXISTS, 'x');
    assert.equal(toGrpcError(err, log).error, err);
  });

  it('turns anything else into INTERNAL with a fixed message; the stack goes to the log only', () => {
    const { log: capture, lines } = capturingLog();
    const { error, statusDetails } = toGrpcError(new TypeError('secret internals at /srv/x.ts'), capture, '/svc/Method');
    assert.equal(error.code, Status.INTERNAL);
    assert.ok(!error.details.includes('secret'));
    assert.equal(statusDetails, undefined);
    assert.equal(lines.length, 1);
    assert.match(lines[0], /secret internals/);
    assert.match(lines[0], /TypeError/);
  });
});
