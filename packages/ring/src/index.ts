export { diff, type PartitionChange } from './diff.ts';
export { encodePlacement, placementDigest } from './encode.ts';
export { RingError, type RingErrorCode } from './errors.ts';
export { validateNodeId } from './members.ts';
export { Placement } from './placement.ts';
export { positionOf } from './position.ts';
export { Ring } from './ring.ts';
export {
  DEFAULT_SETTINGS,
  DEFAULT_TOKENS_PER_NODE,
  MAX_MEMBERS,
  MAX_NODE_ID_BYTES,
  MAX_PARTITIONS,
  MAX_REPLICATION_FACTOR,
  MAX_TOKENS_PER_NODE,
  type RingSettings,
  validateSettings,
} from './settings.ts';
