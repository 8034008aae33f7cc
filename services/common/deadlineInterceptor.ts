import { ServerInterceptingCall, type ServerInterceptor } from '@grpc/grpc-js';
import type { Metadata } from 'nice-grpc-common';

/** Metadata entry carrying the call's deadline (epoch milliseconds) from the interceptor to the handler. */
const DEADLINE_KEY = 'moeflash-deadline-ms';

/**
 * grpc-js server interceptor that hands each call's deadline to nice-grpc handlers. grpc-js consumes the
 * grpc-timeout header before handlers run and nice-grpc's CallContext has no deadline, yet the router must forward
 * the client's deadline to the backend. A client-sent entry of the same name is dropped: only the transport's
 * deadline counts.
 */
export const deadlineInterceptor: ServerInterceptor = (_method, call) =>
  new ServerInterceptingCall(call, {
    start(next) {
      next({
        onReceiveMetadata(metadata, nextMetadata) {
          metadata.remove(DEADLINE_KEY);
          const deadline = call.getDeadline();
          const ms = deadline instanceof Date ? deadline.getTime() : deadline;
          if (Number.isFinite(ms)) metadata.set(DEADLINE_KEY, String(ms));
          nextMetadata(metadata);
        },
      });
    },
  });

/** The deadline deadlineInterceptor recorded for this call (epoch ms), or undefined when the call has none. */
export function callDeadline(metadata: Metadata): number | undefined {
  const value = metadata.get(DEADLINE_KEY);
  if (typeof value !== 'string') return undefined;
  const ms = Number(value);
  return Number.isFinite(ms) ? ms : undefined;
}
