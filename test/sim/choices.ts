/**
 * The simulations' random choices, all from one seeded PRNG (so a seed replays): the
 * draws are made in call order, and nothing else may draw from it between two runs of a
 * seed.
 */
import type { Prng } from '@meshkv/raft';

export class Choices {
  constructor(readonly prng: Prng) {}

  /** An integer in [0, n). */
  random(n: number): number {
    return this.prng.nextInt(n);
  }

  chance(percent: number): boolean {
    return this.prng.nextInt(100) < percent;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from nothing');
    return items[this.prng.nextInt(items.length)]!;
  }

  /** The items in a random order. */
  shuffle<T>(items: readonly T[]): T[] {
    return items
      .map((item) => ({ item, rank: this.prng.nextInt(1_000_000) }))
      .sort((a, b) => a.rank - b.rank)
      .map(({ item }) => item);
  }
}
