/**
 * The loop that drives every group a node hosts (README "The loop"), one round at a time:
 *
 * 1. take the Ready of every group that has one (at most `maxGroupsPerBatch`);
 * 2. write ONE batch for all of them: per group its snapshot (+ KV restore), entries and
 *    hard state, and the KV/session writes and applied state of what the previous round
 *    applied — group commit: one durable write, whatever the number of groups;
 * 3. once it is durable, mirror it into each group's raft log, open the KV streams asked
 *    for, and send the Readies' messages (one frame per peer, with the round's records; a
 *    round that wrote nothing sends them after step 4, with the answers it produced);
 *    a leader's appends, heartbeats and commit notices leave before the write instead
 *    (thesis §10.2.1, `leavesBeforeDurable`), so its disk and its followers' run at once;
 * 4. apply committed entries to the partition machines, answer the requests they carry;
 * 5. advance every group.
 *
 * Whatever arrives while a batch is being written (messages, proposals) waits for the next
 * round: under load one batch carries many groups and entries. Rounds never overlap.
 */
import {
  type ConfChangeV2,
  type ConfState,
  decodeConfChange,
  type Entry,
  EntryType,
  type GroupId,
  type HardState,
  isRaftError,
  MessageType,
  type NodeId,
  RaftErrorCode,
  type Storage as RaftStorage,
  type RawNode,
  type Ready,
} from '@meshkv/raft';
import type { AppliedState, GroupWrite, NodeStorage, SnapshotRestore } from '@meshkv/storage';
import type { GroupReplica } from './group.ts';
import type { Outbox } from './outbox.ts';
import type { AppliedCommand, ApplyOutput } from './partition.ts';
import { isReplicaIn, nodeOfReplica } from './replica-id.ts';
import type { SnapshotStreams } from './snapshots.ts';
import type { Tombstone } from './tombstones.ts';

export interface LoopSettings {
  /** Groups written by one batch at most (the rest wait for the next round). */
  readonly maxGroupsPerBatch: number;
  /** A saved snapshot (metadata only) and a log compaction every this many applied entries… */
  readonly snapshotEveryEntries: number;
  /** …keeping this many entries below the applied index, for followers slightly behind. */
  readonly logEntriesKept: number;
  /**
   * KV writes a group's applied state may hold back, waiting for the group's next write
   * (entries, a term or vote) instead of a write of its own; past it they are flushed.
   */
  readonly maxDeferredAppliedWrites: number;
}

/** What the loop tells the node around it. */
export interface LoopHost {
  readonly nodeId: NodeId;
  readonly storage: NodeStorage;
  readonly outbox: Outbox;
  readonly snapshots: SnapshotStreams;
  groups(): Iterable<GroupReplica>;
  /** Whether `replica` is still the one hosted for its group. */
  hosts(replica: GroupReplica): boolean;
  /** A Ready was taken from the group (reads asked later start a new round). */
  readyTaken(replica: GroupReplica, ready: Ready): void;
  /** The group applied `results` (and its read states are due); answer what waits. */
  applied(replica: GroupReplica, results: readonly AppliedCommand[]): void;
  /** The group applied a configuration change at `index`, from `before` to `confState`. */
  confChanged(replica: GroupReplica, confState: ConfState, index: number, before: ConfState): void;
  /** Peers outside the group's configuration asked it for votes. */
  nonMembers(replica: GroupReplica, ids: readonly NodeId[]): void;
  /** The group's removal is durable: forget it. */
  removed(replica: GroupReplica): void;
  /**
   * The node-metadata part of a batch (tombstones.ts): tombstones of the replicas it
   * removes, records of the replicas that began retiring since the last round.
   */
  metaPart(
    removed: ReadonlyMap<GroupId, Tombstone> | null,
    retired: readonly GroupReplica[] | null,
  ): GroupWrite;
  /** A batch failed: the node cannot go on (the store refuses everything after 'io'). */
  fatal(error: unknown): void;
  persisted?(group: GroupId, entries: readonly Entry[]): void;
  appliedEntry?(group: GroupId, entry: Entry): void;
  leader?(replica: GroupReplica, term: number, log: LogView): void;
  trace(line: string): void;
}

