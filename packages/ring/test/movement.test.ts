// Minimal movement (Node only: 100 random member sets per shape). A join moves replicas
// only to the newcomer, a leave moves only the leaver's replicas, and on average each
// moves N·Q/(M+1) replicas: the newcomer's (or leaver's) fair share.
import { expect } from 'chai';
import { DEFAULT_SETTINGS, diff, type PartitionChange, Ring } from '../src/index.ts';
import { memberSet } from './reference.ts';

const SETS = 100;

function moved(changes: PartitionChange[]): number {
  return changes.reduce((sum, change) => sum + change.added.length, 0);
}

describe('ring: minimal movement', () => {
  const shapes: [memberCount: number, partitions: number][] = [
    [5, 256],
    [10, 256],
    [50, 1024],
    [100, 4096],
  ];
  for (const [memberCount, partitions] of shapes) {
    it(`M=${memberCount} Q=${partitions}: joins move replicas only to the newcomer, leaves only the leaver's; ≈ N·Q/(M+1) each`, () => {
      const N = DEFAULT_SETTINGS.replicationFactor;
      const ring = new Ring({ ...DEFAULT_SETTINGS, partitions });
      let joinMoves = 0;
      let leaveMoves = 0;
      const violations: string[] = [];
      for (let set = 0; set < SETS; set++) {
        const members = memberSet(set, memberCount);
        const newcomer = `s${set}-joiner`;
        const before = ring.placement(members);
        const after = ring.placement([...members, newcomer]);
        const keys = Array.from({ length: 20 }, (_, i) => `s${set}-key-${i}`);
        const partitionsOfKeys = keys.map((key) => ring.partitionOf(key));

        // Checked in plain JavaScript (thousands of changes); reported all at once below.
        const joined = diff(before, after);
        for (const { partition, added, removed } of joined) {
          if (added.length !== 1 || added[0] !== newcomer || removed.length !== 1) {
            violations.push(`join, set ${set}, partition ${partition}: +${added} -${removed}`);
          }
        }
        if (moved(joined) !== after.partitionsOf(newcomer).length) {
          violations.push(`join, set ${set}: moved replicas are not exactly the newcomer's`);
        }
        joinMoves += moved(joined);

        // One of the M + 1 members (not the newcomer) leaves again.
        const leaver = members[set % memberCount]!;
        const left = diff(
          after,
          ring.placement([...members, newcomer].filter((id) => id !== leaver)),
        );
        for (const { partition, added, removed } of left) {
          if (removed.length !== 1 || removed[0] !== leaver || added.length !== 1) {
            violations.push(`leave, set ${set}, partition ${partition}: +${added} -${removed}`);
          }
        }
        if (left.map((c) => c.partition).join() !== after.partitionsOf(leaver).join()) {
          violations.push(`leave, set ${set}: changed partitions are not exactly the leaver's`);
        }
        leaveMoves += moved(left);

        if (keys.some((key, i) => ring.partitionOf(key) !== partitionsOfKeys[i])) {
          violations.push(`set ${set}: a key changed partition`);
        }
      }
      expect(violations).to.deep.equal([]);
      // Over random sets one member of M + 1 holds 1/(M+1) of the N·Q replicas on average.
      const expected = (N * partitions) / (memberCount + 1);
      for (const [what, total] of [
        ['join', joinMoves],
        ['leave', leaveMoves],
      ] as const) {
        const mean = total / SETS;
        expect(Math.abs(mean / expected - 1), `${what}: ${mean} moved vs ${expected}`).to.be.below(
          0.1,
        );
      }
    });
  }

  it('with fewer members than N a join only adds the newcomer and a leave only removes', () => {
    const ring = new Ring({ ...DEFAULT_SETTINGS, partitions: 64, replicationFactor: 5 });
    const before = ring.placement(memberSet(0, 3));
    const after = ring.placement([...memberSet(0, 3), 'joiner']);
    const joined = diff(before, after);
    expect(joined).to.have.length(64);
    for (const change of joined) expect(change).to.deep.include({ added: ['joiner'], removed: [] });
    expect(diff(after, before).every((c) => c.added.length === 0)).to.equal(true);
  });
});
