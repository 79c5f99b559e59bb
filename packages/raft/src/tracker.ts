import {
  type ConfChangeSingle,
  ConfChangeType,
  type ConfChangeV2,
  isLeaveJoint,
  jointTransition,
} from './confchange.ts';
import { invariant, RaftError, RaftErrorCode } from './errors.ts';
import { JointConfig, type VoteResult } from './quorum.ts';
import type { ConfState, NodeId, Snapshot } from './types.ts';

/**
 * Sliding window of MsgApps sent but not yet acknowledged to one follower: their last
 * indexes and sizes. Bounds pipelining by count and by bytes (flow control).
 */
export class Inflights {
  /** The window is indexes[head..], sizes[head..]: freeing moves `head` (no splice). */
  private readonly indexes: number[] = [];
  private readonly sizes: number[] = [];
  private head = 0;
  private bytes = 0;

  constructor(
    readonly maxCount: number,
    /** 0 = unlimited. */
    readonly maxBytes: number,
  ) {}

  add(lastIndex: number, sizeBytes: number): void {
    invariant(!this.full(), 'inflights: add while full');
    const prev = this.count() > 0 ? this.indexes[this.indexes.length - 1] : undefined;
    invariant(prev === undefined || lastIndex > prev, 'inflights: indexes must increase');
    this.indexes.push(lastIndex);
    this.sizes.push(sizeBytes);
    this.bytes += sizeBytes;
  }

  /** Frees every message whose last index is ≤ `index` (acknowledged). */
  freeLE(index: number): void {
    const indexes = this.indexes;
    let head = this.head;
    while (head < indexes.length && indexes[head]! <= index) {
      this.bytes -= this.sizes[head]!;
      head++;
    }
    if (head === indexes.length) {
      this.reset();
      return;
    }
    // Freed slots are dropped once they are half the arrays: the arrays stay within
    // twice the window, and each slot is moved at most once per time it is freed.
    if (head * 2 >= indexes.length) {
      indexes.copyWithin(0, head);
      this.sizes.copyWithin(0, head);
      indexes.length -= head;
      this.sizes.length -= head;
      head = 0;
    }
    this.head = head;
  }

  /** Frees the oldest message (its acknowledgement is presumed lost). */
  freeFirstOne(): void {
    if (this.count() > 0) this.freeLE(this.indexes[this.head]!);
  }

  full(): boolean {
    return this.count() >= this.maxCount || (this.maxBytes > 0 && this.bytes >= this.maxBytes);
  }

  count(): number {
    return this.indexes.length - this.head;
  }

  sizeBytes(): number {
    return this.bytes;
  }

  reset(): void {
    this.indexes.length = 0;
    this.sizes.length = 0;
    this.head = 0;
    this.bytes = 0;
  }
}

/**
 * How the leader replicates to a follower:
 * - probe: one MsgApp at a time until the follower's match index is found;
 * - replicate: pipelined MsgApps within the inflight window;
 * - snapshot: a snapshot is being sent; no MsgApps until it is acknowledged.
 */
export type ProgressState = 'probe' | 'replicate' | 'snapshot';

/** The leader's view of one follower (etcd-io/raft tracker.Progress). */
export class Progress {
  /** Highest index known to be replicated on the follower. */
  match = 0;
  /** Next index to send. Invariant: match < next. */
  next: number;
  state: ProgressState = 'probe';
  /** Index of the snapshot being sent (state 'snapshot'), else 0. */
  pendingSnapshot = 0;
  /** Ticks since the snapshot transfer last made progress (state 'snapshot'). */
  snapshotTicks = 0;
  /** The snapshot being sent, its next chunk's offset and the bytes the follower acknowledged. */
  snapshot: Snapshot | null = null;
  snapshotNextOffset = 0;
  snapshotAckedBytes = 0;
  /** Every chunk up to the end has been sent (since the last rewind). */
  snapshotAllSent = false;
  /** Heard from since the last CheckQuorum. */
  recentActive = false;
  /** Probe: one MsgApp is out, wait for its answer (or a heartbeat response). */
  msgAppFlowPaused = false;
  readonly inflights: Inflights;

  constructor(
    next: number,
    maxInflightMsgs: number,
    maxInflightBytes: number,
    public isLearner: boolean,
  ) {
    this.next = next;
    this.inflights = new Inflights(maxInflightMsgs, maxInflightBytes);
  }

