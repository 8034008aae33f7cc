/** Whether `err` is what an aborted AbortSignal rejects with (Node's DOMException or abort-controller-x's AbortError). */
export function isAbortError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { name?: unknown }).name === 'AbortError';
}
