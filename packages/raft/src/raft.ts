import {
  ConfChangeTransition,
  type ConfChangeV2,
  decodeConfChange,
  encodeConfChange,
  isLeaveJoint,
} from './confchange.ts';
import { type Config, type ResolvedConfig, resolveConfig } from './config.ts';
import { DropReason, invariant, isRaftError, RaftError, RaftErrorCode } from './errors.ts';
import { RaftLog } from './log.ts';
import {
  isResponseMessage,
  type Message,
  MessageType,
  messageTypeName,
  newMessage,
} from './message.ts';
import type { Prng } from './prng.ts';
import type { VoteResult } from './quorum.ts';
import { ReadOnly, type ReadState } from './readonly.ts';
import { ConfChanger, Progress, ProgressTracker } from './tracker.ts';
import {
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  isEmptyHardState,
  type NodeId,
  type Snapshot,
} from './types.ts';

export type Role = 'follower' | 'precandidate' | 'candidate' | 'leader';

/** Volatile state worth reporting to the host: who leads and what this node is. */
export interface SoftState {
  readonly lead: NodeId | null;
  readonly role: Role;
}

type CampaignType = 'preElection' | 'election' | 'transfer';

/** Non-members reported per Ready at most (they repeat their requests anyway). */
const MAX_NON_MEMBER_CANDIDATES = 64;

/** Marks a vote request sent because of a leadership transfer (it bypasses leases). */
const CAMPAIGN_TRANSFER = new TextEncoder().encode('CampaignTransfer');

function isCampaignTransfer(context: Uint8Array): boolean {
  if (context.byteLength !== CAMPAIGN_TRANSFER.byteLength) return false;
  return context.every((b, i) => b === CAMPAIGN_TRANSFER[i]);
}

function isMemberOf(cs: ConfState, id: NodeId): boolean {
  return [cs.voters, cs.learners, cs.votersOutgoing].some((ids) => ids.includes(id));
}

function payloadBytes(entries: readonly Entry[]): number {
  let n = 0;
  for (const e of entries) n += e.data.byteLength;
  return n;
}

type Outgoing = Pick<Message, 'type' | 'to'> & Partial<Message>;

/** Shared empty fields of messages and Readies (frozen: nobody may fill them). */
export const NO_ENTRIES: readonly Entry[] = Object.freeze([]);
const NO_BYTES = new Uint8Array(0);

interface SnapshotAssembly {
  readonly from: NodeId;
  readonly term: number;
  readonly index: number;
  readonly snapTerm: number;
  readonly data: Uint8Array;
  receivedBytes: number;
}

/**
 * The Raft state machine of one group (etcd-io/raft raft.go). Use it through RawNode,
 * which adds the Ready/advance protocol and input validation.
 */
export class Raft {
  readonly id: NodeId;
  readonly groupId: number;
  readonly cfg: ResolvedConfig;
  term = 0;
  vote: NodeId | null = null;
  readonly raftLog: RaftLog;
  readonly trk: ProgressTracker;
  role: Role = 'follower';
  /** This node is a learner in the current configuration (it never campaigns). */
  isLearner = false;
  lead: NodeId | null = null;
  /** Target of a leadership transfer in progress (leader only). */
  leadTransferee: NodeId | null = null;
  /** Only one conf change may be pending (proposed, not yet applied); this is its index. */
  pendingConfIndex = 0;
  /** Payload bytes appended by this leader and not yet committed (flow control). */
  uncommittedBytes = 0;
  readOnly = new ReadOnly();
  /** Read-index requests received before this leader committed an entry of its term. */
  private pendingReadIndexMessages: Message[] = [];
  msgs: Message[] = [];
  readStates: ReadState[] = [];
  /** Nodes outside the configuration that asked for our vote since the last Ready. */
  nonMemberCandidates: NodeId[] = [];
  electionElapsed = 0;
  heartbeatElapsed = 0;
  /** Ticks since this node became leader (read rounds are stamped with it). */
  leaderTicks = 0;
  /** Ticks since this node started, up to electionTick (the vote lease of a restart). */
  private startupTicks = 0;
  /**
   * Lease reads: the leader tick at which the newest round a quorum acknowledged was
   * sent. Every voter that acknowledged it refuses votes for electionTick of its own
   * ticks after receiving it, so no other leader exists before leaseTicks later.
   */
  private leaseStartTick = Number.NEGATIVE_INFINITY;
  /** A TimeoutNow was sent this term: its forced election ignores leases, so none holds. */
  private leaseRevoked = false;
  randomizedElectionTimeout = 0;
  /** Commit index the last heartbeat round carried to every member (see RawNode.isIdle). */
  heartbeatCommit = 0;
  private readonly random: Prng;
  private assembly: SnapshotAssembly | null = null;
  /** Entries were appended or the commit index advanced since the last broadcast (leader). */
  private broadcastPending = false;
  /** Read-index requests wait for a heartbeat round (leader, safe reads). */
  private readHeartbeatPending = false;

  constructor(config: Config) {
    this.cfg = resolveConfig(config);
    this.id = this.cfg.id;
    this.groupId = this.cfg.groupId;
    this.random = this.cfg.random;
    this.raftLog = new RaftLog(this.cfg.storage, this.cfg.maxCommittedSizePerReadyBytes);
    this.trk = new ProgressTracker(this.cfg.maxInflightMsgs, this.cfg.maxInflightBytes);
    const { hardState, confState } = this.cfg.storage.initialState();
    const restored = ConfChanger.restore(this.trk, this.raftLog.lastIndex(), confState);
    this.switchToConfig(restored);
    if (!isEmptyHardState(hardState)) this.loadState(hardState);
    if (this.cfg.applied > 0) this.raftLog.appliedTo(this.cfg.applied);
    this.becomeFollower(this.term, null);
  }

