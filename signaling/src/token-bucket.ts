/**
 * A token bucket: `ratePerSecond` tokens refill continuously up to `burst`; each event
 * takes one. Used per connection (every event) and per member (signals).
 */
export class TokenBucket {
  private tokens: number;
  private refilledAtMs: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    nowMs: number,
  ) {
    if (!(ratePerSecond > 0) || !(burst >= 1)) {
      throw new RangeError(
        `token bucket needs rate > 0 and burst >= 1 (${ratePerSecond}, ${burst})`,
      );
    }
    this.tokens = burst;
    this.refilledAtMs = nowMs;
  }

  /** Takes one token if there is one; false means the event is over the limit. */
  take(nowMs: number): boolean {
    const elapsedMs = Math.max(0, nowMs - this.refilledAtMs);
    this.tokens = Math.min(this.burst, this.tokens + (elapsedMs * this.ratePerSecond) / 1000);
    this.refilledAtMs = nowMs;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
