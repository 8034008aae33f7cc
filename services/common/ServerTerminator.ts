import { ServerError, Status, type CallContext, type ServerMiddleware, type ServerMiddlewareCall } from 'nice-grpc-common';
import { isAbortError } from './isAbortError';

/** What the terminator adds to every call's context (the name nice-grpc-server-health looks for). */
export interface TerminatorContext {
  /** Marks the call as one that never ends on its own (a watch): terminate() ends it cleanly. */
  abortOnTerminate(): void;
}

/**
 * Ends calls on shutdown, the equivalent of nice-grpc-server-middleware-terminator (not in the registry here)
 * plus a second, forceful stage. A server's shutdown waits for every open call, so watch streams must be ended
 * (terminate) and, once the grace period is over, so must the generations still running (abortAll).
 */
export interface ServerTerminator {
  readonly middleware: ServerMiddleware<TerminatorContext>;
  /** Ends the calls that opted in with abortOnTerminate (and any that opt in later) with OK. */
  terminate(): void;
  /** Aborts every open call's signal; streams that were still running end with UNAVAILABLE. */
  abortAll(): void;
  /** Calls open now. */
  readonly openCalls: number;
}

interface OpenCall {
  controller: AbortController;
  watch: boolean;
  forced: boolean;
}

const SHUTTING_DOWN = 'the server is shutting down; retry on another instance';

/** A ServerError rather than a typed error, so the status is right wherever errorMiddleware sits. */
function shuttingDown(): ServerError {
  return new ServerError(Status.UNAVAILABLE, SHUTTING_DOWN);
}

export function ServerTerminator(): ServerTerminator {
  const open = new Set<OpenCall>();
  let terminated = false;
  let aborted = false;

  async function* middleware<Req, Res>(call: ServerMiddlewareCall<Req, Res, TerminatorContext>, context: CallContext) {
    const state: OpenCall = { controller: new AbortController(), watch: false, forced: false };
    // Our signal follows the client's, and can also be aborted by the server.
    const forward = () => state.controller.abort(context.signal.reason);
    if (context.signal.aborted) forward();
    else context.signal.addEventListener('abort', forward, { once: true });
    if (aborted) {
      state.forced = true;
      state.controller.abort();
    }
    open.add(state);
    try {
      const result = yield* call.next(call.request, {
        ...context,
        signal: state.controller.signal,
        abortOnTerminate() {
          state.watch = true;
          if (terminated) state.controller.abort();
        },
      });
      // A generation aborted by shutdown may still finish "normally" with a cancelled record; the client must
      // learn that it was cut short by the server, not that it completed.
      if (state.forced && call.responseStream) throw shuttingDown();
      return result;
    } catch (err) {
      if (state.watch && terminated && isAbortError(err)) return;
      if (state.forced && !context.signal.aborted) throw shuttingDown();
      throw err;
    } finally {
      open.delete(state);
      context.signal.removeEventListener('abort', forward);
    }
  }

  return {
    middleware,
    terminate() {
      terminated = true;
      for (const call of open) if (call.watch) call.controller.abort();
    },
    abortAll() {
      terminated = true;
      aborted = true;
      for (const call of open) {
        call.forced = !call.watch;
        call.controller.abort();
      }
    },
    get openCalls() {
      return open.size;
    },
  };
}
