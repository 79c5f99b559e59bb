import { RingError } from './errors.ts';
import type { RingSettings } from './settings.ts';

const NO_PARTITIONS: readonly number[] = Object.freeze([]);

/**
 * The partition → replicas table of one member set: computed once per membership epoch
 * (Ring.placement), then every lookup is O(1). Immutable; the arrays it returns are frozen
 * and shared, so callers must not (and cannot) change them.
 */
export class Placement {
  readonly settings: RingSettings;
  /** The member ids, sorted (JavaScript string order). */
  readonly members: readonly string[];
  /** Replicas per partition: min(N, M). */
  readonly replicasPerPartition: number;
  readonly #replicas: readonly (readonly string[])[];
  readonly #partitionsByMember: ReadonlyMap<string, readonly number[]>;

  /**
   * Internal: use Ring.placement. `members` are validated and sorted; `table` holds, per
   * partition, min(N, M) indices into `members`.
   */
  constructor(settings: RingSettings, members: readonly string[], table: Uint16Array) {
    const replicasPerPartition = Math.min(settings.replicationFactor, members.length);
    if (table.length !== settings.partitions * replicasPerPartition) {
      throw new Error('assertion failed: the replica table has min(N, M) entries per partition');
    }
    const replicas: (readonly string[])[] = new Array(settings.partitions);
    const partitionsByMember = new Map<string, number[]>(members.map((id) => [id, []]));
    for (let partition = 0; partition < settings.partitions; partition++) {
      const row: string[] = new Array(replicasPerPartition);
      for (let r = 0; r < replicasPerPartition; r++) {
        const nodeId = members[table[partition * replicasPerPartition + r]!]!;
        row[r] = nodeId;
        partitionsByMember.get(nodeId)!.push(partition);
      }
      replicas[partition] = Object.freeze(row);
    }
    for (const list of partitionsByMember.values()) Object.freeze(list);
    this.settings = settings;
    this.members = Object.freeze([...members]);
    this.replicasPerPartition = replicasPerPartition;
    this.#replicas = replicas;
    this.#partitionsByMember = partitionsByMember;
  }

  /**
   * The replicas of `partition`: the first min(N, M) distinct members met walking clockwise
   * from the partition's start, in that order. O(1). Throws RingError('invalid_partition').
   */
  replicasOf(partition: number): readonly string[] {
    const replicas = this.#replicas[partition];
    if (replicas === undefined || !Number.isInteger(partition)) {
      throw new RingError(
        'invalid_partition',
        `partition must be an integer in 0..${this.settings.partitions - 1}, got ${String(partition)}`,
      );
    }
    return replicas;
  }

  /** The partitions `nodeId` holds a replica of, ascending; empty for a non-member. O(1). */
  partitionsOf(nodeId: string): readonly number[] {
    return this.#partitionsByMember.get(nodeId) ?? NO_PARTITIONS;
  }

  /** Whether `nodeId` is a member of this placement. */
  has(nodeId: string): boolean {
    return this.#partitionsByMember.has(nodeId);
  }
}
