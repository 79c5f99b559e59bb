/**
 * One simulated node hosting one Raft group: a RawNode driven by the Ready loop
 * (persist → send → apply → advance), its "disk", and its KV state machine.
 *
 * Durability model. `storage` (a raft MemoryStorage) plays the disk: the loop writes a
 * Ready's snapshot, entries and hard state into it before sending anything, and nothing
 * else ever writes it. A Ready without `mustSync` (a commit-index-only change) is written
 * lazily: it becomes durable only with the next synced write, so a crash may lose it.
 * Everything else — the RawNode, unpersisted Raft state, the state machine, pending reads
 * — is memory and is lost by `crash()`; a restart rebuilds from the disk, re-applying
 * committed entries after the last snapshot. (@meshkv/storage's memory backend is
 * asynchronous; this loop is synchronous so that a seed replays exactly.)
 */
import {
  type ConfState,
  decodeConfChange,
  EntryType,
  type HardState,
  isRaftError,
  MemoryStorage,
  type Message,
  type NodeId,
  type Prng,
  RaftErrorCode,
  RawNode,
  type Ready,
} from '@meshkv/raft';
import type { KvResult } from '../lincheck/kv.ts';
import { type SafetyMonitor, SimFailure } from './invariants.ts';
import { decodeCommand, KvStateMachine } from './state-machine.ts';

/** The Raft settings a seed varies (the rest are fixed below). */
export interface RaftVariant {
  readonly electionTick: number;
  readonly heartbeatTick: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
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

/** What the node tells its host while it runs. */
export interface NodeHost {
  readonly monitor: SafetyMonitor;
  readonly prng: Prng;
  readonly raftVariant: RaftVariant;
  send(from: NodeId, message: Message): void;
  /** The node crashed by itself (crashAfterNextPersist): take it off the network. */
  crashed(node: NodeId): void;
  /** A proposed command was applied here with this result. */
  applied(node: NodeId, requestId: number, result: KvResult): void;
  /** A read-index request is answered here: the state machine has reached its read point. */
  readReady(node: NodeId, context: number, read: (key: string) => string | null): void;
  trace(line: string): void;
}

export class SimNode {
  readonly id: NodeId;
  readonly storage: MemoryStorage;
  private readonly host: NodeHost;
  /** The hard state a crash goes back to: the last one written by a synced Ready. */
  private durableHardState: HardState;
  private raw: RawNode | null = null;
  private machine = new KvStateMachine();
  private appliedIndex = 0;
  private confState: ConfState;
  private pendingReads: { context: number; index: number }[] = [];
  /**
   * Snapshot at the next chance: a configuration change was applied. A node added later
   * starts empty and is caught up with the leader's latest snapshot, which it ignores
   * unless that snapshot's configuration contains it; so the latest snapshot must always
   * carry the latest applied configuration.
   */
  private snapshotDue = false;
  /** Set by the harness: crash right after the next Ready is persisted, before sending. */
  crashAfterNextPersist = false;

  constructor(id: NodeId, host: NodeHost, initialVoters: readonly NodeId[] | null) {
    this.id = id;
    this.host = host;
    // Initial members bootstrap the group; later ones start empty and get a snapshot.
    this.storage = new MemoryStorage(
      initialVoters === null
        ? {}
        : {
            confState: {
              voters: initialVoters,
              learners: [],
              votersOutgoing: [],
              learnersNext: [],
              autoLeave: false,
            },
          },
    );
    this.durableHardState = this.storage.initialState().hardState;
    this.confState = this.storage.initialState().confState;
  }

  get isUp(): boolean {
    return this.raw !== null;
  }

