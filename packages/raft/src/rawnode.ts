import {
  asConfChangeV2,
  type ConfChange,
  type ConfChangeV2,
  decodeConfChange,
  encodeConfChange,
} from './confchange.ts';
import type { Config } from './config.ts';
import { isRaftError, RaftError, RaftErrorCode } from './errors.ts';
import {
  isLocalMessage,
  isResponseMessage,
  type Message,
  MessageType,
  messageTypeName,
  newMessage,
} from './message.ts';
import { NO_ENTRIES, Raft, type Role, type SoftState } from './raft.ts';
import type { ReadState } from './readonly.ts';
import type { ProgressState } from './tracker.ts';
import {
  type ConfState,
  type Entry,
  EntryType,
  type GroupId,
  type HardState,
  type NodeId,
  type Snapshot,
} from './types.ts';

/**
 * Everything the host must do after a batch of calls, in this order:
 *
 * 1. Persist `snapshot` (if not null; it replaces the log), then `entries` (appending,
 *    replacing any conflicting suffix; they follow the snapshot) and `hardState` (if not
 *    null) durably — one atomic write for all groups is fine. `mustSync` says whether an
 *    fsync-level write is required (term, vote, entries or a snapshot: the messages
 *    acknowledge them); a commit-index-only change may be written lazily.
 * 2. Send `messages`. They may only leave after step 1 is durable: vote grants and
 *    append acknowledgements promise durable state (Raft Figure 2). This simple contract
 *    ("persist everything in the Ready, then send") is the only one raft supports.
 * 3. Apply `snapshot` (if any) and then `committedEntries` to the state machine, in
 *    order; for a ConfChange entry call `RawNode.applyConfChange`. Serve `readStates`
 *    once the applied index reaches their `index`.
 * 4. Call `advance()`.
 *
 * `committedEntries` may include entries from `entries` of the same Ready; they are
 * applied after step 1 made them durable.
 */
export interface Ready {
  /** Leader or role changed since the last Ready; null if not. Not persisted. */
  readonly softState: SoftState | null;
  /** Term, vote or commit changed since the last Ready; null if not. */
  readonly hardState: HardState | null;
  /** Read-index requests now answered (see ReadState). */
  readonly readStates: readonly ReadState[];
  /**
   * Peers outside this node's configuration (as of its applied index; not even learners)
   * that asked for its vote since the last Ready (at most 64): raft ignored them. Either a
   * replica that missed its own removal (it was partitioned when the change committed),
   * or one added by a change this node has not applied yet. The host may answer "not a
   * member as of my configuration applied at index X" (see the README's removed replicas).
   */
  readonly nonMemberCandidates: readonly NodeId[];
  /** Entries to append to storage. */
  readonly entries: readonly Entry[];
  /** A snapshot received from the leader, to persist and apply; null if none. */
  readonly snapshot: Snapshot | null;
  /** Entries to apply to the state machine, in index order. */
  readonly committedEntries: readonly Entry[];
  /** Messages to send after persisting (each carries its `groupId` and `to`). */
  readonly messages: readonly Message[];
  /** Whether persisting needs a durable (synced) write: term, vote, entries or snapshot changed. */
  readonly mustSync: boolean;
}

/** Replication state of one member, as the leader tracks it. */
export interface ProgressStatus {
  readonly match: number;
  readonly next: number;
  readonly state: ProgressState;
  readonly isLearner: boolean;
  readonly recentActive: boolean;
  readonly pendingSnapshot: number;
  readonly inflightMsgs: number;
  readonly inflightBytes: number;
}

export interface Status {
  readonly id: NodeId;
  readonly groupId: GroupId;
  readonly term: number;
  readonly vote: NodeId | null;
  readonly commit: number;
  readonly applied: number;
  readonly lastIndex: number;
  readonly lead: NodeId | null;
  readonly role: Role;
  readonly leadTransferee: NodeId | null;
  readonly config: ConfState;
  /** Per-member progress; empty unless this node is the leader. */
  readonly progress: ReadonlyMap<NodeId, ProgressStatus>;
  /** Payload bytes appended by this leader and not yet committed. */
  readonly uncommittedBytes: number;
}

export type SnapshotStatus = 'finish' | 'failure';

