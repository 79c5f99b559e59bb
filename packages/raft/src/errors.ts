/**
 * Every failure the raft package reports is a `RaftError` with a machine-readable `code`.
 * Methods document which codes they throw; nothing else is thrown except `Invariant`,
 * which means a bug (in raft or in a Storage implementation) and must stop the group.
 */

export const RaftErrorCode = {
  /** A proposal was not accepted; `reason` says why. Retry elsewhere or later. */
  ProposalDropped: 'ProposalDropped',
  /** A read-index request was not accepted; `reason` says why. */
  ReadIndexDropped: 'ReadIndexDropped',
  /** `RawNode.step` was given a local-only message type (Hup, Beat, Prop, ...). */
  StepLocalMessage: 'StepLocalMessage',
  /** `RawNode.step` was given a response from a peer that is not in the configuration. */
  StepPeerNotFound: 'StepPeerNotFound',
  /** A message failed validation (wrong group, wrong recipient, malformed fields). */
  InvalidMessage: 'InvalidMessage',
  /** An argument was invalid (empty proposal, unknown transfer target, ...). */
  InvalidArgument: 'InvalidArgument',
  /** The Config was invalid; `message` names the field. */
  InvalidConfig: 'InvalidConfig',
  /** A configuration change could not be decoded or applied. */
  InvalidConfChange: 'InvalidConfChange',
  /** A method was called out of order (e.g. `ready()` twice without `advance()`). */
  InvalidState: 'InvalidState',
  /** Storage: the requested index precedes the first available entry (compacted away). */
  Compacted: 'Compacted',
  /** Storage: the requested index is beyond the last entry. */
  Unavailable: 'Unavailable',
  /** Storage: a snapshot older than the current one was offered. */
  SnapshotOutOfDate: 'SnapshotOutOfDate',
  /** Storage: no snapshot can be produced right now; raft retries later. */
  SnapshotTemporarilyUnavailable: 'SnapshotTemporarilyUnavailable',
  /** An internal invariant failed: a bug. The group must be stopped, not retried. */
  Invariant: 'Invariant',
} as const;
export type RaftErrorCode = (typeof RaftErrorCode)[keyof typeof RaftErrorCode];

/** Why a proposal or read-index request was dropped. */
export const DropReason = {
  /** No leader is known (election in progress or partitioned). */
  NoLeader: 'no-leader',
  /** The leader's uncommitted log would exceed `maxUncommittedEntriesBytes`. */
  UncommittedLogFull: 'uncommitted-log-full',
  /** A leadership transfer is in progress; proposals resume after it ends. */
  TransferInProgress: 'transfer-in-progress',
  /** This follower does not forward proposals (`disableProposalForwarding`). */
  ForwardingDisabled: 'forwarding-disabled',
  /** A configuration change is already proposed and not yet applied. */
  ConfChangePending: 'conf-change-pending',
  /** The configuration is joint: only a change that leaves it is accepted. */
  ConfAlreadyJoint: 'conf-already-joint',
  /** A leave-joint change was proposed while the configuration is not joint. */
  ConfNotJoint: 'conf-not-joint',
  /** The leader was removed from the configuration and no longer accepts proposals. */
  NotMember: 'not-member',
  /** Too many read-index requests are waiting (`maxPendingReadIndexRequests`). */
  ReadQueueFull: 'read-queue-full',
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];

export class RaftError extends Error {
  override readonly name = 'RaftError';
  readonly code: RaftErrorCode;
  /** Set for ProposalDropped and ReadIndexDropped. */
  readonly reason: DropReason | null;

  constructor(code: RaftErrorCode, message: string, reason: DropReason | null = null) {
    super(`${code}: ${message}`);
    this.code = code;
    this.reason = reason;
  }
}

/** Throws an Invariant error unless `condition` holds. */
export function invariant(condition: boolean, message: string): asserts condition {
  if (!condition) throw new RaftError(RaftErrorCode.Invariant, message);
}

export function isRaftError(e: unknown, code?: RaftErrorCode): e is RaftError {
  return e instanceof RaftError && (code === undefined || e.code === code);
}