  private resetState(state: ProgressState): void {
    this.msgAppFlowPaused = false;
    this.pendingSnapshot = 0;
    this.snapshotTicks = 0;
    this.snapshot = null;
    this.snapshotNextOffset = 0;
    this.snapshotAckedBytes = 0;
    this.snapshotAllSent = false;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    // After a snapshot, resume past it: the follower has it (or will reject and we back off).
    const resumeAfter = this.state === 'snapshot' ? this.pendingSnapshot : 0;
    this.resetState('probe');
    this.next = Math.max(this.match + 1, resumeAfter + 1);
  }

  becomeReplicate(): void {
    this.resetState('replicate');
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshot: Snapshot): void {
    this.resetState('snapshot');
    this.snapshot = snapshot;
    this.pendingSnapshot = snapshot.metadata.index;
    this.next = snapshot.metadata.index + 1;
  }

  /**
   * The follower reports `receivedBytes` of the snapshot reassembled in order. Returns
   * whether the transfer made progress. 0 after progress means it lost its partial copy
   * (restart): send again from the beginning.
   */
  snapshotAcked(receivedBytes: number): boolean {
    const total = this.snapshot!.data.byteLength;
    if (receivedBytes > this.snapshotAckedBytes) {
      this.snapshotAckedBytes = Math.min(receivedBytes, total);
      this.snapshotNextOffset = Math.max(this.snapshotNextOffset, this.snapshotAckedBytes);
      this.snapshotTicks = 0;
      return true;
    }
    if (receivedBytes === 0 && this.snapshotAckedBytes > 0) this.rewindSnapshot(0);
    return false;
  }

  /** Sends again from `offset` (lost chunks or acknowledgements). */
  rewindSnapshot(offset: number): void {
    this.snapshotAckedBytes = offset;
    this.snapshotNextOffset = offset;
    this.snapshotAllSent = false;
    this.snapshotTicks = 0;
  }

  /** Records a MsgApp carrying `count` entries (`bytes`) just sent from `next`. */
  sentEntries(count: number, bytes: number): void {
    if (this.state === 'replicate') {
      if (count > 0) {
        const last = this.next + count - 1;
        this.next = last + 1;
        this.inflights.add(last, bytes);
      }
    } else if (this.state === 'probe') {
      this.msgAppFlowPaused = true;
    } else {
      invariant(false, `sending entries in state ${this.state}`);
    }
  }

  /** The follower acknowledged `index`; returns whether match advanced. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.msgAppFlowPaused = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * The follower rejected a MsgApp at `rejected`, hinting it may match at `matchHint`.
   * Returns false for a stale rejection (ignored).
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === 'replicate') {
      // Stale: we already know the follower has `rejected`.
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    // Probing: only the answer to the probe we sent (next - 1) counts.
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.msgAppFlowPaused = false;
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.msgAppFlowPaused;
      case 'replicate':
        return this.inflights.full();
      case 'snapshot':
        return true;
    }
  }
}

/** Membership as the tracker holds it (mirrors ConfState). */
export interface TrackerConfig {
  voters: JointConfig;
  learners: Set<NodeId>;
  /** Outgoing voters that become learners when the joint configuration is left. */
  learnersNext: Set<NodeId>;
  autoLeave: boolean;
}

/** Leader's bookkeeping: configuration, per-member progress, and election votes. */
export class ProgressTracker {
  config: TrackerConfig = {
    voters: new JointConfig(),
    learners: new Set(),
    learnersNext: new Set(),
    autoLeave: false,
  };
  progress = new Map<NodeId, Progress>();
  votes = new Map<NodeId, boolean>();
  /** Members in sorted order, so every broadcast is deterministic. */
  private sortedIds: NodeId[] = [];

  constructor(
    readonly maxInflightMsgs: number,
    readonly maxInflightBytes: number,
  ) {}

  setConfig(config: TrackerConfig, progress: Map<NodeId, Progress>): void {
    this.config = config;
    this.progress = progress;
    this.sortedIds = [...progress.keys()].sort();
  }

  /** Member ids (voters and learners) in sorted order. */
  ids(): readonly NodeId[] {
    return this.sortedIds;
  }

  isVoter(id: NodeId): boolean {
    return this.config.voters.has(id);
  }

  isSingleton(): boolean {
    return this.config.voters.incoming.size === 1 && !this.config.voters.isJoint();
  }

  committed(): number {
    return this.config.voters.committed(this.matchOf);
  }

  /** A voter's match index (made once: committed() runs on every acknowledgement). */
  private readonly matchOf = (id: NodeId): number | undefined => this.progress.get(id)?.match;

  /** Whether a quorum was recently active (CheckQuorum); `self` always counts. */
  quorumActive(self: NodeId): boolean {
    const votes = new Map<NodeId, boolean>();
    for (const [id, pr] of this.progress) {
      if (pr.isLearner) continue;
      votes.set(id, id === self || pr.recentActive);
    }
    return this.config.voters.voteResult(votes) === 'won';
  }