interface RoundGroup {
  readonly replica: GroupReplica;
  /** The RawNode the Ready came from: a replica reloaded meanwhile has a new one. */
  readonly raw: RawNode;
  readonly ready: Ready | null;
  readonly part: GroupWrite | null;
  readonly restore: SnapshotRestore | null;
  /** The applied state this round's part writes, if any. */
  readonly appliedState: AppliedState | null;
  readonly savedSnapshotIndex: number;
  readonly compactTo: number;
}

export class NodeLoop {
  private readonly host: LoopHost;
  private readonly settings: LoopSettings;
  private running = false;
  /** The round's node-metadata part (tombstones, retirement records), if any. */
  private metaPart: GroupWrite | null = null;
  /** Replicas that began retiring since the last round: their records go into the next. */
  private retired: GroupReplica[] = [];
  private again = false;
  private stopped = false;
  /** Set by every tick: the next round writes every group's deferred writes. */
  private flushDue = false;
  /**
   * The groups the next round visits: those something happened to (a message stepped, a
   * proposal, a restore complete, a removal) since the last round, and every group after a
   * tick. A touch missed would delay a group's work by one tick at most, never lose it.
   */
  private readonly touched = new Set<GroupReplica>();
  /** Resolves when the running round sequence ends (close waits for it). */
  private idle: Promise<void> = Promise.resolve();
  /** Batches written (status, the benchmark). */
  batches = 0;
  groupsWritten = 0;
  entriesWritten = 0;

  constructor(host: LoopHost, settings: LoopSettings) {
    this.host = host;
    this.settings = settings;
  }

  /** True while a round runs or is due. */
  get busy(): boolean {
    return this.running;
  }

