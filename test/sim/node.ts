/**
 * One simulated node hosting one Raft group: a RawNode driven by the Ready loop
 * (persist → send → apply → advance), its disk, and its KV state machine.
 *
 * Durability runs on the real storage code: the node owns a @meshkv/storage MemoryDisk in
 * 'manual' sync mode and a NodeStorage opened on it, so the simulation decides when a
 * write becomes durable. Persisting a Ready is one `write` (snapshot, entries, hard state);
 * a Ready with `mustSync` is synced before its messages are sent, while a
 * commit-only Ready is written lazily: it stays pending on the disk until a later synced
 * write flushes it, and a crash meanwhile loses it. After applying, a second, lazy write
 * records the state machine's changes (`appliedState`, `kv`, `sessions`) and any snapshot
 * the node took (`savedSnapshot`, `compactTo`). A crash is `disk.crash()` plus the loss of
 * everything in memory; a restart is the real recovery path: `disk.open()`, `load()`,
 * a raft MemoryStorage rebuilt from the loaded hard state, snapshot and entries, the state
 * machine from the applied state, sessions and `get` of every key, then a new RawNode.
 *
 * The raft MemoryStorage (`raftStorage`) is only the in-memory view Raft reads; it is
 * rebuilt from the store on every restart.
 */
import {
  bootstrapSnapshot,
  type ConfState,
  decodeConfChange,
  EntryType,
  emptyConfState,
  type HardState,
  isRaftError,
  MemoryStorage,
  type Message,
  type NodeId,
  type Prng,
  RaftErrorCode,
  RawNode,
  type ReadOnlyOption,
  type Ready,
} from '@meshkv/raft';
import { type GroupWrite, MemoryDisk, type NodeStorage, StorageError } from '@meshkv/storage';
import type { KvResult } from '../lincheck/kv.ts';
import { type SafetyMonitor, SimFailure } from './invariants.ts';
import { decodeCommand, KvStateMachine } from './state-machine.ts';

/** The Raft settings a seed varies (the rest are fixed below). */
export interface RaftVariant {
  readonly electionTick: number;
  readonly heartbeatTick: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  readonly readOnlyOption: ReadOnlyOption;
  readonly stepDownOnRemoval: boolean;
  /** The simulation's tick periods differ by less than this (lease reads rely on it). */
  readonly maxTickDriftPercent: number;
}

/** Small limits so flow control and snapshot chunking run in every seed. */
const raftLimits = {
  maxSizePerMsgBytes: 1024,
  maxInflightMsgs: 4,
  maxSnapshotChunkBytes: 512,
  maxSnapshotInflightChunks: 2,
} as const;

/** Snapshot the state machine every this many applied entries… */
export const SNAPSHOT_EVERY_ENTRIES = 40;
/** …keeping this many entries before it so slightly lagging followers need no snapshot. */
export const LOG_ENTRIES_KEPT = 10;

/** The simulated group's id in every node's store. */
const GROUP = 0;
/** Microtask turns a write may take to reach the disk (a hang guard; it takes a few). */
const MAX_TURNS_TO_DISK = 10_000;

/**
 * Where the harness makes a node crash while persisting its next Ready: with the write
 * still pending on the disk (it must be lost), or once it is durable but before sending.
 */
export type CrashPoint = 'write pending' | 'write durable';

/** What the node tells its host while it runs. */
export interface NodeHost {
  readonly monitor: SafetyMonitor;
  readonly prng: Prng;
  readonly raftVariant: RaftVariant;
  /** Every key clients use: a restarted node reads each one back from its store. */
  readonly keys: readonly string[];
  send(from: NodeId, message: Message): void;
  /** The node crashed by itself (crashAtNextPersist): take it off the network. */
  crashed(node: NodeId): void;
  /** A proposed command was applied here with this result. */
  applied(node: NodeId, requestId: number, result: KvResult): void;
  /** A read-index request is answered here: the state machine has reached its read point `index`. */
  readReady(
    node: NodeId,
    context: number,
    index: number,
    read: (key: string) => string | null,
  ): void;
  trace(line: string): void;
}

