/**
 * One hosted replica of one partition: its RawNode, the raft log view it reads (kept equal
 * to what the store holds durably), its partition state machine, and what the loop must
 * write for it next. The loop (loop.ts) drives it; nothing here awaits or sends.
 *
 * Durable-state mirror: `log` (a raft MemoryStorage) is changed only after the batch that
 * wrote the same change is durable, so rebuilding the RawNode from it (after a snapshot
 * stream failed) is a restart from durable state. `durableApplied` is the applied state
 * the store holds; `applied` the one in memory (ahead of it until the next batch).
 */
import {
  type ConfState,
  type Entry,
  EntryType,
  emptyConfState,
  type GroupId,
  type HardState,
  MemoryStorage,
  type NodeId,
  type Prng,
  RaftError,
  RaftErrorCode,
  RawNode,
  type Ready,
  type Snapshot,
} from '@meshkv/raft';
import type {
  AppliedState,
  GroupState,
  KvWrite,
  NodeState,
  NodeStorage,
  SessionWrite,
} from '@meshkv/storage';
import { PartitionMachine, type PartitionOptions } from './partition.ts';
import { nodeOfReplica, replicaId, replicaOfNode } from './replica-id.ts';
import type { RetirementRecord, Tombstone } from './tombstones.ts';

/** The raft settings every replica of a cluster shares (the loop ticks them together). */
export interface GroupRaftSettings {
  readonly electionTick: number;
  readonly heartbeatTick: number;
  readonly maxSizePerMsgBytes: number;
  readonly maxInflightMsgs: number;
  readonly maxUncommittedEntriesBytes: number;
  readonly maxPendingReadIndexRequests: number;
}

/**
 * The raft log of a replica. `snapshot()` hands raft a snapshot only when a KV stream of
 * exactly that state is open for it (snapshots.ts): otherwise it asks the loop for one
 * and throws SnapshotTemporarilyUnavailable, and raft retries later (raft.ts sendSnapshot).
 */
export class GroupLog extends MemoryStorage {
  /** Set by the replica: whether a stream for the stored snapshot can be handed out. */
  claimStream: (snapshotIndex: number) => boolean = () => false;
  /** Raft asked for a snapshot and none could be given: the loop makes one. */
  snapshotWanted = false;
  /**
   * The configuration as of the applied index raft restarts from (raft's Storage
   * contract: initialState's ConfState is the one at Config.applied, which may be newer
   * than the stored snapshot's).
   */
  appliedConfState: ConfState = emptyConfState;

  override initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: super.initialState().hardState, confState: this.appliedConfState };
  }

  override snapshot(): Snapshot {
    const stored = super.snapshot();
    if (stored.metadata.index > 0 && this.claimStream(stored.metadata.index)) return stored;
    this.snapshotWanted = true;
    throw new RaftError(
      RaftErrorCode.SnapshotTemporarilyUnavailable,
      'a snapshot with its KV stream is being prepared',
    );
  }

  /** The stored snapshot, whatever raft may be handed. */
  storedSnapshot(): Snapshot {
    return super.snapshot();
  }
}

/** Why a replica is being removed from this node. */
export type RemovalReason =
  | 'removed from the configuration'
  | 'told it is not a member'
  | 'not placed here, and silent'
  | 'not in its own configuration at restart'
  | 'superseded by a newer replica of the group';

/** A removed voter waiting for the new configuration to be durable (GroupReplica.retiring). */
export interface Retirement {
  /** The index of the configuration that removed this replica. */
  readonly removedAtIndex: number;
  /** Nodes whose replica applied it (or a later one) durably, as they told (NOT_MEMBER). */
  readonly confirmedBy: Set<NodeId>;
}

