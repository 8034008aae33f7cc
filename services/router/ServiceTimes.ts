/**
 * How long a call of each model holds a backend slot, from the calls that ran to their end (from the slot's grant to
 * its release, streaming included): per call, and per requested token, so that a call asking for 512 tokens is
 * expected to take about four times one asking for 128. Exponentially weighted means favouring the last ~10 calls,
 * so the figures follow a change of request mix or of backend speed within seconds without jumping on one odd call.
 * The per-token figure counts max_tokens, not the tokens made: calls that stop early make it an underestimate.
 */
export class ServiceTimes {
  private readonly perCall = new Map<string, number>();
  private readonly perToken = new Map<string, number>();

  constructor(private readonly weight = 0.1) {}

  record(model: string, ms: number, maxTokens: number): void {
    this.update(this.perCall, model, ms);
    this.update(this.perToken, model, ms / Math.max(1, maxTokens));
  }

  /** The mean slot time of `model`'s calls; undefined before the first one ended. */
  mean(model: string): number | undefined {
    return this.perCall.get(model);
  }

  /** The expected slot time of a call of `model` asking for `maxTokens`; undefined before the first one ended. */
  cost(model: string, maxTokens: number): number | undefined {
    const perToken = this.perToken.get(model);
    return perToken === undefined ? undefined : perToken * Math.max(1, maxTokens);
  }

  private update(means: Map<string, number>, model: string, value: number): void {
    const mean = means.get(model);
    means.set(model, mean === undefined ? value : mean + this.weight * (value - mean));
  }
}