  /** Asks for a round soon (now, or right after the one running). */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    this.idle = Promise.resolve().then(() => this.run());
  }

  /** Something happened to `replica`: the next round visits it. */
  touch(replica: GroupReplica): void {
    this.touched.add(replica);
    this.wake();
  }

  /**
   * A tick: the next round visits every group (raft ticked them all) and writes every
   * group's deferred applied state and hard state.
   */
  tick(): void {
    this.flushDue = true;
    for (const replica of this.host.groups()) this.touched.add(replica);
    this.wake();
  }

  /** Stops after the round running; resolves once it ended. */
  stop(): Promise<void> {
    this.stopped = true;
    return this.idle;
  }

  private async run(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.round();
      } while (this.again && !this.stopped);
    } catch (error) {
      this.stopped = true;
      this.host.fatal(error);
    } finally {
      this.running = false;
    }
  }

  private async round(): Promise<void> {
    // Indexed loops: an async function is optimized less, and for-of then allocates its
    // iterator results (a round runs per group touched, many times per request).
    const round = this.collect();
    const parts: GroupWrite[] = [];
    for (let i = 0; i < round.length; i++) {
      const part = round[i]!.part;
      if (part !== null) parts.push(part);
    }
    if (this.metaPart !== null) parts.push(this.metaPart);
    const outbox = this.host.outbox;
    let sentEarly: boolean[] | null = null;
    if (parts.length > 0) {
      for (let i = 0; i < round.length; i++) {
        const g = round[i]!;
        if (!leavesBeforeDurable(g)) continue;
        sentEarly ??= new Array<boolean>(round.length).fill(false);
        sentEarly[i] = true;
        const messages = g.ready!.messages;
        for (let j = 0; j < messages.length; j++) outbox.raft(messages[j]!);
      }
      if (sentEarly !== null) outbox.flush();
      await this.host.storage.write({ groups: parts });
      this.batches++;
      this.groupsWritten += parts.length;
    }
    if (this.stopped) return;
    // Durable: mirror into the raft logs, then open the KV streams raft asked for (before
    // any later storage call, so each views exactly the state just written).
    for (let i = 0; i < round.length; i++) this.afterDurable(round[i]!);
    this.openWantedStreams(round);
    for (let i = 0; i < round.length; i++) {
      const ready = round[i]!.ready;
      if (ready === null || sentEarly?.[i] === true) continue;
      const messages = ready.messages;
      for (let j = 0; j < messages.length; j++) outbox.raft(messages[j]!);
    }
    // After a write the messages leave now: acknowledgements waited on the disk. A round
    // that wrote nothing (a leader's commit, a read's heartbeats) sends them with the
    // answers its applies produce, in one frame per peer: a put at c1 through a follower
    // got its commit notice and its answer in two sends (each ~50-100 us of CPU on a
    // WebRTC link) instead of one.
    if (parts.length > 0) outbox.flush();
    for (let i = 0; i < round.length; i++) {
      const g = round[i]!;
      if (g.ready === null || g.replica.raw !== g.raw) continue;
      const pending = this.applyReady(g.replica, g.ready);
      if (pending !== undefined) {
        outbox.flush(); // Nothing waits on a storage read.
        await pending;
      }
    }
    for (let i = 0; i < round.length; i++) {
      const g = round[i]!;
      // A replica reloaded during the round dropped this Ready with its RawNode.
      if (g.ready !== null && g.replica.removal === null && g.replica.raw === g.raw) {
        g.raw.advance();
        if (g.raw.hasReady()) {
          this.touched.add(g.replica);
          this.again = true;
        }
      }
    }
    outbox.flush();
  }

  /** Takes the Readies and builds each group's part of the batch. */
  private collect(): RoundGroup[] {
    const round: RoundGroup[] = [];
    const flushDeferred = this.flushDue;
    this.flushDue = false;
    let removed: Map<GroupId, Tombstone> | null = null;
    // A copy: what is touched while collecting belongs to the next round (a group appears
    // in a batch once).
    const visit = [...this.touched];
    this.touched.clear();
    for (let i = 0; i < visit.length; i++) {
      const replica = visit[i]!;
      if (round.length >= this.settings.maxGroupsPerBatch - 1) {
        for (let j = i; j < visit.length; j++) this.touched.add(visit[j]!);
        this.again = true;
        break;
      }
      if (!this.host.hosts(replica)) continue; // Removed since it was touched.
      if (replica.removal !== null && replica.needsCreate) {
        // Never written (its creating batch had not run yet): nothing durable to remove,
        // and nothing it said left (messages wait for durable state).
        this.host.removed(replica);
        continue;
      }
      if (replica.removal !== null) {
        round.push(noReady(replica, { group: replica.group, remove: true }));
        removed ??= new Map();
        const { term, vote } = replica.log.writtenHardState();
        // The id is never hosted again only if the replica acknowledged data: an empty one's
        // acknowledgements were all refusals, so it may come back under its id (the leader
        // still wants it: sim seed 5090's learner gave up its snapshot and was never back).
        const deleted = replica.initialized ? replica.replicaId : this.host.nodeId;
        removed.set(replica.group, { term, vote, replica: deleted });
        continue;
      }
      if (replica.heldReady !== null) {
        const restore = this.host.snapshots.completedRestore(replica.group);
        if (restore !== null) round.push(this.restorePart(replica, replica.heldReady, restore));
        continue;
      }
      let ready: Ready | null = null;
      if (replica.raw.hasReady()) {
        ready = replica.raw.ready();
        this.host.readyTaken(replica, ready);
        if (ready.softState?.role === 'leader') this.becameLeader(replica, ready);
        if (ready.snapshot !== null) {
          // Held until its KV stream is restored; this round writes what was applied (the
          // restore replaces the KV data: nothing applied before may be written after it).
          this.hold(replica, ready);
          const g = this.partFor(replica, null, true);
          if (g !== null) round.push(g);
          continue;
        }
      }
      const g = this.partFor(replica, ready, flushDeferred);
      if (g !== null) round.push(g);
    }
    let retired: GroupReplica[] | null = null;
    if (this.retired.length > 0) {
      retired = this.retired;
      this.retired = [];
    }
    this.metaPart =
      removed === null && retired === null ? null : this.host.metaPart(removed, retired);
    return round;
  }

  /**
   * Tells the host of a new leadership as raft has it when the Ready is taken: in the term
   * of that Ready, with its log (the durable log and the Ready's entries). Later, after the
   * write, raft may already be in another term.
   */
  private becameLeader(replica: GroupReplica, ready: Ready): void {
    const term = (ready.hardState ?? replica.log.writtenHardState()).term;
    this.host.trace(`group ${replica.group}: leads term ${term}`);
    this.host.leader?.(replica, term, logWithEntries(replica.log, ready.entries));
  }

  private hold(replica: GroupReplica, ready: Ready): void {
    const snapshot = ready.snapshot!;
    replica.heldReady = ready;
    const lead = replica.raw.lead;
    const leader = lead === null ? null : nodeOfReplica(lead);
    if (leader === null || leader === this.host.nodeId || !this.host.snapshots.canStartPull()) {
      this.host.trace(
        `group ${replica.group}: snapshot ${snapshot.metadata.index} dropped (no leader to pull from, or too many installs)`,
      );
      replica.reload();
      this.touched.add(replica);
      this.again = true;
      return;
    }
    this.host.snapshots.startPull(replica, snapshot, leader);
  }

  private restorePart(replica: GroupReplica, ready: Ready, restore: SnapshotRestore): RoundGroup {
    const snapshot = ready.snapshot!;
    const part: WritablePart = { group: replica.group, snapshot, restore };
    if (replica.needsCreate) part.create = true;
    if (ready.entries.length > 0) part.entries = ready.entries;
    const hardState = ready.hardState ?? createdHardState(replica);
    if (hardState !== undefined) part.hardState = hardState;
    return {
      replica,
      raw: replica.raw,
      ready,
      part,
      restore,
      appliedState: snapshot.metadata,
      savedSnapshotIndex: 0,
      compactTo: 0,
    };
  }

  private partFor(
    replica: GroupReplica,
    ready: Ready | null,
    flushDeferred: boolean,
  ): RoundGroup | null {
    const appliedChanged = replica.applied !== replica.durableApplied;
    const log = replica.log;
    const storedSnapshotIndex = log.storedSnapshot().metadata.index;
    const appliedIndex = replica.applied.index;
    // A snapshot is saved at the applied state this part leaves durable: asked for by
    // raft (a follower needs one), or due for compaction.
    const wantSnapshot =
      (log.snapshotWanted && this.host.snapshots.canOpen()) ||
      appliedIndex - storedSnapshotIndex >= this.settings.snapshotEveryEntries;
    const savedSnapshotIndex =
      wantSnapshot && appliedIndex > storedSnapshotIndex && replica.initialized ? appliedIndex : 0;
    const compactTo =
      savedSnapshotIndex > 0 ? Math.max(0, savedSnapshotIndex - this.settings.logEntriesKept) : 0;
    // Deferred writes (README "The loop"): a commit-only hard state and what was applied
    // ride with the group's next write that must happen anyway (entries, a term or vote),
    // or are flushed by the first round after a tick (`flushDeferred`), or once too much
    // waits. Neither is needed for safety: a restart applies the log again from the
    // durable applied index, and relearns the commit index from the leader.
    if (ready !== null && ready.hardState !== null && !changesTermOrVote(replica, ready)) {
      replica.pendingHardState = ready.hardState;
    }
    const mustWrite =
      ready !== null && (ready.entries.length > 0 || changesTermOrVote(replica, ready));
    const flushApplied =
      appliedChanged &&
      (flushDeferred || replica.kv.length >= this.settings.maxDeferredAppliedWrites);
    const flushHardState = flushDeferred && replica.pendingHardState !== null;
    if (
      !mustWrite &&
      !flushApplied &&
      !flushHardState &&
      !replica.needsCreate &&
      savedSnapshotIndex === 0
    ) {
      return ready === null ? null : noReady(replica, null, ready);
    }
    const applied = replica.applied;
    // Only the fields given: the store reads a present field as a change.
    const part: WritablePart = { group: replica.group };
    if (replica.needsCreate) {
      part.create = true;
      if (log.storedSnapshot().metadata.index > 0) part.snapshot = log.storedSnapshot();
    }
    if (ready !== null && ready.entries.length > 0) part.entries = ready.entries;
    if (savedSnapshotIndex > 0) {
      part.savedSnapshot = {
        metadata: { index: applied.index, term: applied.term, confState: applied.confState },
        data: EMPTY,
      };
      if (compactTo > log.firstIndex() - 1) part.compactTo = compactTo;
    }
    const hardState =
      (ready !== null && changesTermOrVote(replica, ready) ? ready.hardState : null) ??
      replica.pendingHardState ??
      createdHardState(replica);
    if (hardState !== undefined && hardState !== null) part.hardState = hardState;
    replica.pendingHardState = null;
    if (appliedChanged || replica.needsCreate) part.appliedState = applied;
    if (replica.kv.length > 0) {
      part.kv = replica.kv;
      replica.kv = [];
    }
    if (replica.sessions.length > 0) {
      part.sessions = replica.sessions;
      replica.sessions = [];
    }
    return {
      replica,
      raw: replica.raw,
      ready,
      part,
      restore: null,
      appliedState: appliedChanged || replica.needsCreate ? applied : null,
      savedSnapshotIndex,
      compactTo: part.compactTo ?? 0,
    };
  }

  /** The part of `g` is durable: the raft log and the durable applied state follow it. */
  private afterDurable(g: RoundGroup): void {
    const replica = g.replica;
    const part = g.part;
    if (part === null) return;
    if (part.remove === true) {
      this.host.removed(replica);
      return;
    }
    replica.needsCreate = false;
    const log = replica.log;
    const ready = g.ready;
    if (g.restore !== null) {
      log.applySnapshot(ready!.snapshot!);
      this.host.snapshots.installedRestore(replica.group);
      replica.heldReady = null;
      this.host.trace(
        `group ${replica.group}: installed snapshot ${ready!.snapshot!.metadata.index}`,
      );
    }
    if (part.entries !== undefined) {
      log.append(part.entries as Entry[]);
      replica.notePersisted(part.entries);
      this.entriesWritten += part.entries.length;
      this.host.persisted?.(replica.group, part.entries);
    }
    if (part.hardState !== undefined) log.setHardState(part.hardState);
    if (g.appliedState !== null) {
      replica.durableApplied = g.appliedState;
      log.appliedConfState = g.appliedState.confState;
      if (g.restore === null) replica.machine.persisted(g.appliedState.index);
    }
    if (g.savedSnapshotIndex > 0) {
      const applied = g.appliedState ?? replica.durableApplied;
      log.createSnapshot(applied.index, applied.confState, EMPTY);
      if (g.compactTo > log.firstIndex() - 1) log.compact(g.compactTo);
    }
  }

  private openWantedStreams(round: readonly RoundGroup[]): void {
    for (const g of round) {
      const replica = g.replica;
      const log = replica.log;
      if (!log.snapshotWanted || replica.removal !== null || !this.host.snapshots.canOpen())
        continue;
      const snapshotIndex = log.storedSnapshot().metadata.index;
      if (snapshotIndex === 0 || snapshotIndex !== replica.durableApplied.index) continue;
      log.snapshotWanted = false;
      this.host.snapshots.open(replica.group, snapshotIndex);
      this.host.trace(`group ${replica.group}: KV stream of snapshot ${snapshotIndex} open`);
    }
  }

  /**
   * Step 4 for one group: role changes, committed entries, read states. Synchronous unless
   * something must wait (a restored snapshot's load, a storage read of the machine): then
   * a promise, which the round awaits.
   */
  private applyReady(replica: GroupReplica, ready: Ready): Promise<void> | undefined {
    if (ready.nonMemberCandidates.length > 0)
      this.host.nonMembers(replica, ready.nonMemberCandidates);
    if (ready.snapshot !== null) return this.applyRestoredReady(replica, ready);
    return this.applyCommitted(replica, ready.committedEntries);
  }

  private async applyRestoredReady(replica: GroupReplica, ready: Ready): Promise<void> {
    // A restored snapshot: the state machine is the restored one.
    const meta = ready.snapshot!.metadata;
    replica.applied = meta;
    replica.durableApplied = meta;
    replica.log.appliedConfState = meta.confState;
    replica.rebuildMachineAfterRestore(await this.host.storage.load());
    this.checkMembership(replica, meta.confState, meta.index, null);
    await this.applyCommitted(replica, ready.committedEntries);
  }

  private applyCommitted(
    replica: GroupReplica,
    entries: readonly Entry[],
  ): Promise<void> | undefined {
    if (entries.length === 0) {
      this.host.applied(replica, NO_RESULTS);
      return undefined;
    }
    const output = replica.machine.applyNow(entries);
    if (output instanceof Promise) {
      return output.then((done) => this.afterApply(replica, entries, done));
    }
    this.afterApply(replica, entries, output);
    return undefined;
  }

  /** The machine applied `entries`: configuration changes, what to write, whom to answer. */
  private afterApply(replica: GroupReplica, entries: readonly Entry[], output: ApplyOutput): void {
    const confBefore = replica.applied.confState;
    let confState = confBefore;
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      this.host.appliedEntry?.(replica.group, entry);
      if (entry.type !== EntryType.ConfChange) continue;
      const changed = this.applyConfChange(replica, entry);
      if (changed !== null) {
        this.host.confChanged(replica, changed, entry.index, confState);
        confState = changed;
      }
    }
    const last = entries[entries.length - 1]!;
    replica.applied = { index: last.index, term: last.term, confState };
    // The output's arrays are this call's own: taken over when nothing waits before them.
    if (replica.kv.length === 0) replica.kv = output.kv;
    else for (const write of output.kv) replica.kv.push(write);
    if (replica.sessions.length === 0) replica.sessions = output.sessions;
    else for (const write of output.sessions) replica.sessions.push(write);
    this.host.applied(replica, output.results);
    this.checkMembership(replica, confState, last.index, confBefore);
  }

  private applyConfChange(replica: GroupReplica, entry: Entry): ConfState | null {
    let change: ConfChangeV2 | ReturnType<typeof decodeConfChange>;
    try {
      change = decodeConfChange(entry.data);
    } catch {
      return null; // Every replica refuses undecodable data alike: a no-op.
    }
    try {
      const confState = replica.raw.applyConfChange(change);
      this.host.trace(
        `group ${replica.group}: configuration at ${entry.index}: voters [${confState.voters}] learners [${confState.learners}]${confState.votersOutgoing.length > 0 ? ` outgoing [${confState.votersOutgoing}]` : ''}`,
      );
      return confState;
    } catch (e) {
      if (isRaftError(e, RaftErrorCode.InvalidConfChange)) return null;
      throw e;
    }
  }

  /**
   * After applying up to `index`: a replica no longer in the configuration is removed — at
   * once if it held no vote in the configuration before (`before`; null for a restored
   * snapshot), else it retires first (GroupReplica.retiring; MeshNode confirms).
   */
  private checkMembership(
    replica: GroupReplica,
    confState: ConfState,
    index: number,
    before: ConfState | null,
  ): void {
    if (replica.removal !== null || replica.retiring !== null) return;
    if (isReplicaIn(confState, replica.replicaId)) return;
    if (confState.voters.length === 0 && confState.learners.length === 0) return;
    const id = replica.replicaId;
    if (before !== null && (before.voters.includes(id) || before.votersOutgoing.includes(id))) {
      replica.retiring = { removedAtIndex: index, confirmedBy: new Set() };
      this.retired.push(replica);
      this.host.trace(
        `group ${replica.group}: removed from its configuration at ${index}; retiring until its voters applied it durably`,
      );
      this.touched.add(replica);
      this.again = true;
      return;
    }
    replica.removal = 'removed from the configuration';
    this.host.trace(`group ${replica.group}: removed from its configuration at ${index}`);
    this.touched.add(replica);
    this.again = true;
  }
}