  resetVotes(): void {
    this.votes = new Map();
  }

  recordVote(id: NodeId, granted: boolean): void {
    if (!this.votes.has(id)) this.votes.set(id, granted);
  }

  tallyVotes(): { granted: number; rejected: number; result: VoteResult } {
    let granted = 0;
    let rejected = 0;
    for (const [id, pr] of this.progress) {
      if (pr.isLearner) continue;
      const v = this.votes.get(id);
      if (v === true) granted++;
      else if (v === false) rejected++;
    }
    return { granted, rejected, result: this.config.voters.voteResult(this.votes) };
  }

  confState(): ConfState {
    const sorted = (s: Set<NodeId>) => [...s].sort();
    return {
      voters: sorted(this.config.voters.incoming),
      learners: sorted(this.config.learners),
      votersOutgoing: sorted(this.config.voters.outgoing),
      learnersNext: sorted(this.config.learnersNext),
      autoLeave: this.config.autoLeave,
    };
  }
}

function confError(message: string): RaftError {
  return new RaftError(RaftErrorCode.InvalidConfChange, message);
}

/**
 * Computes the configuration (and progress map) that results from a change, without
 * touching the tracker (etcd-io/raft confchange.Changer). Throws InvalidConfChange.
 */
export class ConfChanger {
  private readonly config: TrackerConfig;
  private readonly progress: Map<NodeId, Progress>;

  constructor(
    private readonly tracker: ProgressTracker,
    /** New members start probing from here. */
    private readonly lastIndex: number,
  ) {
    const c = tracker.config;
    this.config = {
      voters: c.voters.clone(),
      learners: new Set(c.learners),
      learnersNext: new Set(c.learnersNext),
      autoLeave: c.autoLeave,
    };
    // Progress objects are shared: a member keeps its replication state across changes.
    this.progress = new Map(tracker.progress);
  }

  /** Applies `cc` as raft does when the entry is applied. */
  static apply(
    tracker: ProgressTracker,
    lastIndex: number,
    cc: ConfChangeV2,
  ): { config: TrackerConfig; progress: Map<NodeId, Progress> } {
    const changer = new ConfChanger(tracker, lastIndex);
    if (isLeaveJoint(cc)) changer.leaveJoint();
    else {
      const joint = jointTransition(cc);
      if (joint) changer.enterJoint(joint.autoLeave, cc.changes);
      else changer.simple(cc.changes);
    }
    return changer.result();
  }

  /** Builds the configuration a ConfState describes (restart or snapshot). */
  static restore(
    tracker: ProgressTracker,
    lastIndex: number,
    cs: ConfState,
  ): { config: TrackerConfig; progress: Map<NodeId, Progress> } {
    const empty = new ProgressTracker(tracker.maxInflightMsgs, tracker.maxInflightBytes);
    const changer = new ConfChanger(empty, lastIndex);
    const add = (ids: readonly NodeId[], type: ConfChangeType) =>
      ids.map((nodeId): ConfChangeSingle => ({ type, nodeId }));
    if (cs.votersOutgoing.length === 0) {
      // One change at a time keeps `simple`'s one-voter rule satisfied.
      for (const cc of [
        ...add(cs.voters, ConfChangeType.AddNode),
        ...add(cs.learners, ConfChangeType.AddLearnerNode),
      ]) {
        changer.simple([cc]);
      }
    } else {
      for (const cc of add(cs.votersOutgoing, ConfChangeType.AddNode)) changer.simple([cc]);
      // Rebuild the incoming half from scratch, as a joint change from the outgoing one.
      changer.enterJoint(cs.autoLeave, [
        ...add(cs.votersOutgoing, ConfChangeType.RemoveNode),
        ...add(cs.voters, ConfChangeType.AddNode),
        ...add(cs.learners, ConfChangeType.AddLearnerNode),
        ...add(cs.learnersNext, ConfChangeType.AddLearnerNode),
      ]);
    }
    return changer.result();
  }

  enterJoint(autoLeave: boolean, changes: readonly ConfChangeSingle[]): void {
    if (this.config.voters.isJoint()) throw confError('configuration is already joint');
    if (this.config.voters.incoming.size === 0) {
      throw confError('cannot make a zero-voter configuration joint');
    }
    for (const id of this.config.voters.incoming) this.config.voters.outgoing.add(id);
    this.applyChanges(changes);
    this.config.autoLeave = autoLeave;
  }