/**
 * One Raft group's state machine, driven synchronously by its host: no timers, I/O or
 * promises inside. Time advances only through `tick()`; randomness comes from
 * `Config.random`. Not re-entrant: call it from one loop.
 *
 * Errors: methods throw RaftError; the codes each may throw are listed on it. A thrown
 * error leaves the node unchanged, except `Invariant`, after which it must be discarded.
 */
export class RawNode {
  private readonly raft: Raft;
  private prevSoftState: SoftState;
  private prevHardState: HardState;
  /** The Ready handed out and not yet advanced. */
  private outstanding: Ready | null = null;

  /**
   * Builds the node from `config.storage` (hard state, configuration, log). Throws
   * InvalidConfig, or Invariant if the storage is inconsistent.
   */
  constructor(config: Config) {
    this.raft = new Raft(config);
    this.prevSoftState = this.raft.softState();
    this.prevHardState = this.raft.hardState();
  }

  get id(): NodeId {
    return this.raft.id;
  }

  get groupId(): GroupId {
    return this.raft.groupId;
  }

  /** The leader this node knows of (null if none): `status().lead` without its allocations. */
  get lead(): NodeId | null {
    return this.raft.lead;
  }

  /** This node's role: `status().role` without its allocations (hosts check it per request). */
  get role(): Role {
    return this.raft.role;
  }

  /** The current term: `status().term` without its allocations. */
  get term(): number {
    return this.raft.term;
  }

  /** Advances logical time by one tick (election and heartbeat timeouts count ticks). */
  tick(): void {
    this.raft.tick();
  }

  /**
   * Starts an election now (pre-vote first if enabled). No-op for leaders and learners,
   * with a committed configuration change not yet applied, and — with lease reads —
   * while this node honours a leader's lease or within electionTick of starting.
   */
  campaign(): void {
    this.raft.step(this.local(MessageType.Hup));
  }

  /**
   * Proposes `data` for the log. On a follower it is forwarded to the leader; success
   * means only "accepted for now" — it may still be lost, so hosts match applied entries
   * to requests and time out. Throws ProposalDropped (reason: no-leader,
   * uncommitted-log-full, transfer-in-progress, forwarding-disabled, not-member) or
   * InvalidArgument.
   */
  propose(data: Uint8Array): void {
    if (!(data instanceof Uint8Array)) {
      throw new RaftError(RaftErrorCode.InvalidArgument, 'proposal data must be a Uint8Array');
    }
    this.proposeEntry({ term: 0, index: 0, type: EntryType.Normal, data });
  }

  /**
   * Proposes a membership change. It takes effect when the application applies the
   * committed entry and calls applyConfChange. Throws ProposalDropped (additionally:
   * conf-change-pending, conf-already-joint, conf-not-joint) or InvalidConfChange.
   */
  proposeConfChange(cc: ConfChange | ConfChangeV2): void {
    const data = encodeConfChange(cc);
    this.proposeEntry({ term: 0, index: 0, type: EntryType.ConfChange, data });
  }

  private proposeEntry(entry: Entry): void {
    const { groupId, id } = this.raft;
    this.raft.step(
      newMessage({ groupId, type: MessageType.Prop, from: id, to: id, entries: [entry] }),
    );
  }

  /**
   * Applies a committed configuration change (call it while applying the ConfChange
   * entry, in log order) and returns the new configuration, which the host persists
   * with its applied index. Throws InvalidConfChange (the change is then a no-op; every
   * replica rejects it the same way).
   */
  applyConfChange(cc: ConfChange | ConfChangeV2): ConfState {
    return this.raft.applyConfChange(asConfChangeV2(cc));
  }

  /**
   * Hands a message from the network to the state machine. Throws InvalidMessage (wrong
   * group or recipient, malformed), StepLocalMessage or StepPeerNotFound; the host drops
   * such a message and carries on. Forwarded proposals or reads the leader cannot take
   * are dropped silently (their origin times out).
   */
  step(m: Message): void {
    validateMessage(m, this.raft.groupId, this.raft.id);
    if (isLocalMessage(m.type)) {
      throw new RaftError(RaftErrorCode.StepLocalMessage, `${messageTypeName(m.type)} is local`);
    }
    if (isResponseMessage(m.type) && !this.raft.trk.progress.has(m.from)) {
      throw new RaftError(
        RaftErrorCode.StepPeerNotFound,
        `${messageTypeName(m.type)} from ${m.from}, not a member of group ${m.groupId}`,
      );
    }
    try {
      this.raft.step(m);
    } catch (e) {
      if (
        isRaftError(e, RaftErrorCode.ProposalDropped) ||
        isRaftError(e, RaftErrorCode.ReadIndexDropped)
      ) {
        return;
      }
      throw e;
    }
  }

