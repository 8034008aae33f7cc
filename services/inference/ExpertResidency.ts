import { expertTensors } from '../common/expertLayout';
// the engine addon this process has loaded anyway (it carries the I/O functions too)
import { loadAddon } from '../engine/loadAddon';

/**
 * How much of a model's routed-expert bytes the page cache holds: what a replica scaled up from zero lacks until
 * the expert-store has warmed it, and what the router reads from GetLoad to prefer warm replicas (0.9 and above,
 * BackendPool). Measured with cachestat (mincore on older kernels) over the expert tensors' byte ranges at every
 * call, one syscall per tensor; the ranges come from the GGUF layout, read once per file. Undefined for a file
 * whose layout cannot be read (a split model's later shards are not counted: the first file's experts stand for
 * the model).
 */
export class ExpertResidency {
  private readonly ranges = new Map<string, Promise<{ triples: Float64Array; bytes: number } | undefined>>();

  /** Never fails: a measurement that cannot be made (file gone, not readable) is undefined, not an error of GetLoad. */
  async of(path: string): Promise<number | undefined> {
    const ranges = await this.rangesOf(path);
    if (!ranges || ranges.bytes === 0) return undefined;
    try {
      const { resident } = await loadAddon().residency([path], ranges.triples);
      return resident.reduce((sum, b) => sum + b, 0) / ranges.bytes;
    } catch {
      return undefined;
    }
  }

  private rangesOf(path: string): Promise<{ triples: Float64Array; bytes: number } | undefined> {
    let ranges = this.ranges.get(path);
    if (!ranges) {
      ranges = loadAddon()
        .readGgufLayout(path)
        .then((layout) => {
          const tensors = expertTensors(layout);
          return { triples: Float64Array.from(tensors.flatMap((t) => [0, t.offset, t.nbytes])), bytes: tensors.reduce((sum, t) => sum + t.nbytes, 0) };
        })
        .catch(() => undefined);
      this.ranges.set(path, ranges);
    }
    return ranges;
  }
}
