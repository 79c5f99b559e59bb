import { RaftError, RaftErrorCode } from './errors.ts';
import type { Prng } from './prng.ts';
import type { Storage } from './storage.ts';
import type { GroupId, NodeId } from './types.ts';

/**
 * How the leader serves read-index requests (thesis §6.4).
 * - 'safe': confirm leadership with a heartbeat round to a quorum per batch of reads.
 * - 'lease' (thesis §6.4.1): answer at once while the leader holds a lease: a quorum
 *   acknowledged a heartbeat round sent less than leaseTicks =
 *   ⌊(electionTick − 1) · 100 / (100 + maxTickDriftPercent)⌋ of its ticks ago; each such
 *   voter refuses votes (and campaigns) for electionTick of its own ticks after
 *   receiving it, and for electionTick after a restart. Without a lease a read takes a
 *   round, as 'safe'. Correct only if no node's tick rate exceeds another's by more than
 *   maxTickDriftPercent and every member uses the same electionTick and this option;
 *   requires checkQuorum. A leadership transfer ends the lease for the term. Off by default.
 */
export type ReadOnlyOption = 'safe' | 'lease';

export interface Config {
  /** This node's id; must not be empty. */
  readonly id: NodeId;
  /** The group this RawNode replicates; stamped on every outgoing message. */
  readonly groupId: GroupId;
  /** Where raft reads its persisted state (see Storage). */
  readonly storage: Storage;
  /** Randomness for election timeouts; inject a seeded generator for determinism. */
  readonly random: Prng;
  /**
   * Ticks without hearing from a leader before a follower campaigns; the actual timeout
   * is drawn uniformly from [electionTick, 2·electionTick) (§5.2). Must exceed heartbeatTick.
   */
  readonly electionTick: number;
  /** Ticks between leader heartbeats. */
  readonly heartbeatTick: number;
  /**
   * Last index the application has applied (restart); at least the storage snapshot's
   * index. Committed entries above it are delivered again, so pass the index the
   * application's durable state reflects. 0 means "as of the snapshot".
   */
  readonly applied?: number;
  /** Upper bound on entries per MsgApp, in bytes (at least one entry is always sent). Default 1 MiB. */
  readonly maxSizePerMsgBytes?: number;
  /** MsgApps in flight per follower while replicating (pipelining window). Default 256. */
  readonly maxInflightMsgs?: number;
  /** Bytes of entries in flight per follower; 0 = unlimited. Default 32 MiB. */
  readonly maxInflightBytes?: number;
  /**
   * Bytes of entry payload the leader holds uncommitted; proposals beyond it are dropped
   * with reason 'uncommitted-log-full' (a single proposal is always accepted when
   * nothing is uncommitted). Default 64 MiB.
   */
  readonly maxUncommittedEntriesBytes?: number;
  /** Bytes of committed entries handed out in one Ready (at least one entry). Default 16 MiB. */
  readonly maxCommittedSizePerReadyBytes?: number;
  /** Bytes of snapshot data per MsgSnap chunk. Default 256 KiB. */
  readonly maxSnapshotChunkBytes?: number;
  /** Snapshot chunks sent beyond what the follower acknowledged. Default 8. */
  readonly maxSnapshotInflightChunks?: number;
  /**
   * Largest snapshot a follower accepts for reassembly. Default 16 MiB: what a meshkv
   * store keeps as a snapshot's `data` (storage `limits.maxSnapshotDataBytes` is this
   * default), since the KV state travels beside Raft in the store's own chunks. A larger
   * snapshot reassembled here would only be refused when the host persists it.
   */
  readonly maxSnapshotBytes?: number;
  /**
   * Ticks without progress in a snapshot transfer after which the leader resends from
   * the last acknowledged chunk (lost chunks or acknowledgements), or gives up on a
   * follower that went quiet. Default electionTick.
   */
  readonly snapshotTimeoutTicks?: number;
  /** Read-index requests the leader queues at most. Default 4096. */
  readonly maxPendingReadIndexRequests?: number;
  /** Pre-vote phase before elections so a rejoining node does not disrupt (thesis §9.6). Default true. */
  readonly preVote?: boolean;
  /**
   * Leader steps down when it has not heard from a quorum within an election timeout;
   * followers then ignore votes while they have a live leader (thesis §6.2). Default true.
   */
  readonly checkQuorum?: boolean;
  /** Default 'safe'. */
  readonly readOnlyOption?: ReadOnlyOption;
  /**
   * Lease reads: how much faster than any other node's a node's tick rate may be, in
   * percent (the lease is shortened by this margin). Default 25.
   */
  readonly maxTickDriftPercent?: number;
  /** Followers drop proposals instead of forwarding them to the leader. Default false. */
  readonly disableProposalForwarding?: boolean;
  /** A leader removed from (or demoted in) the configuration steps down. Default true. */
  readonly stepDownOnRemoval?: boolean;
}