  get rawNode(): RawNode | null {
    return this.raw;
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

  /** Starts (or restarts) from what the disk holds. */
  start(): void {
    if (this.raw !== null) throw new Error(`${this.id} is already running`);
    const snapshot = this.storage.snapshot();
    this.machine = KvStateMachine.decode(snapshot.data);
    this.appliedIndex = snapshot.metadata.index;
    this.confState = snapshot.metadata.confState;
    this.pendingReads = [];
    this.snapshotDue = false;
    this.raw = new RawNode({
      id: this.id,
      groupId: 0,
      storage: this.storage,
      random: this.host.prng,
      applied: this.appliedIndex,
      ...raftLimits,
      ...this.host.raftVariant,
    });
  }

  /** Loses everything not on the disk, and lazily written hard state. */
  crash(): void {
    this.raw = null;
    this.storage.setHardState(this.durableHardState);
    this.pendingReads = [];
    this.crashAfterNextPersist = false;
  }

  tick(): void {
    this.raw?.tick();
    this.drain();
  }

  /** Hands a message from the network to Raft; malformed or stray ones are dropped. */
  receive(message: Message): void {
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
    this.drain();
  }

  /** Runs `action` on the RawNode (propose, readIndex, ...) and then the Ready loop. */
  act(action: (raw: RawNode) => void): void {
    const raw = this.raw;
    if (raw === null) throw new Error(`${this.id} is down`);
    try {
      action(raw);
    } finally {
      this.drain();
    }
  }

  /** The Ready loop: persist → send → apply → advance, until Raft has nothing more. */
  drain(): void {
    for (let rounds = 0; this.raw?.hasReady(); rounds++) {
      if (rounds >= 1000)
        throw new SimFailure('liveness', `${this.id}: 1000 Ready rounds in one step`);
      const raw = this.raw;
      const rd = raw.ready();
      this.persist(rd);
      if (rd.softState?.role === 'leader') {
        this.host.trace(`${this.id} leads term ${raw.status().term}`);
        this.host.monitor.onLeader(this.id, raw.status().term, this.storage);
      }
      if (this.crashAfterNextPersist) {
        this.host.trace(`${this.id} crashes after persisting a Ready, before sending it`);
        this.crash();
        this.host.crashed(this.id);
        return;
      }
      for (const message of rd.messages) this.host.send(this.id, message);
      this.apply(raw, rd);
      raw.advance();
      this.maybeSnapshot();
    }
  }

  private persist(rd: Ready): void {
    if (rd.snapshot !== null) this.storage.applySnapshot(rd.snapshot);
    this.storage.append(rd.entries);
    this.host.monitor.onPersist(this.id, rd.entries);
    if (rd.hardState !== null) this.storage.setHardState(rd.hardState);
    // A synced write makes every earlier lazy write durable too.
    if (rd.mustSync || rd.snapshot !== null) {
      this.durableHardState = this.storage.initialState().hardState;
    }
  }

  private apply(raw: RawNode, rd: Ready): void {
    if (rd.snapshot !== null) {
      this.machine = KvStateMachine.decode(rd.snapshot.data);
      this.appliedIndex = rd.snapshot.metadata.index;
      this.confState = rd.snapshot.metadata.confState;
      this.host.trace(`${this.id} installs the snapshot at index ${this.appliedIndex}`);
    }
    for (const entry of rd.committedEntries) {
      this.host.monitor.onApply(this.id, entry, this.appliedIndex);
      this.appliedIndex = entry.index;
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
        this.host.readReady(this.id, read.context, (key) => this.machine.get(key));
      } else {
        waiting.push(read);
      }
    }
    this.pendingReads = waiting;
  }

  private maybeSnapshot(): void {
    const snapshotIndex = this.storage.snapshot().metadata.index;
    if (this.appliedIndex === snapshotIndex) return;
    if (!this.snapshotDue && this.appliedIndex - snapshotIndex < SNAPSHOT_EVERY_ENTRIES) return;
    this.snapshotDue = false;
    this.storage.createSnapshot(this.appliedIndex, this.confState, this.machine.encode());
    const compactTo = this.appliedIndex - LOG_ENTRIES_KEPT;
    if (compactTo >= this.storage.firstIndex()) this.storage.compact(compactTo);
    // Hosts write the snapshot and the hard state in one synced batch.
    this.durableHardState = this.storage.initialState().hardState;
  }
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
