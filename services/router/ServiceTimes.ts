/**
 * How long a call of each model holds a backend slot, as an exponentially weighted mean of the calls that ended
 * (from the slot's grant to its release, streaming included). The weight favours the last ~10 calls so the figure
 * follows a change of request mix or of backend speed within seconds, without jumping on one odd call.
 */
export class ServiceTimes {
  private readonly meanMs = new Map<string, number>();

  constructor(private readonly weight = 0.1) {}

  record(model: string, ms: number): void {
    const mean = this.meanMs.get(model);
    this.meanMs.set(model, mean === undefined ? ms : mean + this.weight * (ms - mean));
  }

  /** The mean slot time of `model`'s calls; undefined before the first one ended. */
  mean(model: string): number | undefined {
    return this.meanMs.get(model);
  }
}