export class SimNode {
  readonly id: NodeId;
  private readonly host: NodeHost;
  private readonly initialVoters: readonly NodeId[] | null;
  private readonly disk: MemoryDisk;
  private store: NodeStorage | null = null;
  private log: MemoryStorage | null = null;
  private raw: RawNode | null = null;
  private machine = new KvStateMachine();
  private appliedIndex = 0;
  private appliedTerm = 0;
  /** The applied index of the last write that recorded the state machine. */
  private appliedWritten = 0;
  private confState: ConfState = emptyConfState;
  private pendingReads: { context: number; index: number }[] = [];
  /**
   * Snapshot at the next chance: a configuration change was applied. A node added later
   * starts empty and is caught up with the leader's latest snapshot, which it ignores
   * unless that snapshot's configuration contains it; so the latest snapshot must always
   * carry the latest applied configuration. This also keeps the stored snapshot's
   * configuration equal to the stored applied one, which a restart relies on: Raft takes
   * its configuration from the snapshot.
   */
  private snapshotDue = false;
  /** A lazy write failed other than by a crash: a bug, reported at the node's next step. */
  private writeFailure: unknown = null;
  /** Writes that crashes found pending on the disk, and so lost. */
  lostWrites = 0;
  /** Set by the harness: crash while persisting the next Ready that writes anything. */
  crashAtNextPersist: CrashPoint | null = null;

  constructor(id: NodeId, host: NodeHost, initialVoters: readonly NodeId[] | null) {
    this.id = id;
    this.host = host;
    this.initialVoters = initialVoters;
    this.disk = new MemoryDisk({ name: id, sync: 'manual' });
  }

  get isUp(): boolean {
    return this.raw !== null;
  }

  get rawNode(): RawNode | null {
    return this.raw;
  }

  /** The log Raft reads, while the node is up. */
  get raftStorage(): MemoryStorage | null {
    return this.log;
  }

  get applied(): number {
    return this.appliedIndex;
  }

  get stateMachine(): KvStateMachine {
    return this.machine;
  }

  /** The configuration as of the applied index. */
  get configuration(): ConfState {
    return this.confState;
  }

  /** Starts (or restarts) from what the disk holds durably. */
  async start(): Promise<void> {
    if (this.raw !== null) throw new Error(`${this.id} is already running`);
    this.throwWriteFailure();
    const store = await this.disk.open();
    let group = (await store.load()).groups.get(GROUP);
    if (group === undefined) {
      // First start. Initial members bootstrap the group (raft's bootstrap snapshot at
      // index 1); later ones start empty and get a snapshot from the leader.
      const confState =
        this.initialVoters === null ? null : { ...emptyConfState, voters: this.initialVoters };
      await this.synced(
        store.write({
          groups: [
            confState === null
              ? { group: GROUP, create: true }
              : {
                  group: GROUP,
                  create: true,
                  snapshot: bootstrapSnapshot(confState),
                  appliedState: { index: 1, term: 1, confState },
                },
          ],
        }),
      );
      group = (await store.load()).groups.get(GROUP);
      if (group === undefined) throw new Error(`${this.id}: group ${GROUP} missing after create`);
    }
    const log = new MemoryStorage();
    if (group.snapshot !== null) log.applySnapshot(group.snapshot);
    log.append(group.entries);
    log.setHardState(group.hardState);
    const values = new Map<string, Uint8Array | null>();
    for (const key of this.host.keys) values.set(key, await store.get(GROUP, key));
    const { appliedState } = group;
    if (!sameConf(log.initialState().confState, appliedState.confState)) {
      throw new Error(
        `${this.id}: stored snapshot's configuration differs from the applied one at ${appliedState.index}`,
      );
    }
    this.store = store;
    this.log = log;
    this.machine = KvStateMachine.recover(values, group.sessions);
    this.appliedIndex = appliedState.index;
    this.appliedTerm = appliedState.term;
    this.appliedWritten = appliedState.index;
    this.confState = appliedState.confState;
    this.pendingReads = [];
    this.snapshotDue = false;
    this.raw = new RawNode({
      id: this.id,
      groupId: GROUP,
      storage: log,
      random: this.host.prng,
      applied: this.appliedIndex,
      ...raftLimits,
      ...this.host.raftVariant,
    });
  }

