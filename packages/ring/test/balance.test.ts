// Balance of the default V over the M × Q matrix the design cares about (Node only: it
// hashes ~10^5 tokens). Member sets are the first ones `pnpm bench ring balance` uses, so
// the figures in the READMEs cover them.
import { expect } from 'chai';
import { DEFAULT_SETTINGS, Ring } from '../src/index.ts';
import { memberSet } from './reference.ts';

const N = DEFAULT_SETTINGS.replicationFactor;
const SETS = 5;

/** The most-loaded member's replicas over the mean min(N, M)·Q/M. */
function maxOverMean(ring: Ring, members: string[]): number {
  const placement = ring.placement(members);
  const loads = members.map((id) => placement.partitionsOf(id).length);
  const { partitions } = ring.settings;
  return Math.max(...loads) / ((Math.min(N, members.length) * partitions) / members.length);
}

/**
 * Q recommended per cluster size (packages/ring/README.md): the next power of two ≥ 25·M,
 * i.e. ≥ 75 replicas per node with N = 3, which kept max/mean ≤ 1.25 in all 100 measured
 * member sets with V = 128.
 */
const RECOMMENDED_PARTITIONS: Record<number, number> = { 5: 128, 10: 256, 50: 2048, 100: 4096 };
/**
 * The largest max/mean of `pnpm bench ring balance` (100 sets, 3 decimals; READMEs). The
 * sets tested here are among those, so a ratio above it means the placement changed.
 */
const MEASURED_WORST: Record<number, Record<number, number>> = {
  5: { 64: 1.276, 128: 1.211, 256: 1.159, 512: 1.143, 1024: 1.138, 2048: 1.13, 4096: 1.13 },
  10: { 64: 1.51, 128: 1.354, 256: 1.224, 512: 1.159, 1024: 1.143, 2048: 1.141, 4096: 1.15 },
  50: { 64: 3.385, 128: 2.344, 256: 1.953, 512: 1.53, 1024: 1.351, 2048: 1.229, 4096: 1.225 },
  100: { 64: 4.688, 128: 3.385, 256: 2.604, 512: 2.083, 1024: 1.628, 2048: 1.351, 4096: 1.245 },
};

describe('ring: balance (default V)', () => {
  for (const memberCount of [5, 10, 50, 100]) {
    it(`M=${memberCount}: max/mean ≤ 1.25 at the recommended Q, and as measured for Q=64..4096`, () => {
      for (let partitions = 64; partitions <= 4096; partitions *= 2) {
        const ring = new Ring({ ...DEFAULT_SETTINGS, partitions });
        for (let set = 0; set < SETS; set++) {
          const ratio = maxOverMean(ring, memberSet(set, memberCount));
          const where = `M=${memberCount} Q=${partitions} set=${set}: max/mean ${ratio.toFixed(3)}`;
          expect(ratio, where).to.be.at.least(1);
          if (partitions >= RECOMMENDED_PARTITIONS[memberCount]!) {
            expect(ratio, where).to.be.at.most(1.25);
          }
          expect(ratio, where).to.be.at.most(MEASURED_WORST[memberCount]![partitions]! + 0.0005);
        }
      }
    });
  }
});