  leaveJoint(): void {
    if (!this.config.voters.isJoint()) throw confError('configuration is not joint');
    const c = this.config;
    for (const id of c.learnersNext) {
      c.learners.add(id);
      this.own(id).isLearner = true;
    }
    c.learnersNext.clear();
    for (const id of c.voters.outgoing) {
      if (!c.voters.incoming.has(id) && !c.learners.has(id)) this.progress.delete(id);
    }
    c.voters.outgoing.clear();
    c.autoLeave = false;
  }

  simple(changes: readonly ConfChangeSingle[]): void {
    if (this.config.voters.isJoint()) {
      throw confError('cannot apply a simple change to a joint configuration');
    }
    const before = new Set(this.config.voters.incoming);
    this.applyChanges(changes);
    let changed = 0;
    for (const id of before) if (!this.config.voters.incoming.has(id)) changed++;
    for (const id of this.config.voters.incoming) if (!before.has(id)) changed++;
    if (changed > 1) throw confError('more than one voter changed without joint consensus');
  }

  private applyChanges(changes: readonly ConfChangeSingle[]): void {
    for (const cc of changes) {
      if (cc.nodeId.length === 0) throw confError('empty node id');
      switch (cc.type) {
        case ConfChangeType.AddNode:
          this.makeVoter(cc.nodeId);
          break;
        case ConfChangeType.AddLearnerNode:
          this.makeLearner(cc.nodeId);
          break;
        case ConfChangeType.RemoveNode:
          this.remove(cc.nodeId);
          break;
        default:
          throw confError(`unknown change type ${String(cc.type)}`);
      }
    }
    if (this.config.voters.incoming.size === 0) throw confError('removed all voters');
  }

  /**
   * The progress of `id`, copied before its first mutation so that a change that fails
   * half-way leaves the tracker it started from untouched.
   */
  private own(id: NodeId): Progress {
    const pr = this.progress.get(id)!;
    if (this.tracker.progress.get(id) !== pr) return pr;
    const copy: Progress = Object.assign(Object.create(Progress.prototype), pr);
    this.progress.set(id, copy);
    return copy;
  }

  private makeVoter(id: NodeId): void {
    if (!this.progress.has(id)) {
      this.initProgress(id, false);
      return;
    }
    this.own(id).isLearner = false;
    this.config.learners.delete(id);
    this.config.learnersNext.delete(id);
    this.config.voters.incoming.add(id);
  }

  private makeLearner(id: NodeId): void {
    if (!this.progress.has(id)) {
      this.initProgress(id, true);
      return;
    }
    const pr = this.own(id);
    if (pr.isLearner) return;
    this.remove(id);
    this.progress.set(id, pr);
    // A voter of the outgoing half must stay a voter until the joint config is left.
    if (this.config.voters.outgoing.has(id)) this.config.learnersNext.add(id);
    else {
      pr.isLearner = true;
      this.config.learners.add(id);
    }
  }

  private remove(id: NodeId): void {
    if (!this.progress.has(id)) return;
    this.config.voters.incoming.delete(id);
    this.config.learners.delete(id);
    this.config.learnersNext.delete(id);
    if (!this.config.voters.outgoing.has(id)) this.progress.delete(id);
  }

  private initProgress(id: NodeId, isLearner: boolean): void {
    if (isLearner) this.config.learners.add(id);
    else this.config.voters.incoming.add(id);
    const pr = new Progress(
      Math.max(this.lastIndex, 1),
      this.tracker.maxInflightMsgs,
      this.tracker.maxInflightBytes,
      isLearner,
    );
    // Counts as active so CheckQuorum does not depose the leader before it hears back.
    pr.recentActive = true;
    this.progress.set(id, pr);
  }

  private result(): { config: TrackerConfig; progress: Map<NodeId, Progress> } {
    const c = this.config;
    // Invariants of etcd-io/raft confchange.checkInvariants.
    for (const id of [...c.voters.ids(), ...c.learners, ...c.learnersNext]) {
      invariant(this.progress.has(id), `conf: no progress for ${id}`);
    }
    for (const id of c.learnersNext) {
      invariant(c.voters.outgoing.has(id), `conf: ${id} in learnersNext but not outgoing`);
      invariant(!this.progress.get(id)!.isLearner, `conf: ${id} in learnersNext is a learner`);
    }
    for (const id of c.learners) {
      invariant(!c.voters.has(id), `conf: ${id} is both learner and voter`);
      invariant(this.progress.get(id)!.isLearner, `conf: learner ${id} not marked learner`);
    }
    if (!c.voters.isJoint()) {
      invariant(c.learnersNext.size === 0, 'conf: learnersNext outside a joint config');
      invariant(!c.autoLeave, 'conf: autoLeave outside a joint config');
    }
    return { config: c, progress: this.progress };
  }
}