const EMPTY = new Uint8Array(0);

/** What a log reads like: raft's Storage reads, without the snapshot. */
export type LogView = Pick<RaftStorage, 'firstIndex' | 'lastIndex' | 'term'>;

/** `log` with `entries` appended as the write of a Ready will (replacing a conflicting suffix). */
function logWithEntries(log: RaftStorage, entries: readonly Entry[]): LogView {
  const first = entries[0];
  if (first === undefined) return log;
  const last = entries[entries.length - 1]!;
  return {
    firstIndex: () => log.firstIndex(),
    lastIndex: () => last.index,
    term: (index) => (index >= first.index ? entries[index - first.index]!.term : log.term(index)),
  };
}

/**
 * Whether the messages of `g`'s Ready may leave before the round's batch is durable: the
 * leader writes its log in parallel with replicating it (Raft thesis §10.2.1; etcd-io/raft
 * sends a leader's appends during its own write too). They must all be a leader's appends,
 * heartbeats or commit notices, in a Ready that moves neither term nor vote (those must be
 * durable before anyone hears of them), and carry no commit index that covers the Ready's
 * own entries: raft counts the leader's entries as its own match when they are appended,
 * so in a one-voter group they are committed before they are durable, and a learner told
 * so would apply an entry the leader may lose. A follower's answers (MsgAppResp promises
 * durable entries) and a new replica's first messages (its records are in this batch)
 * always wait for the write.
 */
