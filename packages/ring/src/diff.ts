import { RingError } from './errors.ts';
import type { Placement } from './placement.ts';
import { sameSettings } from './settings.ts';

/** How one partition's replica set changes between two placements. */
export interface PartitionChange {
  readonly partition: number;
  /** Replicas in `after` but not in `before`, in `after`'s clockwise order. */
  readonly added: readonly string[];
  /** Replicas in `before` but not in `after`, in `before`'s clockwise order. */
  readonly removed: readonly string[];
}

/**
 * The partitions whose replica set differs between `before` and `after`, ascending by
 * partition; partitions whose replicas only changed order are not listed. This is what
 * the node turns into Raft membership changes. O(Q·N²) with N ≤ 5.
 * Throws RingError('settings_mismatch') if the placements use different settings.
 */
export function diff(before: Placement, after: Placement): PartitionChange[] {
  if (!sameSettings(before.settings, after.settings)) {
    throw new RingError(
      'settings_mismatch',
      `cannot diff placements with different settings: ${JSON.stringify(before.settings)} vs ${JSON.stringify(after.settings)}`,
    );
  }
  const changes: PartitionChange[] = [];
  for (let partition = 0; partition < before.settings.partitions; partition++) {
    const was = before.replicasOf(partition);
    const is = after.replicasOf(partition);
    const added = is.filter((id) => !was.includes(id));
    const removed = was.filter((id) => !is.includes(id));
    if (added.length > 0 || removed.length > 0) changes.push({ partition, added, removed });
  }
  return changes;
}