  /**
   * Requests a linearizable read point (§6.4): a ReadState with this `context` appears in
   * a later Ready; reading the state machine once applied ≥ its index is linearizable.
   * Contexts need not be unique: every request gets its own ReadState. Throws
   * ReadIndexDropped (no-leader, read-queue-full); a request may also be lost silently
   * (e.g. leader change), so hosts time out.
   */
  readIndex(context: Uint8Array): void {
    if (!(context instanceof Uint8Array) || context.byteLength === 0) {
      throw new RaftError(
        RaftErrorCode.InvalidArgument,
        'readIndex context must be non-empty bytes',
      );
    }
    const { groupId, id } = this.raft;
    this.raft.step(newMessage({ groupId, type: MessageType.ReadIndex, from: id, to: id, context }));
  }

  /**
   * Asks the leader to hand leadership to `transferee` (thesis §3.10): it brings the
   * transferee's log up to date, then tells it to campaign at once. Proposals are dropped
   * meanwhile; the transfer is abandoned after an election timeout. A no-op if the
   * transferee already leads. Throws InvalidArgument if it is not a voter, InvalidState
   * if no leader is known.
   */
  transferLeader(transferee: NodeId): void {
    if (!this.raft.trk.isVoter(transferee)) {
      throw new RaftError(
        RaftErrorCode.InvalidArgument,
        `cannot transfer leadership to ${transferee}: not a voter of group ${this.raft.groupId}`,
      );
    }
    if (this.raft.lead === null) {
      throw new RaftError(RaftErrorCode.InvalidState, 'no leader known to transfer from');
    }
    const { groupId, id } = this.raft;
    this.raft.step(
      newMessage({ groupId, type: MessageType.TransferLeader, from: transferee, to: id }),
    );
  }

  /** Tells the leader a message to `id` could not be delivered: it stops pipelining to it. */
  reportUnreachable(id: NodeId): void {
    const { groupId } = this.raft;
    this.raft.step(
      newMessage({ groupId, type: MessageType.Unreachable, from: id, to: this.raft.id }),
    );
  }

  /**
   * Tells the leader how sending a snapshot to `id` ended, if the host knows (raft also
   * retries on its own after snapshotTimeoutTicks).
   */
  reportSnapshot(id: NodeId, status: SnapshotStatus): void {
    this.raft.step(
      newMessage({
        groupId: this.raft.groupId,
        type: MessageType.SnapStatus,
        from: id,
        to: this.raft.id,
        reject: status === 'failure',
      }),
    );
  }

  /** Whether ready() would return anything (false while a Ready is outstanding). */
  hasReady(): boolean {
    if (this.outstanding) return false;
    const r = this.raft;
    r.flushBroadcast();
    // Compared field by field: hasReady runs per group per round, allocating nothing.
    const ss = this.prevSoftState;
    if (r.lead !== ss.lead || r.role !== ss.role) return true;
    const hs = this.prevHardState;
    if (r.term !== hs.term || r.vote !== hs.vote || r.raftLog.committed !== hs.commit) return true;
    return (
      r.raftLog.hasPendingSnapshot() ||
      r.raftLog.unstable.entries.length > 0 ||
      r.msgs.length > 0 ||
      r.readStates.length > 0 ||
      r.nonMemberCandidates.length > 0 ||
      r.raftLog.hasNextCommittedEntries()
    );
  }