  private loadState(hs: HardState): void {
    if (hs.commit < this.raftLog.committed || hs.commit > this.raftLog.lastIndex()) {
      throw new RaftError(
        RaftErrorCode.Invariant,
        `hard state commit ${hs.commit} outside [${this.raftLog.committed}, ${this.raftLog.lastIndex()}]`,
      );
    }
    this.raftLog.committed = hs.commit;
    this.term = hs.term;
    this.vote = hs.vote;
  }

  softState(): SoftState {
    return { lead: this.lead, role: this.role };
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.raftLog.committed };
  }

  // ---- sending ----

  /**
   * Queues `m`, stamped with this group, this node as sender unless `m.from` is set, and
   * the term. `to` and `term` default to m's; forwarding a request to the leader passes
   * the leader and 0, and every other field goes as it came.
   */
  private send(m: Outgoing, to: NodeId = m.to, term: number = m.term ?? 0): void {
    const isVoteType =
      m.type === MessageType.Vote ||
      m.type === MessageType.VoteResp ||
      m.type === MessageType.PreVote ||
      m.type === MessageType.PreVoteResp;
    if (isVoteType) {
      // Vote messages carry the term they are about, which may differ from ours.
      invariant(term !== 0, `${messageTypeName(m.type)} without a term`);
    } else {
      invariant(term === 0, `${messageTypeName(m.type)} must not set a term`);
      // Proposals and read requests are forwarded as they are: not tied to a term.
      if (m.type !== MessageType.Prop && m.type !== MessageType.ReadIndex) term = this.term;
    }
    // Every field written out: `{ ...m, groupId, from, term }` cost ~2 µs per message on
    // Node 20, the top of the profile (bench/README.md, ## raft). Built here rather than by
    // newMessage (one object less per message), in newMessage's field order (one shape).
    const message: Message = {
      groupId: this.groupId,
      type: m.type,
      from: m.from ?? this.id,
      to,
      term,
      logTerm: m.logTerm ?? 0,
      index: m.index ?? 0,
      entries: m.entries ?? NO_ENTRIES,
      commit: m.commit ?? 0,
      reject: m.reject ?? false,
      rejectHint: m.rejectHint ?? 0,
      context: m.context ?? NO_BYTES,
      snapshot: m.snapshot ?? null,
    };
    this.msgs.push(message);
  }

  private sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  /**
   * Sends entries (or a snapshot) to `to` if flow control allows. With `sendIfEmpty`
   * false nothing is sent when there are no new entries. Returns whether it sent.
   */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.trk.progress.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.raftLog.term(prevIndex);
    if (prevTerm === undefined) return this.sendSnapshot(to, pr);
    let entries: Entry[];
    try {
      entries = this.raftLog.entriesFrom(pr.next, this.cfg.maxSizePerMsgBytes);
    } catch (e) {
      if (isRaftError(e, RaftErrorCode.Compacted)) return this.sendSnapshot(to, pr);
      throw e;
    }
    if (entries.length === 0 && !sendIfEmpty) return false;
    // One MsgApp per follower per Ready where two would say the same (bench/README.md,
    // node, session 7): a commit-only append after an append of this Ready that ends at
    // prevIndex raises that one's commit instead; entries after a commit-only append of this
    // Ready (same prevIndex) take its place. The follower then appends and commits exactly
    // as with both, and answers once. Only in replicate state: a probe is one message.
    const queued = pr.state === 'replicate' ? this.queuedAppendEndingAt(to, prevIndex) : -1;
    if (queued >= 0 && entries.length === 0) {
      // Not yet handed out by a Ready: raft's own object to change (no copy, a spread is µs).
      (this.msgs[queued] as { commit: number }).commit = this.raftLog.committed;
      return true;
    }
    if (entries.length === 0 && pr.state === 'replicate' && pr.match === prevIndex) {
      // Nothing to append and everything acknowledged: the commit alone, unanswered.
      this.send({
        type: MessageType.Commit,
        to,
        index: prevIndex,
        logTerm: prevTerm,
        commit: this.raftLog.committed,
      });
      return true;
    }
    this.send({
      type: MessageType.App,
      to,
      index: prevIndex,
      logTerm: prevTerm,
      entries,
      commit: this.raftLog.committed,
    });
    if (queued >= 0 && this.msgs[queued]!.entries.length === 0)
      this.msgs[queued] = this.msgs.pop()!;
    pr.sentEntries(entries.length, payloadBytes(entries));
    return true;
  }

  /**
   * The position in `msgs` (not yet taken by a Ready) of the latest MsgApp of this term to
   * `to`, if its last entry is at `index`; else -1. Heartbeats queued after it do not
   * matter (they only carry a commit the follower matches); any other message to `to`
   * ends the search.
   */
  private queuedAppendEndingAt(to: NodeId, index: number): number {
    const msgs = this.msgs;
    for (let i = msgs.length - 1; i >= 0; i--) {
      const m = msgs[i]!;
      if (m.to !== to || m.type === MessageType.Heartbeat) continue;
      if ((m.type !== MessageType.App && m.type !== MessageType.Commit) || m.term !== this.term) {
        return -1;
      }
      return m.index + m.entries.length === index ? i : -1;
    }
    return -1;
  }

  /** Starts sending the storage's snapshot to `to`, chunk by chunk. */
  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    // A follower we have not heard from may be down; do not push a snapshot into the void.
    if (!pr.recentActive) return false;
    let snapshot: Snapshot;
    try {
      snapshot = this.raftLog.snapshot();
    } catch (e) {
      if (isRaftError(e, RaftErrorCode.SnapshotTemporarilyUnavailable)) return false;
      throw e;
    }
    invariant(snapshot.metadata.index > 0, `need a non-empty snapshot to catch up ${to}`);
    pr.becomeSnapshot(snapshot);
    this.sendSnapshotChunks(to, pr);
    return true;
  }

  /**
   * Sends the next chunks of the snapshot in transfer, at most maxSnapshotInflightChunks
   * beyond what the follower acknowledged (flow control: a large snapshot must not flood
   * the transport's bounded queues).
   */
  private sendSnapshotChunks(to: NodeId, pr: Progress): void {
    const snapshot = pr.snapshot!;
    const total = snapshot.data.byteLength;
    const chunk = this.cfg.maxSnapshotChunkBytes;
    const window = chunk * this.cfg.maxSnapshotInflightChunks;
    while (!pr.snapshotAllSent && pr.snapshotNextOffset - pr.snapshotAckedBytes < window) {
      const offset = pr.snapshotNextOffset;
      const data = snapshot.data.subarray(offset, Math.min(total, offset + chunk));
      this.send({
        type: MessageType.Snap,
        to,
        snapshot: { metadata: snapshot.metadata, offsetBytes: offset, totalBytes: total, data },
      });
      pr.snapshotNextOffset += data.byteLength;
      if (pr.snapshotNextOffset >= total) pr.snapshotAllSent = true;
    }
  }

  private sendHeartbeat(to: NodeId, context: Uint8Array | null): void {
    const pr = this.trk.progress.get(to)!;
    // A follower may not have the leader's commit index yet: never tell it more than it matches.
    this.send({
      type: MessageType.Heartbeat,
      to,
      commit: Math.min(pr.match, this.raftLog.committed),
      context: context ?? undefined,
    });
  }

  private bcastAppend(): void {
    for (const id of this.trk.ids()) if (id !== this.id) this.sendAppend(id);
  }

  /**
   * Sends what proposals, commit advances and reads left pending, once per Ready: many
   * proposals between two Readies then travel in one MsgApp per follower (up to
   * maxSizePerMsgBytes, pipelined within the inflight window) instead of one each, and
   * many reads share one heartbeat round.
   */
  flushBroadcast(): void {
    const appends = this.broadcastPending;
    const heartbeats = this.readHeartbeatPending;
    this.broadcastPending = false;
    this.readHeartbeatPending = false;
    if (this.role !== 'leader') return;
    if (appends) {
      for (const id of this.trk.ids()) {
        if (id === this.id) continue;
        this.sendAppend(id);
        while (this.maybeSendAppend(id, false)) {}
      }
    }
    if (heartbeats) this.bcastHeartbeat();
  }

  private bcastHeartbeat(): void {
    // A round for waiting reads: every heartbeat while reads wait starts one, as acks of
    // an earlier round may be lost. The leader's own acknowledgement counts.
    // With lease reads every heartbeat is a round: it renews the lease.
    const round = this.readOnly.size() > 0 || this.cfg.readOnlyOption === 'lease';
    const context = round ? this.readOnly.startRound(this.id, this.leaderTicks) : null;
    let carried = this.raftLog.committed;
    for (const id of this.trk.ids()) {
      if (id === this.id) continue;
      this.sendHeartbeat(id, context);
      carried = Math.min(carried, this.trk.progress.get(id)!.match);
    }
    this.heartbeatCommit = carried;
  }

  // ---- state transitions ----

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = null;
    }
    this.lead = null;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.leaderTicks = 0;
    this.leaseStartTick = Number.NEGATIVE_INFINITY;
    this.leaseRevoked = false;
    this.randomizedElectionTimeout =
      this.cfg.electionTick + this.random.nextInt(this.cfg.electionTick);
    this.leadTransferee = null;
    this.trk.resetVotes();
    const last = this.raftLog.lastIndex();
    for (const [id, pr] of this.trk.progress) {
      const fresh = new Progress(
        last + 1,
        this.cfg.maxInflightMsgs,
        this.cfg.maxInflightBytes,
        pr.isLearner,
      );
      if (id === this.id) fresh.match = last;
      this.trk.progress.set(id, fresh);
    }
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    this.readOnly = new ReadOnly();
    this.pendingReadIndexMessages = [];
    this.heartbeatCommit = 0;
    this.assembly = null;
  }

  becomeFollower(term: number, lead: NodeId | null): void {
    this.reset(term);
    this.lead = lead;
    this.role = 'follower';
  }

  private becomePreCandidate(): void {
    invariant(this.role !== 'leader', 'leader cannot become pre-candidate');
    // Term and vote stay: a pre-election changes nothing durable (thesis §9.6).
    this.trk.resetVotes();
    this.lead = null;
    this.role = 'precandidate';
  }

  private becomeCandidate(): void {
    invariant(this.role !== 'leader', 'leader cannot become candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = 'candidate';
  }

  private becomeLeader(): void {
    invariant(this.role !== 'follower', 'follower cannot become leader directly');
    this.reset(this.term);
    this.lead = this.id;
    this.role = 'leader';
    const self = this.trk.progress.get(this.id)!;
    self.becomeReplicate();
    self.recentActive = true;
    // Conservatively treat the whole log as possibly holding an unapplied conf change.
    this.pendingConfIndex = this.raftLog.lastIndex();
    // An entry of the new term lets earlier entries commit (§5.4.2) and ReadIndex work (§6.4).
    const appended = this.appendEntries([
      { term: 0, index: 0, type: EntryType.Normal, data: new Uint8Array(0) },
    ]);
    invariant(appended, 'empty entry rejected on leader election');
  }

  private promotable(): boolean {
    const pr = this.trk.progress.get(this.id);
    return pr !== undefined && !pr.isLearner && !this.raftLog.hasPendingSnapshot();
  }

  private hup(type: CampaignType): void {
    if (this.role === 'leader' || !this.promotable()) return;
    // Our own vote counts too: with lease reads, no campaign (not even one the host asks
    // for) while we honour a leader's lease. A transfer is the leader's own wish.
    if (this.cfg.readOnlyOption === 'lease' && type !== 'transfer' && this.inVoteLease()) return;
    // A conf change committed but not applied may change who may vote: wait for it.
    if (this.hasUnappliedConfChanges()) return;
    this.campaign(type);
  }

  private hasUnappliedConfChanges(): boolean {
    if (this.raftLog.applied >= this.raftLog.committed) return false;
    const entries = this.raftLog.slice(
      this.raftLog.applied + 1,
      this.raftLog.committed + 1,
      Number.POSITIVE_INFINITY,
    );
    return entries.some((e) => e.type === EntryType.ConfChange);
  }

  private campaign(type: CampaignType): void {
    let term: number;
    let voteType: MessageType;
    if (type === 'preElection') {
      this.becomePreCandidate();
      voteType = MessageType.PreVote;
      // Ask for votes at the term we would campaign in, without adopting it.
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      voteType = MessageType.Vote;
      term = this.term;
    }
    if (this.poll(this.id, true) === 'won') {
      // Single-voter group: won on our own vote.
      if (type === 'preElection') this.campaign('election');
      else this.becomeLeader();
      return;
    }
    const voters = [...this.trk.config.voters.ids()].sort();
    for (const id of voters) {
      if (id === this.id) continue;
      this.send({
        type: voteType,
        to: id,
        term,
        index: this.raftLog.lastIndex(),
        logTerm: this.raftLog.lastTerm(),
        context: type === 'transfer' ? CAMPAIGN_TRANSFER : undefined,
      });
    }
  }

  private poll(id: NodeId, granted: boolean): VoteResult {
    this.trk.recordVote(id, granted);
    return this.trk.tallyVotes().result;
  }

  // ---- ticks ----

  tick(): void {
    if (this.startupTicks < this.cfg.electionTick) this.startupTicks++;
    if (this.role === 'leader') this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      // Campaign before resetting the count: it shows the vote lease has lapsed.
      this.step(
        newMessage({ groupId: this.groupId, type: MessageType.Hup, from: this.id, to: this.id }),
      );
      this.electionElapsed = 0;
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    this.leaderTicks++;
    if (this.electionElapsed >= this.cfg.electionTick) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum) {
        this.step(
          newMessage({
            groupId: this.groupId,
            type: MessageType.CheckQuorum,
            from: this.id,
            to: this.id,
          }),
        );
      }
      // A transfer that did not finish within an election timeout is abandoned (thesis §3.10).
      if (this.role === 'leader') this.leadTransferee = null;
    }
    if (this.role !== 'leader') return;
    for (const [id, pr] of this.trk.progress) {
      if (pr.state !== 'snapshot' || ++pr.snapshotTicks < this.cfg.snapshotTimeoutTicks) continue;
      if (pr.recentActive) {
        // Chunks or acknowledgements were lost: resend from the last acknowledged byte.
        pr.rewindSnapshot(pr.snapshotAckedBytes);
        this.sendSnapshotChunks(id, pr);
      } else {
        // The follower went quiet: stop sending; probing restarts the transfer when it answers.
        pr.pendingSnapshot = 0;
        pr.becomeProbe();
      }
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatTick) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  // ---- the message handler ----

  /** Handles a message (network or local). Throws RaftError only for local proposals/reads. */
  step(m: Message): void {
    if (
      (m.type === MessageType.Vote || m.type === MessageType.PreVote) &&
      !this.trk.isVoter(m.from) &&
      !this.raftLog.isAhead(m.index, m.logTerm)
    ) {
      // Only voters of our configuration may take our vote, or our term through a vote
      // request: a replica removed while partitioned (it missed its removal) must never
      // disrupt the group, whatever PreVote and CheckQuorum say. Ignoring is always safe
      // (a lost message). An outsider whose log is strictly ahead of ours holds entries we
      // lack, among them possibly the change that made it a voter: it is judged as any
      // candidate (§5.4.1), or a lagging member could never help elect the voters added
      // since (the log it lacks has no other source when the old leader is gone). A
      // removed replica is never ahead of the majority that committed its removal, so it
      // still wins no election. The host learns of outsiders (Ready.nonMemberCandidates).
      if (
        !this.trk.progress.has(m.from) &&
        this.nonMemberCandidates.length < MAX_NON_MEMBER_CANDIDATES &&
        !this.nonMemberCandidates.includes(m.from)
      ) {
        this.nonMemberCandidates.push(m.from);
      }
      return;
    }
    if (m.term === 0) {
      // Local message, or a forwarded Prop/ReadIndex: not tied to a term.
    } else if (m.term > this.term) {
      if (isResponseMessage(m.type) && this.role === 'follower' && this.inVoteLease()) {
        // A follower asked nobody anything: a higher-term answer is late (to what it sent
        // as an earlier leader or candidate). Taking its term would end the vote lease
        // (and a leader's read lease with it) and depose the leader we hear.
        return;
      }
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = isCampaignTransfer(m.context);
        // We heard from a live leader within the minimum election timeout: ignore the
        // request so a partitioned node cannot depose it. With CheckQuorum for votes too
        // (thesis §4.2.3); a pre-vote always (§9.6: only if no leader was heard from),
        // or one-way loss from the leader to one follower deposes a healthy leader.
        const inLease =
          this.inVoteLease() && (this.cfg.checkQuorum || m.type === MessageType.PreVote);
        if (!force && inLease) return;
      }
      if (m.type === MessageType.PreVote) {
        // Never adopt a term because of a pre-vote request.
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // Granted pre-votes carry the term we would campaign in; adopt it only on winning.
      } else if (
        m.type === MessageType.App ||
        m.type === MessageType.Commit ||
        m.type === MessageType.Heartbeat ||
        m.type === MessageType.Snap
      ) {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, null);
      }
    } else if (m.term < this.term) {
      if (
        m.type === MessageType.Heartbeat ||
        m.type === MessageType.App ||
        m.type === MessageType.Commit
      ) {
        // A stale leader (e.g. after a partition) that our pre-votes, leases or ignored
        // vote requests keep from seeing a higher term would never step down: tell it our
        // term. (A member that is no voter, e.g. demoted while partitioned, inflates its
        // term campaigning; the voters ignore its votes, so only this brings it back.)
        this.send({ type: MessageType.AppResp, to: m.from });
      } else if (m.type === MessageType.PreVote) {
        this.send({ type: MessageType.PreVoteResp, to: m.from, term: this.term, reject: true });
      }
      return;
    }

    switch (m.type) {
      case MessageType.Hup:
        this.hup(this.cfg.preVote ? 'preElection' : 'election');
        return;
      case MessageType.Vote:
      case MessageType.PreVote: {
        const respType =
          m.type === MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp;
        const canVote =
          this.vote === m.from ||
          (this.vote === null && this.lead === null) ||
          (m.type === MessageType.PreVote && m.term > this.term);
        if (canVote && this.raftLog.isUpToDate(m.index, m.logTerm)) {
          // Reply at the request's term: a pre-candidate counts only answers for the term it asked about.
          this.send({ type: respType, to: m.from, term: m.term });
          if (m.type === MessageType.Vote) {
            this.electionElapsed = 0;
            this.vote = m.from;
          }
        } else {
          this.send({ type: respType, to: m.from, term: this.term, reject: true });
        }
        return;
      }
      default:
        if (this.role === 'leader') this.stepLeader(m);
        else if (this.role === 'follower') this.stepFollower(m);
        else this.stepCandidate(m);
    }
  }

  /**
   * Whether this node heard from a leader within the election timeout, or — with lease
   * reads — started less than one ago (before a crash it may have acknowledged a round
   * that a leader's lease counts on).
   */
  private inVoteLease(): boolean {
    if (this.lead !== null && this.electionElapsed < this.cfg.electionTick) return true;
    return this.cfg.readOnlyOption === 'lease' && this.startupTicks < this.cfg.electionTick;
  }

  private drop(type: MessageType, reason: DropReason, detail: string): never {
    const code =
      type === MessageType.ReadIndex
        ? RaftErrorCode.ReadIndexDropped
        : RaftErrorCode.ProposalDropped;
    throw new RaftError(
      code,
      `${detail} (node ${this.id}, group ${this.groupId}, term ${this.term})`,
      reason,
    );
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.Beat:
        this.bcastHeartbeat();
        return;
      case MessageType.CheckQuorum:
        if (!this.trk.quorumActive(this.id)) {
          this.becomeFollower(this.term, null);
          return;
        }
        for (const [id, pr] of this.trk.progress) if (id !== this.id) pr.recentActive = false;
        return;
      case MessageType.Prop:
        this.leaderPropose(m);
        return;
      case MessageType.ReadIndex:
        this.leaderReadIndex(m);
        return;
    }

    const pr = this.trk.progress.get(m.from);
    if (!pr) return;
    switch (m.type) {
      case MessageType.AppResp:
        this.handleAppendResponse(m, pr);
        return;
      case MessageType.HeartbeatResp: {
        pr.recentActive = true;
        pr.msgAppFlowPaused = false;
        // Acks may have been lost while the window is full: free one slot per heartbeat so
        // replication resumes (a gap is then detected by the follower's rejection).
        if (pr.state === 'replicate' && pr.inflights.full()) pr.inflights.freeFirstOne();
        // A follower in probe state is probed even when caught up: its answer is what
        // moves it back to replicate (etcd-io/raft does the same).
        if (pr.match < this.raftLog.lastIndex() || pr.state === 'probe') this.sendAppend(m.from);
        if (m.context.byteLength === 0) return;
        const round = this.readOnly.recvAck(m.from, m.context);
        if (round === null || this.trk.config.voters.voteResult(round.acks) !== 'won') return;
        this.leaseStartTick = Math.max(this.leaseStartTick, round.sentTick);
        for (const rs of this.readOnly.advance(round)) {
          this.respondToReadIndex(rs.request, rs.index);
        }
        return;
      }
      case MessageType.SnapStatus:
      case MessageType.SnapResp: {
        if (pr.state !== 'snapshot') return;
        if (m.type === MessageType.SnapResp) {
          if (m.index !== pr.pendingSnapshot) return;
          pr.recentActive = true;
          if (!m.reject) {
            pr.snapshotAcked(m.rejectHint);
            this.sendSnapshotChunks(m.from, pr);
            return;
          }
        }
        // On failure forget the snapshot so probing starts from the match index.
        if (m.reject) pr.pendingSnapshot = 0;
        pr.becomeProbe();
        // Wait for the follower's MsgAppResp (success) or a heartbeat (failure) before retrying.
        pr.msgAppFlowPaused = true;
        return;
      }
      case MessageType.Unreachable:
        // Replicating optimistically into a dead link wastes the window: probe instead.
        if (pr.state === 'replicate') pr.becomeProbe();
        return;
      case MessageType.TransferLeader: {
        if (pr.isLearner) return;
        const transferee = m.from;
        if (this.leadTransferee !== null) {
          if (this.leadTransferee === transferee) return;
          this.leadTransferee = null;
        }
        if (transferee === this.id) return;
        // The transfer must finish within an election timeout (thesis §3.10).
        this.electionElapsed = 0;
        this.leadTransferee = transferee;
        if (pr.match === this.raftLog.lastIndex()) this.sendTimeoutNow(transferee);
        else this.sendAppend(transferee);
        return;
      }
    }
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      let nextProbe = m.rejectHint;
      if (m.logTerm > 0) {
        // Skip every entry of ours that cannot match the follower's log (fast backtracking):
        // the follower's entry at rejectHint has logTerm, so our entries after the last
        // index with term ≤ logTerm all conflict.
        nextProbe = this.raftLog.findConflictByTerm(m.rejectHint, m.logTerm).index;
      }
      if (pr.maybeDecrTo(m.index, nextProbe)) {
        if (pr.state === 'replicate') pr.becomeProbe();
        this.sendAppend(m.from);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index) && !(pr.match === m.index && pr.state === 'probe')) return;
    if (pr.state === 'probe') pr.becomeReplicate();
    else if (pr.state === 'snapshot' && pr.match + 1 >= this.raftLog.firstIndex()) {
      // The follower has the snapshot (or caught up otherwise): replicate from the log.
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === 'snapshot' && pr.match >= pr.pendingSnapshot) {
      // It installed the snapshot, but we compacted past it meanwhile: probe, which
      // sends the newer snapshot.
      pr.becomeProbe();
    } else if (pr.state === 'replicate') pr.inflights.freeLE(m.index);

    if (this.maybeCommit()) {
      this.releasePendingReadIndexMessages();
      this.broadcastPending = true;
    } else if (wasPaused) {
      this.sendAppend(m.from);
    }
    // The window may have room for several size-limited messages now.
    while (this.maybeSendAppend(m.from, false)) {}
    if (m.from === this.leadTransferee && pr.match === this.raftLog.lastIndex()) {
      this.sendTimeoutNow(m.from);
    }
  }

  private leaderPropose(m: Message): void {
    if (m.entries.length === 0) {
      throw new RaftError(RaftErrorCode.InvalidArgument, 'proposal without entries');
    }
    if (!this.trk.progress.has(this.id)) {
      this.drop(m.type, DropReason.NotMember, 'leader was removed from the configuration');
    }
    if (this.leadTransferee !== null) {
      this.drop(
        m.type,
        DropReason.TransferInProgress,
        `leadership moving to ${this.leadTransferee}`,
      );
    }
    // Validate every conf change before touching any state, so a refused proposal
    // changes nothing; only one may be pending at a time (thesis §4.1).
    const last = this.raftLog.lastIndex();
    let confIndex = 0;
    for (let i = 0; i < m.entries.length; i++) {
      const e = m.entries[i]!;
      if (e.type !== EntryType.ConfChange) continue;
      const cc = decodeConfChange(e.data);
      const joint = this.trk.config.voters.isJoint();
      if (confIndex !== 0 || this.pendingConfIndex > this.raftLog.applied) {
        this.drop(
          m.type,
          DropReason.ConfChangePending,
          `conf change at ${confIndex || this.pendingConfIndex} not yet applied (applied ${this.raftLog.applied})`,
        );
      }
      if (joint && !isLeaveJoint(cc)) {
        this.drop(m.type, DropReason.ConfAlreadyJoint, 'configuration is joint; leave it first');
      }
      if (!joint && isLeaveJoint(cc)) {
        this.drop(m.type, DropReason.ConfNotJoint, 'configuration is not joint');
      }
      confIndex = last + i + 1;
    }
    if (!this.appendEntries(m.entries)) {
      this.drop(
        m.type,
        DropReason.UncommittedLogFull,
        `uncommitted log holds ${this.uncommittedBytes} bytes (limit ${this.cfg.maxUncommittedEntriesBytes})`,
      );
    }
    if (confIndex !== 0) this.pendingConfIndex = confIndex;
    this.broadcastPending = true;
  }

  private leaderReadIndex(m: Message): void {
    if (
      this.readOnly.size() + this.pendingReadIndexMessages.length >=
      this.cfg.maxPendingReadIndexRequests
    ) {
      if (m.from === this.id) this.drop(m.type, DropReason.ReadQueueFull, 'too many pending reads');
      return;
    }
    // Until an entry of this term commits, the leader's commit index may be stale (§6.4).
    if (!this.committedEntryInCurrentTerm()) {
      this.pendingReadIndexMessages.push(m);
      return;
    }
    this.sendReadIndexResponse(m);
  }

  private committedEntryInCurrentTerm(): boolean {
    return this.raftLog.term(this.raftLog.committed) === this.term;
  }

  private sendReadIndexResponse(m: Message): void {
    // The sole voter confirms its leadership alone. Only if that voter is this node: a
    // leader removed with stepDownOnRemoval false needs the remaining voter to confirm.
    const soleVoter = this.trk.isSingleton() && this.trk.isVoter(this.id);
    if (soleVoter || this.hasLease()) {
      this.respondToReadIndex(m, this.raftLog.committed);
      return;
    }
    this.readOnly.add(this.raftLog.committed, m);
    // One heartbeat round per Ready, sent after these reads arrived, confirms them all.
    this.readHeartbeatPending = true;
  }

  /**
   * Lease reads (thesis §6.4.1): a quorum acknowledged a round sent less than leaseTicks
   * ago, so no other leader can exist yet, provided tick rates differ by at most
   * maxTickDriftPercent. Without a lease a read takes a round like a safe one (and that
   * round renews the lease).
   */
  private hasLease(): boolean {
    return (
      this.cfg.readOnlyOption === 'lease' &&
      !this.leaseRevoked &&
      this.leaderTicks - this.leaseStartTick < this.cfg.leaseTicks
    );
  }

  private releasePendingReadIndexMessages(): void {
    if (this.pendingReadIndexMessages.length === 0) return;
    invariant(this.committedEntryInCurrentTerm(), 'releasing reads before committing in term');
    const pending = this.pendingReadIndexMessages;
    this.pendingReadIndexMessages = [];
    for (const m of pending) this.sendReadIndexResponse(m);
  }

  private respondToReadIndex(request: Message, index: number): void {
    if (request.from === this.id) {
      this.readStates.push({ index, context: request.context });
      return;
    }
    this.send({
      type: MessageType.ReadIndexResp,
      to: request.from,
      index,
      context: request.context,
    });
  }

  private sendTimeoutNow(to: NodeId): void {
    this.leaseRevoked = true;
    this.send({ type: MessageType.TimeoutNow, to });
  }

  private stepCandidate(m: Message): void {
    const myRespType =
      this.role === 'precandidate' ? MessageType.PreVoteResp : MessageType.VoteResp;
    switch (m.type) {
      case MessageType.Prop:
        this.drop(m.type, DropReason.NoLeader, 'election in progress');
        return;
      case MessageType.ReadIndex:
        this.drop(m.type, DropReason.NoLeader, 'election in progress');
        return;
      case MessageType.App:
        this.becomeFollower(m.term, m.from);
        this.handleAppendEntries(m);
        return;
      case MessageType.Commit:
        this.becomeFollower(m.term, m.from);
        this.handleCommit(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
    }
    if (m.type !== myRespType) return;
    const result = this.poll(m.from, !m.reject);
    if (result === 'won') {
      if (this.role === 'precandidate') this.campaign('election');
      else {
        this.becomeLeader();
        this.bcastAppend();
      }
    } else if (result === 'lost') {
      // A rejecting PreVoteResp may carry a higher term; step() already adopted it.
      this.becomeFollower(this.term, null);
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Prop:
        if (this.lead === null) this.drop(m.type, DropReason.NoLeader, 'no leader known');
        if (this.cfg.disableProposalForwarding) {
          this.drop(m.type, DropReason.ForwardingDisabled, 'proposal forwarding is disabled');
        }
        this.send(m, this.lead!, 0);
        return;
      case MessageType.ReadIndex:
        if (this.lead === null) this.drop(m.type, DropReason.NoLeader, 'no leader known');
        this.send(m, this.lead!, 0);
        return;
      case MessageType.App:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppendEntries(m);
        return;
      case MessageType.Commit:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleCommit(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TransferLeader:
        // Without a leader there is nothing to transfer (RawNode reports it to local callers);
        // a transfer to the current leader is already done.
        if (this.lead === null || m.from === this.lead) return;
        this.send(m, this.lead, 0);
        return;
      case MessageType.TimeoutNow:
        // A transfer never uses pre-vote: the leader asked for it, no partition to fear.
        this.hup('transfer');
        return;
      case MessageType.ReadIndexResp:
        this.readStates.push({ index: m.index, context: m.context });
        return;
    }
  }

  private handleAppendEntries(m: Message): void {
    if (m.index < this.raftLog.committed) {
      this.acceptAppend(m.from, this.raftLog.committed);
      return;
    }
    const lastNew = this.raftLog.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      this.acceptAppend(m.from, lastNew);
      return;
    }
    // Fast backtracking: tell the leader the last index ≤ m.index whose term is ≤ m.logTerm.
    const hint = this.raftLog.findConflictByTerm(
      Math.min(m.index, this.raftLog.lastIndex()),
      m.logTerm,
    );
    this.send({
      type: MessageType.AppResp,
      to: m.from,
      index: m.index,
      reject: true,
      rejectHint: hint.index,
      logTerm: hint.term,
    });
  }

  /**
   * A commit notice (MsgCommit): the leader's commit, up to the entry it names, once our
   * log holds that entry; no answer then (the leader knows our match). A log that does
   * not hold it answers as to the MsgApp it stands for: a rejection with the hint.
   */
  private handleCommit(m: Message): void {
    // Naming an entry below our commit, it cannot raise it.
    if (m.index < this.raftLog.committed) return;
    if (this.raftLog.maybeAppend(m.index, m.logTerm, m.commit, m.entries) !== undefined) return;
    this.handleAppendEntries(m);
  }

  /**
   * Answers an accepted append: `index` is in the log. An acceptance of this term to the
   * same leader still queued in this Ready (an earlier append of the same round, often the
   * leader's commit-only one) is raised to `index` instead of a second answer: the leader
   * acts on the highest index acknowledged (Progress.maybeUpdate), so one answer with it
   * leaves its progress as both would. Heartbeat answers queued after it do not matter;
   * any other message to the leader ends the search.
   */
  private acceptAppend(to: NodeId, index: number): void {
    const msgs = this.msgs;
    for (let i = msgs.length - 1; i >= 0; i--) {
      const m = msgs[i]!;
      if (m.to !== to || m.type === MessageType.HeartbeatResp) continue;
      if (m.type === MessageType.AppResp && m.term === this.term && !m.reject && m.index <= index) {
        // Not yet handed out by a Ready: raft's own object to change.
        (m as { index: number }).index = index;
        return;
      }
      break;
    }
    this.send({ type: MessageType.AppResp, to, index });
  }

  private handleHeartbeat(m: Message): void {
    this.raftLog.commitTo(m.commit);
    this.send({ type: MessageType.HeartbeatResp, to: m.from, context: m.context });
  }

  /**
   * Reassembles snapshot chunks and installs the snapshot when the last one arrives.
   * Chunks of one transfer have the same sender, term and snapshot (index, term), hence
   * the same bytes. Each chunk is answered with SnapResp{rejectHint: bytes received in
   * order}, which opens the leader's window; out-of-order chunks are ignored (the leader
   * resends from the acknowledged offset after a timeout) and a chunk of a transfer we
   * know nothing of is answered with 0 so the leader starts over.
   */
  private handleSnapshot(m: Message): void {
    const chunk = m.snapshot!;
    const meta = chunk.metadata;
    if (meta.index <= this.raftLog.committed) {
      // Already have it all (a late chunk, or we caught up another way). A newer
      // transfer half assembled goes on: dropping it would restart it from 0.
      if (this.assembly !== null && this.assembly.index <= this.raftLog.committed) {
        this.assembly = null;
      }
      this.send({ type: MessageType.AppResp, to: m.from, index: this.raftLog.committed });
      return;
    }
    if (!isMemberOf(meta.confState, this.id)) {
      // A snapshot older than our addition: refuse it so the leader sends a newer one.
      this.send({ type: MessageType.SnapResp, to: m.from, index: meta.index, reject: true });
      return;
    }
    const ack = (receivedBytes: number): void => {
      this.send({
        type: MessageType.SnapResp,
        to: m.from,
        index: meta.index,
        rejectHint: receivedBytes,
      });
    };
    let a = this.assembly;
    const sameTransfer =
      a !== null &&
      a.from === m.from &&
      a.term === m.term &&
      a.index === meta.index &&
      a.snapTerm === meta.term;
    if (!sameTransfer) {
      // A leader sends one snapshot at a time, each newer than the last: a chunk of an
      // older one from the same term is a late duplicate, not a new transfer.
      if (a !== null && a.term === m.term && meta.index < a.index) return;
      if (chunk.totalBytes > this.cfg.maxSnapshotBytes) {
        this.assembly = null;
        this.send({ type: MessageType.SnapResp, to: m.from, index: meta.index, reject: true });
        return;
      }
      if (chunk.offsetBytes !== 0) {
        ack(0);
        return;
      }
      a = {
        from: m.from,
        term: m.term,
        index: meta.index,
        snapTerm: meta.term,
        data: new Uint8Array(chunk.totalBytes),
        receivedBytes: 0,
      };
      this.assembly = a;
    }
    if (chunk.offsetBytes === a!.receivedBytes) {
      a!.data.set(chunk.data, chunk.offsetBytes);
      a!.receivedBytes += chunk.data.byteLength;
    }
    if (a!.receivedBytes < chunk.totalBytes) {
      ack(a!.receivedBytes);
      return;
    }
    this.assembly = null;
    const snapshot: Snapshot = { metadata: meta, data: a!.data };
    const index = this.restore(snapshot) ? this.raftLog.lastIndex() : this.raftLog.committed;
    this.send({ type: MessageType.AppResp, to: m.from, index });
  }

  /** Installs a snapshot from the leader; false if it is stale or does not include us. */
  private restore(snapshot: Snapshot): boolean {
    const meta = snapshot.metadata;
    if (meta.index <= this.raftLog.committed) return false;
    invariant(this.role === 'follower', `${this.role} asked to restore a snapshot`);
    const cs = meta.confState;
    if (!isMemberOf(cs, this.id)) return false;
    // We already have the entry the snapshot ends with: just commit up to it.
    if (this.raftLog.matchTerm(meta.index, meta.term)) {
      this.raftLog.commitTo(meta.index);
      return false;
    }
    this.raftLog.restore(snapshot);
    this.switchToConfig(ConfChanger.restore(this.trk, this.raftLog.lastIndex(), cs));
    return true;
  }

  private maybeCommit(): boolean {
    return this.raftLog.maybeCommit(this.trk.committed(), this.term);
  }

  /** Appends entries as leader; false (nothing appended) if the uncommitted bound is hit. */
  private appendEntries(entries: readonly Entry[]): boolean {
    const bytes = payloadBytes(entries);
    // One proposal is always let through when nothing is uncommitted, however large.
    if (
      this.uncommittedBytes > 0 &&
      bytes > 0 &&
      this.uncommittedBytes + bytes > this.cfg.maxUncommittedEntriesBytes
    ) {
      return false;
    }
    this.uncommittedBytes += bytes;
    let index = this.raftLog.lastIndex();
    const stamped = entries.map((e) => ({
      term: this.term,
      index: ++index,
      type: e.type,
      data: e.data,
    }));
    const last = this.raftLog.append(stamped);
    // Safe under the "persist the Ready before sending or applying" contract: nothing
    // acts on this acknowledgement before the entries are durable.
    this.trk.progress.get(this.id)?.maybeUpdate(last);
    this.maybeCommit();
    return true;
  }

  reduceUncommittedBytes(entries: readonly Entry[]): void {
    if (this.role !== 'leader') return;
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes - payloadBytes(entries));
  }

  // ---- configuration ----

  applyConfChange(cc: ConfChangeV2): ConfState {
    const next = ConfChanger.apply(this.trk, this.raftLog.lastIndex(), cc);
    return this.switchToConfig(next);
  }

  private switchToConfig(next: ReturnType<typeof ConfChanger.apply>): ConfState {
    this.trk.setConfig(next.config, next.progress);
    // A lease's quorum is one of the old configuration: renew it in the new one.
    this.leaseStartTick = Number.NEGATIVE_INFINITY;
    const cs = this.trk.confState();
    const pr = this.trk.progress.get(this.id);
    this.isLearner = pr?.isLearner ?? false;
    if ((!pr || this.isLearner) && this.role === 'leader') {
      if (this.cfg.stepDownOnRemoval) this.becomeFollower(this.term, null);
      return cs;
    }
    if (this.role !== 'leader' || cs.voters.length === 0) return cs;
    // The quorum changed: something may have become committed (perhaps the term's first
    // entry, which releases queued reads), and new members need entries.
    if (this.maybeCommit()) {
      this.releasePendingReadIndexMessages();
      this.broadcastPending = true;
    } else for (const id of this.trk.ids()) if (id !== this.id) this.maybeSendAppend(id, false);
    if (this.leadTransferee !== null && !this.trk.isVoter(this.leadTransferee)) {
      this.leadTransferee = null;
    }
    return cs;
  }

  /** Called by RawNode.advance once the application applied through `applied`. */
  appliedTo(applied: number): void {
    this.raftLog.appliedTo(applied);
  }

  /**
   * Leaves an auto-leave joint configuration once it is applied (thesis §4.3). Called on
   * every advance; pendingConfIndex keeps it from proposing twice.
   */
  maybeAutoLeave(): void {
    if (
      !this.trk.config.autoLeave ||
      this.role !== 'leader' ||
      this.raftLog.applied < this.pendingConfIndex
    ) {
      return;
    }
    const leave = encodeConfChange({ transition: ConfChangeTransition.Auto, changes: [] });
    try {
      this.step(
        newMessage({
          groupId: this.groupId,
          type: MessageType.Prop,
          from: this.id,
          to: this.id,
          entries: [{ term: 0, index: 0, type: EntryType.ConfChange, data: leave }],
        }),
      );
    } catch (e) {
      // Dropped (e.g. a transfer is in progress): the next advance tries again.
      if (!isRaftError(e, RaftErrorCode.ProposalDropped)) throw e;
    }
  }
}
