import { HealthState } from 'nice-grpc-server-health';

/**
 * grpc.health.v1 state of one process: liveness on the empty service name (SERVING while the process runs) and
 * readiness per gRPC service, which the process sets as it becomes able to serve.
 */
export interface ServiceHealth {
  readonly state: HealthState;
  /** Readiness of every named service; ignored once shutting down. */
  setReady(ready: boolean): void;
  /** Everything NOT_SERVING, liveness included, for good: the process is going away. */
  setShuttingDown(): void;
}

export function ServiceHealth(serviceNames: readonly string[]): ServiceHealth {
  const state = HealthState();
  state.setStatus('healthy', '');
  for (const name of serviceNames) state.setStatus('unhealthy', name);
  let shuttingDown = false;
  return {
    state,
    setReady(ready) {
      // A backend coming back during a drain must not advertise a server that is going away.
      if (shuttingDown) return;
      for (const name of serviceNames) state.setStatus(ready ? 'healthy' : 'unhealthy', name);
    },
    setShuttingDown() {
      shuttingDown = true;
      for (const name of serviceNames) state.setStatus('unhealthy', name);
      state.setStatus('unhealthy', '');
    },
  };
}