  /**
   * Takes the pending work (see Ready for what to do with it). Call advance() before the
   * next ready(). Throws InvalidState if a Ready is outstanding.
   */
  ready(): Ready {
    if (this.outstanding) {
      throw new RaftError(RaftErrorCode.InvalidState, 'ready() called again before advance()');
    }
    const r = this.raft;
    r.flushBroadcast();
    const prevHs = this.prevHardState;
    const softChanged = r.lead !== this.prevSoftState.lead || r.role !== this.prevSoftState.role;
    const hardChanged =
      r.term !== prevHs.term || r.vote !== prevHs.vote || r.raftLog.committed !== prevHs.commit;
    // The states are made only when they changed (a Ready per group per round).
    const ss = softChanged ? r.softState() : this.prevSoftState;
    const hs = hardChanged ? r.hardState() : prevHs;
    const unstable = r.raftLog.unstable.entries;
    const entries = unstable.length === 0 ? NO_ENTRIES : unstable.slice();
    const committedEntries = r.raftLog.nextCommittedEntries();
    const rd: Ready = {
      softState: softChanged ? ss : null,
      hardState: hardChanged ? hs : null,
      // The raft's arrays are handed over when not empty (and replaced below); an empty one
      // stays raft's, so the Ready gets a frozen empty one that later steps cannot fill.
      readStates: r.readStates.length > 0 ? r.readStates : NO_READ_STATES,
      nonMemberCandidates: r.nonMemberCandidates.length > 0 ? r.nonMemberCandidates : NO_CANDIDATES,
      entries,
      snapshot: r.raftLog.unstable.snapshot,
      committedEntries,
      messages: r.msgs.length > 0 ? r.msgs : NO_MESSAGES,
      // A snapshot is acknowledged in this Ready's messages, like entries: durable first.
      mustSync:
        entries.length > 0 ||
        r.raftLog.unstable.snapshot !== null ||
        hs.term !== prevHs.term ||
        hs.vote !== prevHs.vote,
    };
    if (r.msgs.length > 0) r.msgs = [];
    if (r.readStates.length > 0) r.readStates = [];
    if (r.nonMemberCandidates.length > 0) r.nonMemberCandidates = [];
    if (softChanged) this.prevSoftState = ss;
    if (hardChanged) this.prevHardState = hs;
    const last = committedEntries[committedEntries.length - 1];
    if (last) r.raftLog.applying = last.index;
    this.outstanding = rd;
    return rd;
  }

  /**
   * Acknowledges the outstanding Ready: its entries and snapshot are durable and its
   * committed entries applied. Throws InvalidState without an outstanding Ready.
   */
  advance(): void {
    const rd = this.outstanding;
    if (!rd) throw new RaftError(RaftErrorCode.InvalidState, 'advance() without a ready()');
    this.outstanding = null;
    const r = this.raft;
    const lastEntry = rd.entries[rd.entries.length - 1];
    if (lastEntry) r.raftLog.stableTo(lastEntry.index, lastEntry.term);
    if (rd.snapshot) {
      r.raftLog.stableSnapTo(rd.snapshot.metadata.index);
      r.appliedTo(rd.snapshot.metadata.index);
    }
    const lastCommitted = rd.committedEntries[rd.committedEntries.length - 1];
    if (lastCommitted) {
      r.appliedTo(lastCommitted.index);
      r.reduceUncommittedBytes(rd.committedEntries);
    }
    r.maybeAutoLeave();
  }

  status(): Status {
    const r = this.raft;
    const progress = new Map<NodeId, ProgressStatus>();
    if (r.role === 'leader') {
      for (const [id, pr] of r.trk.progress) {
        progress.set(id, {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          isLearner: pr.isLearner,
          recentActive: pr.recentActive,
          pendingSnapshot: pr.pendingSnapshot,
          inflightMsgs: pr.inflights.count(),
          inflightBytes: pr.inflights.sizeBytes(),
        });
      }
    }
    return {
      id: r.id,
      groupId: r.groupId,
      term: r.term,
      vote: r.vote,
      commit: r.raftLog.committed,
      applied: r.raftLog.applied,
      lastIndex: r.raftLog.lastIndex(),
      lead: r.lead,
      role: r.role,
      leadTransferee: r.leadTransferee,
      config: r.trk.confState(),
      progress,
      uncommittedBytes: r.uncommittedBytes,
    };
  }

  /**
   * Whether the group has no work in flight, so a host may stop ticking it (quiescence)
   * until a proposal or a message arrives: nothing to persist, send or apply, and — on a
   * leader — every member has acknowledged the whole log, which is committed, and the
   * last heartbeat round carried that commit index; no transfer or read is pending. A
   * follower is idle when it knows a leader and has nothing pending. Heartbeats can be
   * lost: a host that quiesces must wake a group on any message for it.
   */
  isIdle(): boolean {
    if (this.outstanding || this.hasReady()) return false;
    const r = this.raft;
    const log = r.raftLog;
    if (log.applied !== log.committed || r.lead === null) return false;
    if (r.role !== 'leader') return r.role === 'follower';
    if (r.leadTransferee !== null || r.readOnly.size() > 0) return false;
    if (log.committed !== log.lastIndex() || r.heartbeatCommit !== log.committed) return false;
    for (const pr of r.trk.progress.values()) if (pr.match !== log.lastIndex()) return false;
    return !r.trk.config.autoLeave;
  }

