import { RingError } from './errors.ts';
import { sortedMembers } from './members.ts';
import { Placement } from './placement.ts';
import { highWordOf } from './position.ts';
import { DEFAULT_SETTINGS, type RingSettings, validateSettings } from './settings.ts';
import { NO_TOKENS, type SortedTokens, sortedTokens } from './tokens.ts';

/**
 * Consistent hashing with Q fixed partitions placed on a sha256 ring (DESIGN.md,
 * "Partitioning"):
 * - a key's position is the first 8 bytes of sha256(utf-8 key), an unsigned 64-bit big
 *   endian number; its partition is the top log2(Q) bits of that position;
 * - member `id` owns V tokens at the positions of `${id}#${i}`, i in 0..V-1;
 * - partition p starts at p·2^64/Q; its replicas are the first N distinct members whose
 *   tokens are met walking clockwise from there (fewer members than N: all of them).
 * Tokens at equal positions are ordered by node id, so the result is a function of the
 * member set alone, the same in every environment.
 */
export class Ring {
  readonly settings: RingSettings;
  /** 32 - log2(Q): a partition is the high word of a position shifted right by this. */
  readonly #partitionShift: number;
  /** The sorted tokens of the last placement's members, reused by the next placement. */
  #lastTokens: SortedTokens = NO_TOKENS;

  constructor(settings: RingSettings = DEFAULT_SETTINGS) {
    this.settings = validateSettings(settings);
    this.#partitionShift = 32 - Math.log2(this.settings.partitions);
  }

  /** The partition of `key`: O(1), one sha256; independent of membership. */
  partitionOf(key: string): number {
    if (typeof key !== 'string') {
      throw new RingError(
        'invalid_key',
        `key must be a string, got ${key === null ? 'null' : typeof key}`,
      );
    }
    // `>>> 32` would shift by 0 in JavaScript, so Q = 1 needs its own case.
    return this.#partitionShift === 32 ? 0 : highWordOf(key) >>> this.#partitionShift;
  }

  /**
   * The placement of `members` (node ids in any order; the result depends only on the
   * set). Cost: V sha256 per member that was not in the previous call's set plus a sort of
   * their tokens, one linear merge of all M·V tokens, then Q binary searches over them.
   * Throws RingError('invalid_member') on an empty, too long, malformed or duplicate id.
   */
  placement(members: readonly string[]): Placement {
    const ids = sortedMembers(members);
    const tokens = sortedTokens(this.#lastTokens, ids, this.settings.tokensPerNode);
    // Keeping only the last member set's tokens bounds memory to one membership.
    this.#lastTokens = tokens;
    return new Placement(this.settings, ids, this.#replicaTable(tokens));
  }

  /** Per partition, the indices of its first min(N, M) distinct members clockwise. */
  #replicaTable({ ids, high, owner }: SortedTokens): Uint16Array {
    const { partitions, replicationFactor } = this.settings;
    const perPartition = Math.min(replicationFactor, ids.length);
    const table = new Uint16Array(partitions * perPartition);
    // seenIn[m] = partition + 1 once member m is a replica of that partition: O(1) distinctness.
    const seenIn = new Uint32Array(ids.length);
    for (let partition = 0; partition < partitions && perPartition > 0; partition++) {
      // Partition p starts at p·2^64/Q = (p·2^shift, 0) as (hi, lo); a token is at or after
      // that exactly when its high word is ≥ p·2^shift.
      let t = lowerBound(high, partition * 2 ** this.#partitionShift);
      let found = 0;
      // Every member has a token, so one lap finds min(N, M) distinct members.
      for (let steps = 0; found < perPartition && steps < high.length; steps++, t++) {
        if (t === high.length) t = 0;
        const m = owner[t]!;
        if (seenIn[m] === partition + 1) continue;
        seenIn[m] = partition + 1;
        table[partition * perPartition + found] = m;
        found++;
      }
    }
    return table;
  }
}

/** The first index whose value is ≥ `value` in ascending `values` (length if none). */
function lowerBound(values: Uint32Array, value: number): number {
  let low = 0;
  let high = values.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (values[mid]! < value) low = mid + 1;
    else high = mid;
  }
  return low;
}