  /**
   * Power loss: writes pending on the disk are lost, and so is everything in memory.
   * Returns how many writes were pending on the disk.
   */
  crash(): number {
    const lost = this.disk.pendingWrites;
    this.lostWrites += lost;
    this.disk.crash();
    this.store = null;
    this.log = null;
    this.raw = null;
    this.machine = new KvStateMachine();
    this.appliedIndex = 0;
    this.confState = emptyConfState;
    this.pendingReads = [];
    this.crashAtNextPersist = null;
    return lost;
  }

  async tick(): Promise<void> {
    this.raw?.tick();
    await this.drain();
  }

  /** Hands a message from the network to Raft; malformed or stray ones are dropped. */
  async receive(message: Message): Promise<void> {
    const raw = this.raw;
    if (raw === null) return;
    try {
      raw.step(message);
    } catch (e) {
      if (
        !isRaftError(e, RaftErrorCode.StepPeerNotFound) &&
        !isRaftError(e, RaftErrorCode.InvalidMessage)
      ) {
        throw e;
      }
    }
    await this.drain();
  }

  /** Runs `action` on the RawNode (propose, readIndex, ...) and then the Ready loop. */
  async act(action: (raw: RawNode) => void): Promise<void> {
    const raw = this.raw;
    if (raw === null) throw new Error(`${this.id} is down`);
    try {
      action(raw);
    } finally {
      await this.drain();
    }
  }

  /** The Ready loop: persist → send → apply → advance, until Raft has nothing more. */
  private async drain(): Promise<void> {
    for (let rounds = 0; this.raw?.hasReady(); rounds++) {
      this.throwWriteFailure();
      if (rounds >= 1000)
        throw new SimFailure('liveness', `${this.id}: 1000 Ready rounds in one step`);
      const raw = this.raw;
      const rd = raw.ready();
      const write = this.persist(rd);
      if (rd.nonMemberCandidates.length > 0) {
        this.host.trace(
          `${this.id} ignores vote requests of non-members [${rd.nonMemberCandidates}]`,
        );
      }
      if (rd.softState?.role === 'leader') {
        this.host.trace(`${this.id} leads term ${raw.status().term}`);
        this.host.monitor.onLeader(this.id, raw.status().term, this.log!);
      }
      if (write !== null) {
        const crashPoint = this.crashAtNextPersist;
        if (crashPoint === 'write pending') {
          await this.untilOnDisk();
          const lost = this.crash();
          this.host.trace(
            `${this.id} crashes with its write of a Ready pending on the disk (${lost} writes lost)`,
          );
          this.host.crashed(this.id);
          if ((await write) !== 'lost') {
            throw new SimFailure('durability', `${this.id}: a write pending at a crash survived`);
          }
          return;
        }
        if (rd.mustSync || crashPoint !== null) {
          await this.synced(write);
        } else {
          this.lazily(write);
        }
        if (crashPoint === 'write durable') {
          const lost = this.crash();
          this.host.trace(
            `${this.id} crashes after persisting a Ready, before sending it (${lost} writes lost)`,
          );
          this.host.crashed(this.id);
          return;
        }
      }
      for (const message of rd.messages) this.host.send(this.id, message);
      this.apply(raw, rd);
      raw.advance();
      this.persistApplied();
    }
  }