  private local(type: MessageType): Message {
    return newMessage({ groupId: this.raft.groupId, type, from: this.raft.id, to: this.raft.id });
  }
}

const NO_MESSAGES: readonly Message[] = Object.freeze([]);
const NO_READ_STATES: readonly ReadState[] = Object.freeze([]);
const NO_CANDIDATES: readonly NodeId[] = Object.freeze([]);

function isIndex(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

function bad(why: string): never {
  throw new RaftError(RaftErrorCode.InvalidMessage, why);
}

function badIndex(field: string): never {
  bad(`${field} is not a non-negative integer`);
}

/**
 * Structural validation of a message from the network; throws InvalidMessage. It runs on
 * every message: no closures or arrays are made here unless the message is bad.
 */
export function validateMessage(m: Message, groupId: GroupId, to: NodeId): void {
  if (m === null || typeof m !== 'object') bad('not an object');
  if (m.groupId !== groupId) bad(`for group ${m.groupId}, this is group ${groupId}`);
  if (m.to !== to) bad(`for ${m.to}, this is ${to}`);
  if (typeof m.from !== 'string' || m.from.length === 0) bad('empty sender');
  if (m.from === to) bad('message from self');
  if (messageTypeName(m.type).startsWith('Msg(')) bad(`unknown type ${m.type}`);
  // Field by field (a loop over their names read them by dynamic key, per message).
  if (!isIndex(m.term)) badIndex('term');
  if (!isIndex(m.logTerm)) badIndex('logTerm');
  if (!isIndex(m.index)) badIndex('index');
  if (!isIndex(m.commit)) badIndex('commit');
  if (!isIndex(m.rejectHint)) badIndex('rejectHint');
  if (!(m.context instanceof Uint8Array)) bad('context is not bytes');
  if (!Array.isArray(m.entries)) bad('entries is not an array');
  const local = m.type === MessageType.Prop || m.type === MessageType.ReadIndex;
  if (local !== (m.term === 0)) bad(`${messageTypeName(m.type)} with term ${m.term}`);
  for (let i = 0; i < m.entries.length; i++) {
    const e = m.entries[i]!;
    if (!(e?.data instanceof Uint8Array)) bad(`entry ${i} data is not bytes`);
    if (e.type !== EntryType.Normal && e.type !== EntryType.ConfChange)
      bad(`entry ${i} type ${e.type}`);
    if (m.type === MessageType.App) {
      if (e.index !== m.index + 1 + i) bad(`entry ${i} has index ${e.index}`);
      if (
        !isIndex(e.term) ||
        e.term > m.term ||
        e.term < (i === 0 ? m.logTerm : m.entries[i - 1]!.term)
      ) {
        bad(`entry ${i} has term ${e.term}`);
      }
    }
  }
  if (m.type === MessageType.Prop && m.entries.length === 0) bad('proposal without entries');
  if (m.type === MessageType.Prop) {
    for (const e of m.entries) {
      if (e.type !== EntryType.ConfChange) continue;
      try {
        decodeConfChange(e.data);
      } catch (err) {
        bad(`forwarded conf change: ${(err as Error).message}`);
      }
    }
  }
  if (m.type !== MessageType.App && m.type !== MessageType.Prop && m.entries.length > 0) {
    bad(`${messageTypeName(m.type)} with entries`);
  }
  if ((m.type === MessageType.Snap) !== (m.snapshot !== null)) bad('snapshot chunk misplaced');
  const c = m.snapshot;
  if (c) {
    if (!isIndex(c.offsetBytes) || !isIndex(c.totalBytes) || !(c.data instanceof Uint8Array)) {
      bad('malformed snapshot chunk');
    }
    if (c.offsetBytes + c.data.byteLength > c.totalBytes) bad('snapshot chunk beyond its total');
    const meta = c.metadata;
    if (!isIndex(meta?.index) || meta.index === 0 || !isIndex(meta.term) || meta.term > m.term) {
      bad('malformed snapshot metadata');
    }
    const cs = meta.confState;
    for (const ids of [cs?.voters, cs?.learners, cs?.votersOutgoing, cs?.learnersNext]) {
      if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string' || id.length === 0)) {
        bad('malformed snapshot configuration');
      }
    }
  }
}
