export { ErrorCode, isMeshKvError, MeshKvError, type MeshKvErrorDetails } from './errors.ts';
export type { LogView } from './loop.ts';
export {
  type DeleteOptions,
  type FollowerStatus,
  type GetOptions,
  type GroupStatus,
  MeshNode,
  type MeshNodeObserver,
  type MeshNodeOptions,
  type MeshNodeSettings,
  meshNodeDefaults,
  type NodeStatus,
  type PutOptions,
} from './mesh-node.ts';
export {
  type MemberProgress,
  movesInConfig,
  planReconfiguration,
  type RebalanceInput,
  type RebalanceStep,
  rebalanceDefaults,
  toConfChange,
} from './rebalancer.ts';
export { incarnationOf, nodeOfReplica, replicaId } from './replica-id.ts';
export { NODE_META_GROUP } from './tombstones.ts';
export {
  type AppliedResponse,
  type BooleanResponse,
  type DecodeFrameResult,
  type DirectRecord,
  decodeFrame,
  type ErrorResponse,
  FrameBuilder,
  type MemberQueryRecord,
  maxRecordBytes,
  NODE_WIRE_VERSION,
  type NotMemberRecord,
  type QuiesceRecord,
  type RaftRecord,
  type RelayedRecord,
  type RequestOp,
  type RequestRecord,
  type ResponseRecord,
  type SnapshotAbortRecord,
  type SnapshotChunkRecord,
  type SnapshotPullRecord,
  type ValueResponse,
  type WireErrorCode,
  type WireRecord,
  wireErrorCodes,
  wireLimits,
} from './wire.ts';
