import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Replaces `path` with `data` so that a reader (or a crash) sees either the old file or the new one, never a mix:
 * writes `path.tmp` (mode `mode`), fsyncs it, renames it over `path` and fsyncs the directory. On any failure (a full
 * disk, a read-only directory, something in the way of the temporary file) the old file is left as it was, the
 * temporary file is removed where possible, and the error is thrown.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  const tmp = `${path}.tmp`;
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  let fd: number | undefined;
  let created = false;
  try {
    fd = openSync(tmp, 'w', mode);
    created = true;
    fchmodSync(fd, mode); // an old temporary file keeps its mode through O_TRUNC
    for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
    created = false;
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    if (created) {
      try {
        unlinkSync(tmp);
      } catch {
        // nothing more to do: the old file is intact either way
      }
    }
    throw e;
  }
  // Make the rename itself durable.
  const dirFd = openSync(dirname(path), 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}
