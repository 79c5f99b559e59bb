/**
 * Randomness is injected so a whole cluster replays bit for bit from one seed. Raft uses
 * it only for the randomized election timeout (§5.2).
 */
export interface Prng {
  /** A uniformly distributed integer in [0, n); n is a positive integer below 2^32. */
  nextInt(n: number): number;
}

/**
 * mulberry32: a tiny 32-bit generator, good enough for timeouts and simulation schedules
 * (not for cryptography). The same seed always gives the same sequence.
 */
export function mulberry32(seed: number): Prng {
  let state = seed >>> 0;
  const nextUint32 = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return {
    nextInt(n: number): number {
      if (!Number.isInteger(n) || n <= 0 || n > 0x1_0000_0000) {
        throw new RangeError(`nextInt: n must be an integer in [1, 2^32], got ${n}`);
      }
      // Multiply-shift keeps the result in range with negligible bias for n ≪ 2^32.
      return Math.floor((nextUint32() / 0x1_0000_0000) * n);
    },
  };
}