  /**
   * Writes the Ready's snapshot, entries and hard state to the in-memory log and to the
   * store (null: nothing to write). A snapshot from the leader also replaces the state
   * machine, in memory now and in the store in the same batch, so that a crash never
   * leaves a log that starts after the stored state machine's applied index.
   */
  private persist(rd: Ready): Promise<'durable' | 'lost'> | null {
    const log = this.log!;
    let part: GroupWrite = { group: GROUP };
    if (rd.snapshot !== null) {
      const { metadata, data } = rd.snapshot;
      log.applySnapshot(rd.snapshot);
      const next = KvStateMachine.decode(data);
      part = { ...part, snapshot: rd.snapshot, ...this.machine.replacementBy(next) };
      this.machine = next;
      this.appliedIndex = metadata.index;
      this.appliedTerm = metadata.term;
      this.confState = metadata.confState;
      part = { ...part, appliedState: this.appliedState() };
      this.appliedWritten = metadata.index;
      this.host.trace(`${this.id} installs the snapshot at index ${this.appliedIndex}`);
    }
    if (rd.entries.length > 0) {
      log.append(rd.entries);
      this.host.monitor.onPersist(this.id, rd.entries);
      part = { ...part, entries: rd.entries };
    }
    if (rd.hardState !== null) {
      log.setHardState(rd.hardState);
      part = { ...part, hardState: rd.hardState };
    }
    return Object.keys(part).length > 1 ? this.write(part) : null;
  }

  private apply(raw: RawNode, rd: Ready): void {
    for (const entry of rd.committedEntries) {
      this.host.monitor.onApply(this.id, entry, this.appliedIndex);
      this.appliedIndex = entry.index;
      this.appliedTerm = entry.term;
      if (entry.type === EntryType.ConfChange) {
        const change = decodeConfChange(entry.data);
        try {
          this.confState = raw.applyConfChange(change);
          this.snapshotDue = true;
          this.host.trace(
            `${this.id} applies a configuration change at ${entry.index}: voters [${this.confState.voters}] learners [${this.confState.learners}]${this.confState.votersOutgoing.length > 0 ? ` outgoing [${this.confState.votersOutgoing}]` : ''}`,
          );
        } catch (e) {
          // Every replica refuses an invalid change the same way; it is then a no-op.
          if (!isRaftError(e, RaftErrorCode.InvalidConfChange)) throw e;
        }
      } else if (entry.data.byteLength > 0) {
        const command = decodeCommand(entry.data);
        const result = this.machine.apply(command);
        this.host.applied(this.id, command.requestId, result);
      }
    }
    for (const state of rd.readStates) {
      this.pendingReads.push({ context: decodeContext(state.context), index: state.index });
    }
    this.serveReads();
  }

  private serveReads(): void {
    const waiting: { context: number; index: number }[] = [];
    for (const read of this.pendingReads) {
      if (read.index <= this.appliedIndex) {
        this.host.readReady(this.id, read.context, read.index, (key) => this.machine.get(key));
      } else {
        waiting.push(read);
      }
    }
    this.pendingReads = waiting;
  }

  /**
   * Records what was applied (and a snapshot, if one is due) in a lazy write: acknowledged
   * writes are already safe in the committed log, so a crash that loses this write only
   * makes the restarted node apply those entries again.
   */
  private persistApplied(): void {
    const log = this.log!;
    let part: GroupWrite | null = null;
    if (this.appliedIndex !== this.appliedWritten) {
      part = { group: GROUP, appliedState: this.appliedState(), ...this.machine.takeChanges() };
      this.appliedWritten = this.appliedIndex;
    }
    const snapshotIndex = log.snapshot().metadata.index;
    if (
      this.appliedIndex !== snapshotIndex &&
      (this.snapshotDue || this.appliedIndex - snapshotIndex >= SNAPSHOT_EVERY_ENTRIES)
    ) {
      this.snapshotDue = false;
      const snapshot = log.createSnapshot(this.appliedIndex, this.confState, this.machine.encode());
      part = { ...part, group: GROUP, savedSnapshot: snapshot };
      const compactTo = this.appliedIndex - LOG_ENTRIES_KEPT;
      if (compactTo >= log.firstIndex()) {
        log.compact(compactTo);
        part = { ...part, compactTo };
      }
    }
    if (part !== null) this.lazily(this.write(part));
  }

  private appliedState() {
    return { index: this.appliedIndex, term: this.appliedTerm, confState: this.confState };
  }

