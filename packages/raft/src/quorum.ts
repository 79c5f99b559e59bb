import type { NodeId } from './types.ts';

export type VoteResult = 'pending' | 'lost' | 'won';

/** Reused by majorityCommitted: acked indexes of the voters, sorted in place. */
const ackedScratch: number[] = [];

/**
 * The highest index acknowledged by a majority of `voters` (a voter without an ack
 * counts as 0). An empty set returns Infinity so that it never limits a joint config.
 * It runs on every acknowledgement a leader handles: an insertion sort into a reused
 * array (voters are a handful), no comparator closure, no array per call.
 */
export function majorityCommitted(
  voters: ReadonlySet<NodeId>,
  acked: (id: NodeId) => number | undefined,
): number {
  if (voters.size === 0) return Number.POSITIVE_INFINITY;
  const indexes = ackedScratch;
  let n = 0;
  for (const id of voters) {
    const index = acked(id) ?? 0;
    // Descending order: shift the smaller ones right.
    let at = n++;
    while (at > 0 && indexes[at - 1]! < index) {
      indexes[at] = indexes[at - 1]!;
      at--;
    }
    indexes[at] = index;
  }
  // The (n/2+1)-th largest value is held by a majority.
  return indexes[Math.floor(n / 2)]!;
}

/** Outcome of an election among `voters` given the votes cast so far. Empty set: won. */
export function majorityVoteResult(
  voters: ReadonlySet<NodeId>,
  votes: ReadonlyMap<NodeId, boolean>,
): VoteResult {
  if (voters.size === 0) return 'won';
  let granted = 0;
  let missing = 0;
  for (const id of voters) {
    const v = votes.get(id);
    if (v === undefined) missing++;
    else if (v) granted++;
  }
  const quorum = Math.floor(voters.size / 2) + 1;
  if (granted >= quorum) return 'won';
  if (granted + missing >= quorum) return 'pending';
  return 'lost';
}

/**
 * A configuration of voters: `incoming` alone, or both `incoming` and `outgoing` during
 * joint consensus, when every decision needs a majority of each (thesis §4.3).
 */
export class JointConfig {
  constructor(
    readonly incoming: Set<NodeId> = new Set(),
    readonly outgoing: Set<NodeId> = new Set(),
  ) {}

  isJoint(): boolean {
    return this.outgoing.size > 0;
  }

  /** Every voter of either half. */
  ids(): Set<NodeId> {
    return new Set([...this.incoming, ...this.outgoing]);
  }

  has(id: NodeId): boolean {
    return this.incoming.has(id) || this.outgoing.has(id);
  }

  committed(acked: (id: NodeId) => number | undefined): number {
    return Math.min(
      majorityCommitted(this.incoming, acked),
      majorityCommitted(this.outgoing, acked),
    );
  }

  voteResult(votes: ReadonlyMap<NodeId, boolean>): VoteResult {
    const a = majorityVoteResult(this.incoming, votes);
    const b = majorityVoteResult(this.outgoing, votes);
    if (a === b) return a;
    if (a === 'lost' || b === 'lost') return 'lost';
    return 'pending';
  }

  clone(): JointConfig {
    return new JointConfig(new Set(this.incoming), new Set(this.outgoing));
  }
}