/** Config with every default filled in, and what follows from it. */
export type ResolvedConfig = Required<Config> & {
  /** Leader ticks a lease lasts after the round that renewed it was sent. */
  readonly leaseTicks: number;
};

const MiB = 1024 * 1024;

export const configDefaults = {
  applied: 0,
  maxSizePerMsgBytes: MiB,
  maxInflightMsgs: 256,
  maxInflightBytes: 32 * MiB,
  maxUncommittedEntriesBytes: 64 * MiB,
  maxCommittedSizePerReadyBytes: 16 * MiB,
  maxSnapshotChunkBytes: 256 * 1024,
  maxSnapshotInflightChunks: 8,
  maxSnapshotBytes: 16 * MiB,
  maxPendingReadIndexRequests: 4096,
  preVote: true,
  checkQuorum: true,
  readOnlyOption: 'safe' as ReadOnlyOption,
  maxTickDriftPercent: 25,
  disableProposalForwarding: false,
  stepDownOnRemoval: true,
} as const;

/** Fills defaults and validates; throws InvalidConfig naming the offending field. */
export function resolveConfig(config: Config): ResolvedConfig {
  const bad = (field: string, why: string): never => {
    throw new RaftError(RaftErrorCode.InvalidConfig, `${field} ${why}`);
  };
  if (typeof config.id !== 'string' || config.id.length === 0) bad('id', 'must be non-empty');
  if (!Number.isSafeInteger(config.groupId) || config.groupId < 0) {
    bad('groupId', 'must be a non-negative integer');
  }
  const positive = (field: string, value: number): void => {
    if (!Number.isSafeInteger(value) || value <= 0)
      bad(field, `must be a positive integer, got ${value}`);
  };
  positive('heartbeatTick', config.heartbeatTick);
  positive('electionTick', config.electionTick);
  if (config.electionTick <= config.heartbeatTick) bad('electionTick', 'must exceed heartbeatTick');
  const given: Required<Config> = {
    ...configDefaults,
    snapshotTimeoutTicks: config.electionTick,
    ...stripUndefined(config),
  };
  const drift = given.maxTickDriftPercent;
  if (!Number.isSafeInteger(drift) || drift < 0 || drift > 100) {
    bad('maxTickDriftPercent', `must be an integer in [0, 100], got ${drift}`);
  }
  const leaseTicks = Math.floor(((given.electionTick - 1) * 100) / (100 + drift));
  const resolved: ResolvedConfig = { ...given, leaseTicks };
  if (!Number.isSafeInteger(resolved.applied) || resolved.applied < 0) {
    bad('applied', 'must be a non-negative integer');
  }
  positive('maxSizePerMsgBytes', resolved.maxSizePerMsgBytes);
  positive('maxInflightMsgs', resolved.maxInflightMsgs);
  if (!Number.isSafeInteger(resolved.maxInflightBytes) || resolved.maxInflightBytes < 0) {
    bad('maxInflightBytes', 'must be a non-negative integer');
  }
  if (resolved.maxInflightBytes !== 0 && resolved.maxInflightBytes < resolved.maxSizePerMsgBytes) {
    bad('maxInflightBytes', 'must be 0 or at least maxSizePerMsgBytes');
  }
  positive('maxUncommittedEntriesBytes', resolved.maxUncommittedEntriesBytes);
  positive('maxCommittedSizePerReadyBytes', resolved.maxCommittedSizePerReadyBytes);
  positive('maxSnapshotChunkBytes', resolved.maxSnapshotChunkBytes);
  positive('maxSnapshotInflightChunks', resolved.maxSnapshotInflightChunks);
  positive('maxSnapshotBytes', resolved.maxSnapshotBytes);
  positive('snapshotTimeoutTicks', resolved.snapshotTimeoutTicks);
  positive('maxPendingReadIndexRequests', resolved.maxPendingReadIndexRequests);
  if (resolved.readOnlyOption !== 'safe' && resolved.readOnlyOption !== 'lease') {
    bad('readOnlyOption', "must be 'safe' or 'lease'");
  }
  if (resolved.readOnlyOption === 'lease' && !resolved.checkQuorum) {
    bad('readOnlyOption', "'lease' requires checkQuorum");
  }
  if (resolved.readOnlyOption === 'lease' && leaseTicks < 1) {
    bad('readOnlyOption', `'lease' needs a longer electionTick (lease of ${leaseTicks} ticks)`);
  }
  if (typeof resolved.random?.nextInt !== 'function') bad('random', 'must be a Prng');
  if (resolved.storage === undefined || resolved.storage === null) bad('storage', 'is required');
  return resolved;
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