  /** Hands `part` to the store; the promise tells whether it became durable or a crash lost it. */
  private write(part: GroupWrite): Promise<'durable' | 'lost'> {
    const store = this.store!;
    return store.write({ groups: [part] }).then(
      () => 'durable' as const,
      (error: unknown) => {
        if (store !== this.store && error instanceof StorageError && error.code === 'closed')
          return 'lost' as const;
        throw error;
      },
    );
  }

  /** Leaves `write` pending on the disk until a later synced write flushes it. */
  private lazily(write: Promise<unknown>): void {
    write.catch((error: unknown) => {
      this.writeFailure ??= error;
    });
  }

  private throwWriteFailure(): void {
    if (this.writeFailure !== null) throw this.writeFailure;
  }

  /**
   * Syncs the disk until `call` (a write, or a read queued behind writes) completes: the
   * store runs its calls one at a time, so each pending write reaches the disk only after
   * the one before it is durable.
   */
  private async synced<T>(call: Promise<T>): Promise<T> {
    let settled = false;
    const done = call.then(
      (value) => {
        settled = true;
        return { value };
      },
      (error: unknown) => {
        settled = true;
        return { error };
      },
    );
    for (let turns = 0; !settled; turns++) {
      if (turns > MAX_TURNS_TO_DISK) throw new Error(`${this.id}: a store call never completed`);
      this.disk.syncAll();
      await undefined;
    }
    const outcome = await done;
    if ('error' in outcome) throw outcome.error;
    return outcome.value;
  }

  /** Waits until a write is pending on the disk, so that a crash now loses it. */
  private async untilOnDisk(): Promise<void> {
    for (let turns = 0; this.disk.pendingWrites === 0; turns++) {
      if (turns > MAX_TURNS_TO_DISK) throw new Error(`${this.id}: a write never reached the disk`);
      await undefined;
    }
  }

  /**
   * Flushes every write, then checks that the store holds exactly the node's memory: hard
   * state, last log index, applied state, KV values and applied requests.
   */
  async checkStore(): Promise<void> {
    const store = this.store;
    const log = this.log;
    if (store === null || log === null) return;
    const group = (await this.synced(store.load())).groups.get(GROUP);
    const values = new Map<string, Uint8Array | null>();
    for (const key of this.host.keys) values.set(key, await store.get(GROUP, key));
    const stored = group === undefined ? null : KvStateMachine.recover(values, group.sessions);
    const memory = log.initialState().hardState;
    const lastIndex = group?.entries.at(-1)?.index ?? group?.compacted.index;
    const mismatch =
      group === undefined || stored === null
        ? 'no group'
        : describeHardState(group.hardState) !== describeHardState(memory)
          ? `hard state ${describeHardState(group.hardState)}, memory ${describeHardState(memory)}`
          : lastIndex !== log.lastIndex()
            ? `last index ${lastIndex}, memory ${log.lastIndex()}`
            : group.appliedState.index !== this.appliedIndex
              ? `applied ${group.appliedState.index}, memory ${this.appliedIndex}`
              : stored.fingerprint() !== this.machine.fingerprint()
                ? `KV ${stored.fingerprint()}, memory ${this.machine.fingerprint()}`
                : stored.requestsFingerprint() !== this.machine.requestsFingerprint()
                  ? 'another applied-request table'
                  : null;
    if (mismatch !== null) {
      throw new SimFailure('durability', `${this.id}: its store differs from memory: ${mismatch}`);
    }
  }
}

function describeHardState(hs: HardState): string {
  return `{term ${hs.term}, vote ${hs.vote}, commit ${hs.commit}}`;
}

function sameConf(a: ConfState, b: ConfState): boolean {
  const key = (c: ConfState) =>
    JSON.stringify([c.voters, c.learners, c.votersOutgoing, c.learnersNext, c.autoLeave]);
  return key(a) === key(b);
}

/** Read contexts are request ids, as 4 big-endian bytes. */
export function encodeContext(requestId: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, requestId);
  return bytes;
}

function decodeContext(context: Uint8Array): number {
  return new DataView(context.buffer, context.byteOffset, context.byteLength).getUint32(0);
}