export class GroupReplica {
  readonly group: GroupId;
  /** Its Raft member id (replica-id.ts): `${nodeId}@${incarnation}`. */
  readonly replicaId: NodeId;
  log: GroupLog;
  raw: RawNode;
  machine: PartitionMachine;
  durableApplied: AppliedState;
  applied: AppliedState;
  /** The first batch that carries this group creates it in the store. */
  needsCreate: boolean;
  /** The next batch removes the group and all of its data; the replica is then dropped. */
  removal: RemovalReason | null = null;
  /**
   * A voter that applied its own removal (README "Removed replicas"): it keeps its log and
   * its vote, and answers the group's raft messages, until a majority of the voters of the
   * configuration that removed it applied that configuration durably. Until then a member
   * that crashed with the change committed but not durably applied (commit-only hard
   * states and applied state are written lazily) could come back in the old
   * configuration, and need this replica's vote and acknowledgements to commit it again.
   */
  retiring: Retirement | null = null;
  /**
   * A hard state that only moved the commit index, not yet written: it rides with the
   * group's next write (raft allows a commit-only change to be written lazily).
   */
  pendingHardState: HardState | null = null;
  /** KV and session writes applied since the last batch (written by the next one). */
  kv: KvWrite[] = [];
  sessions: SessionWrite[] = [];
  /** A Ready held back until its snapshot's KV stream is restored (snapshots.ts). */
  heldReady: Ready | null = null;
  /**
   * Hibernating (README "The loop"): not ticked until a message, a proposal or a read for
   * it arrives, or the link to its leader goes down.
   */
  quiesced = false;
  /** Ticks this replica has led an idle group in a row (it quiesces past a bound). */
  idleTicks = 0;
  /** The node's tick count when a Raft message for this replica last arrived. */
  lastHeardTick = 0;
  /** The node's tick count when this replica last asked the placement whether it is a member. */
  lastMemberQueryTick = 0;
  /**
   * The highest index of a ConfChange entry in the durable log (a change is pending while
   * it is above the applied index). A truncated suffix may leave it too high: the planner
   * then waits until the log grows past it, which is safe.
   */
  lastConfChangeIndex = 0;
  /** The node's tick count when `MeshNode.takeLeadership` last asked for this replica (-1: never). */
  leadershipAskedTick = -1;
  /** The term this replica leads by request: the planner leaves its leadership here (0: none). */
  keptLeadershipTerm = 0;
  private readonly raftSettings: GroupRaftSettings;
  private readonly random: Prng;
  private readonly partitionOptions: PartitionOptions | undefined;

  private constructor(
    init: {
      group: GroupId;
      replicaId: NodeId;
      log: GroupLog;
      durableApplied: AppliedState;
      sessions: ReadonlyMap<string, Uint8Array>;
      needsCreate: boolean;
    },
    storage: NodeStorage,
    raftSettings: GroupRaftSettings,
    random: Prng,
    partitionOptions: PartitionOptions | undefined,
  ) {
    this.group = init.group;
    this.replicaId = init.replicaId;
    this.log = init.log;
    this.durableApplied = init.durableApplied;
    this.applied = init.durableApplied;
    this.needsCreate = init.needsCreate;
    this.raftSettings = raftSettings;
    this.random = random;
    this.partitionOptions = partitionOptions;
    this.storage = storage;
    this.log.appliedConfState = init.durableApplied.confState;
    this.machine = this.newMachine(init.sessions);
    this.raw = this.newRawNode(init.durableApplied.index);
  }

  private readonly storage: NodeStorage;

  /**
   * A replica restarted from what the store holds. Its replica id is this node's member of
   * the applied configuration, or its retirement record's (it had applied its removal and
   * goes on retiring); a replica whose configuration does not hold this node otherwise (it
   * never got its snapshot, or missed its removal) restarts only to be removed.
   */
  static fromStored(
    state: GroupState,
    retirement: RetirementRecord | null,
    nodeId: NodeId,
    storage: NodeStorage,
    raftSettings: GroupRaftSettings,
    random: Prng,
    partitionOptions?: PartitionOptions,
  ): GroupReplica {
    const log = new GroupLog();
    if (state.snapshot !== null) log.applySnapshot(state.snapshot);
    else if (state.compacted.index > 0) {
      throw new Error(
        `group ${state.group}: log compacted at ${state.compacted.index} without a snapshot`,
      );
    }
    log.append(state.entries as Entry[]);
    log.setHardState(state.hardState);
    const own = replicaOfNode(state.appliedState.confState, nodeId);
    const retiring =
      own === null && retirement !== null && nodeOfReplica(retirement.replica) === nodeId
        ? retirement
        : null;
    const replica = new GroupReplica(
      {
        group: state.group,
        replicaId: own ?? retiring?.replica ?? replicaId(nodeId, 1),
        log,
        durableApplied: state.appliedState,
        sessions: state.sessions,
        needsCreate: false,
      },
      storage,
      raftSettings,
      random,
      partitionOptions,
    );
    replica.notePersisted(state.entries);
    if (retiring !== null) {
      replica.retiring = { removedAtIndex: retiring.removedAtIndex, confirmedBy: new Set() };
    } else if (own === null) {
      replica.removal = 'not in its own configuration at restart';
    }
    return replica;
  }