function leavesBeforeDurable(g: RoundGroup): boolean {
  const ready = g.ready;
  if (ready === null || ready.messages.length === 0 || ready.snapshot !== null) return false;
  if (g.replica.needsCreate || changesTermOrVote(g.replica, ready)) return false;
  const firstNewIndex = ready.entries.length > 0 ? ready.entries[0]!.index : Number.MAX_VALUE;
  const messages = ready.messages;
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i]!;
    const type = message.type;
    if (type !== MessageType.App && type !== MessageType.Heartbeat && type !== MessageType.Commit) {
      return false;
    }
    if (message.commit >= firstNewIndex) return false;
  }
  return true;
}

/** Whether the Ready's hard state moves the term or the vote (which must be durable first). */
function changesTermOrVote(replica: GroupReplica, ready: Ready): boolean {
  const hardState = ready.hardState;
  if (hardState === null) return false;
  const written = replica.log.writtenHardState();
  return hardState.term !== written.term || hardState.vote !== written.vote;
}

/** A created replica's starting term and vote, if it resumes from a tombstone. */
function createdHardState(replica: GroupReplica): HardState | undefined {
  if (!replica.needsCreate) return undefined;
  const hardState = replica.log.writtenHardState();
  return hardState.term === 0 && hardState.vote === null ? undefined : hardState;
}
const NO_RESULTS: readonly AppliedCommand[] = [];

function noReady(
  replica: GroupReplica,
  part: GroupWrite | null,
  ready: Ready | null = null,
): RoundGroup {
  return {
    replica,
    raw: replica.raw,
    ready,
    part,
    restore: null,
    appliedState: null,
    savedSnapshotIndex: 0,
    compactTo: 0,
  };
}

/** A GroupWrite being built (its fields set one by one, only those given). */
type WritablePart = { -readonly [K in keyof GroupWrite]: GroupWrite[K] };