  /** Entries just made durable: keeps lastConfChangeIndex. */
  notePersisted(entries: readonly Entry[]): void {
    for (let i = entries.length - 1; i >= 0; i--) {
      const entry = entries[i]!;
      if (entry.type === EntryType.ConfChange) {
        if (entry.index > this.lastConfChangeIndex) this.lastConfChangeIndex = entry.index;
        return;
      }
    }
  }

  /**
   * A replica that is not in the store yet: empty (it waits for the leader's snapshot), or
   * bootstrapped with a snapshot holding `confState` (the first member of a cluster).
   * `bootstrap` is then what the creating batch writes.
   */
  static created(
    group: GroupId,
    id: NodeId,
    bootstrap: Snapshot | null,
    tombstone: Tombstone | null,
    storage: NodeStorage,
    raftSettings: GroupRaftSettings,
    random: Prng,
    partitionOptions?: PartitionOptions,
  ): GroupReplica {
    const log = new GroupLog();
    let durableApplied: AppliedState = { index: 0, term: 0, confState: emptyConfState };
    if (bootstrap !== null) {
      log.applySnapshot(bootstrap);
      durableApplied = bootstrap.metadata;
    }
    // A replica deleted here before resumes from its last term and vote (tombstones.ts).
    if (tombstone !== null)
      log.setHardState({ term: tombstone.term, vote: tombstone.vote, commit: 0 });
    return new GroupReplica(
      { group, replicaId: id, log, durableApplied, sessions: new Map(), needsCreate: true },
      storage,
      raftSettings,
      random,
      partitionOptions,
    );
  }

  /** Whether the replica holds the partition's data (it was bootstrapped or caught up). */
  get initialized(): boolean {
    return this.applied.index > 0;
  }

  get confState(): ConfState {
    return this.applied.confState;
  }

  /**
   * Rebuilds the RawNode from the raft log (durable state) at the machine's applied index:
   * a held Ready is dropped unsent (raft sends the snapshot again). The machine stays: a
   * group holding a Ready applies nothing, so it is exactly where the log says.
   */
  reload(): void {
    this.heldReady = null;
    this.log.appliedConfState = this.applied.confState;
    this.raw = this.newRawNode(this.applied.index);
  }

  /** After a restore became durable: the machine starts over from the restored state. */
  rebuildMachineAfterRestore(state: NodeState): void {
    const stored = state.groups.get(this.group);
    if (stored === undefined) throw new Error(`group ${this.group} missing after its restore`);
    this.machine = this.newMachine(stored.sessions);
  }

  private newMachine(sessions: ReadonlyMap<string, Uint8Array>): PartitionMachine {
    const group = this.group;
    const storage = this.storage;
    return new PartitionMachine({
      appliedIndex: this.applied.index,
      sessions,
      readStored: (key) => storage.get(group, key),
      options: this.partitionOptions,
    });
  }

  private newRawNode(appliedIndex: number): RawNode {
    const s = this.raftSettings;
    return new RawNode({
      id: this.replicaId,
      groupId: this.group,
      storage: this.log,
      random: this.random,
      electionTick: s.electionTick,
      heartbeatTick: s.heartbeatTick,
      applied: appliedIndex,
      maxSizePerMsgBytes: s.maxSizePerMsgBytes,
      maxInflightMsgs: s.maxInflightMsgs,
      maxUncommittedEntriesBytes: s.maxUncommittedEntriesBytes,
      maxPendingReadIndexRequests: s.maxPendingReadIndexRequests,
      preVote: true,
      checkQuorum: true,
      readOnlyOption: 'safe',
      stepDownOnRemoval: true,
    });
  }
}
