/**
 * The KV snapshot path (README "Snapshots"): the Raft snapshot carries only metadata; the
 * partition's KV state streams beside Raft, pulled chunk by chunk by the follower from the
 * leader's `snapshotChunks` into its `beginRestore`, one chunk in flight (bounded memory).
 *
 * Leader side: a stream is opened right after the batch that made the group's applied
 * state durable at the stored snapshot's index (the loop calls `open` before any later
 * storage call, so the stream's view is exactly that state). `claim` hands one unclaimed
 * stream to raft's `Storage.snapshot()` (one per follower raft sends the snapshot to);
 * the first pull naming that snapshot binds it. Streams unclaimed, unbound or idle for
 * `streamIdleTicks` are closed with `return()`; at most `maxOpenStreams` are open. A
 * stream whose final chunk is sent releases the store's view at once and stops counting
 * as open: it keeps only that chunk, for a pull repeated after a loss, until idle (at most
 * `maxOpenStreams` such finished streams are kept, the oldest dropped first). Until it
 * stopped counting, each finished stream held its slot for `streamIdleTicks`, and a
 * node adding replicas to many groups waited that long for every few groups.
 *
 * Follower side: a Ready carrying a snapshot is held (group.heldReady); `startPull` asks
 * the group's leader for the stream; each chunk is added to the restore, the next pulled;
 * a lost pull or chunk is asked again after `pullResendTicks`; when the restore is
 * complete the loop writes `{snapshot, restore}` in one batch. If the stream cannot be had
 * (abort, no progress for `streamIdleTicks`), the restore is aborted and the group reloaded
 * from durable state: the Ready is dropped and raft sends a snapshot again.
 */
import type { GroupId, NodeId, Prng, Snapshot } from '@meshkv/raft';
import { limits, type NodeStorage, type SnapshotRestore } from '@meshkv/storage';
import type { GroupReplica } from './group.ts';
import type {
  DirectRecord,
  SnapshotAbortRecord,
  SnapshotChunkRecord,
  SnapshotPullRecord,
} from './wire.ts';

export interface SnapshotSettings {
  /** KV streams open on this node at once (leader side). */
  readonly maxOpenStreams: number;
  /** Snapshot installs in progress on this node at once (follower side). */
  readonly maxIncomingStreams: number;
  /** A stream with no pull (leader) or no chunk (follower) for this many ticks is given up. */
  readonly streamIdleTicks: number;
  /** A follower asks again for a chunk not received after this many ticks. */
  readonly pullResendTicks: number;
  /** The chunks' target size (≤ storage's limits.maxTargetChunkBytes). */
  readonly targetChunkBytes: number;
}

export interface SnapshotHost {
  readonly storage: NodeStorage;
  readonly random: Prng;
  send(to: NodeId, record: DirectRecord): void;
  /** Frames to send (chunks): run a round soon. */
  wake(): void;
  /** A held Ready's restore is complete, or a pull failed and its group was reloaded. */
  touch(replica: GroupReplica): void;
  trace(line: string): void;
  /** The restore failed: drop the held Ready and rebuild the group from durable state. */
  reload(replica: GroupReplica, why: string): void;
  /**
   * Leader side: `peer`'s stream of `group` is gone (aborted, closed idle, or the peer
   * started its pull over): raft must send that follower a snapshot afresh, so that
   * `snapshot()` claims a new stream, instead of resending the old snapshot's metadata,
   * whose pulls would find no stream (reportSnapshot 'failure').
   */
  streamLost(group: GroupId, peer: NodeId): void;
}

interface OutgoingStream {
  readonly group: GroupId;
  readonly snapshotIndex: number;
  readonly iterator: AsyncIterator<Uint8Array>;
  claimed: boolean;
  peer: NodeId | null;
  streamRequestId: number;
  /** The chunk to send next, read ahead so the previous one knows whether it was final. */
  next: Promise<IteratorResult<Uint8Array>> | null;
  /** The last chunk sent (a pull repeated after a loss gets it again). */
  lastSent: SnapshotChunkRecord | null;
  nextSeq: number;
  idleTicks: number;
  /** The final chunk was sent and the store's view released: kept only to resend it. */
  done: boolean;
}

interface IncomingPull {
  readonly replica: GroupReplica;
  readonly snapshot: Snapshot;
  readonly leader: NodeId;
  readonly streamRequestId: number;
  restore: SnapshotRestore | null;
  nextSeq: number;
  idleTicks: number;
  sinceRequestTicks: number;
  adding: boolean;
  failed: boolean;
}

const U32_RANGE = 0x1_0000_0000;

export class SnapshotStreams {
  private readonly host: SnapshotHost;
  private readonly settings: SnapshotSettings;
  private readonly outgoing: OutgoingStream[] = [];
  private readonly incoming = new Map<GroupId, IncomingPull>();
  /** Installs completed (status, the simulation's stats). */
  installed = 0;

  constructor(host: SnapshotHost, settings: SnapshotSettings) {
    if (settings.targetChunkBytes < 1 || settings.targetChunkBytes > limits.maxTargetChunkBytes) {
      throw new RangeError(
        `targetChunkBytes must be in [1, ${limits.maxTargetChunkBytes}], got ${settings.targetChunkBytes}`,
      );
    }
    this.host = host;
    this.settings = settings;
  }

  /** Streams still reading the store (finished ones, kept to resend their final chunk, excluded). */
  get openStreams(): number {
    let open = 0;
    for (const stream of this.outgoing) if (!stream.done) open++;
    return open;
  }

  get incomingStreams(): number {
    return this.incoming.size;
  }

  /** Whether a stream may be opened now (the loop asks before saving a snapshot for one). */
  canOpen(): boolean {
    return this.openStreams < this.settings.maxOpenStreams;
  }

  // ---- Leader side ----------------------------------------------------------------------

  /** Opens a stream of `group`'s state as of now; call only right after a durable batch. */
  open(group: GroupId, snapshotIndex: number): void {
    const iterable = this.host.storage.snapshotChunks(group, {
      targetChunkBytes: this.settings.targetChunkBytes,
    });
    this.outgoing.push({
      group,
      snapshotIndex,
      iterator: iterable[Symbol.asyncIterator](),
      claimed: false,
      peer: null,
      streamRequestId: 0,
      next: null,
      lastSent: null,
      nextSeq: 0,
      idleTicks: 0,
      done: false,
    });
  }

  /** Whether an unclaimed stream of this snapshot exists; claims it for raft if so. */
  claim(group: GroupId, snapshotIndex: number): boolean {
    for (const stream of this.outgoing) {
      if (stream.group === group && stream.snapshotIndex === snapshotIndex && !stream.claimed) {
        stream.claimed = true;
        stream.idleTicks = 0;
        return true;
      }
    }
    return false;
  }

  onPull(from: NodeId, pull: SnapshotPullRecord): void {
    let stream = this.outgoing.find(
      (s) =>
        s.peer === from && s.streamRequestId === pull.streamRequestId && s.group === pull.group,
    );
    if (stream === undefined && pull.seq === 0) {
      // A new pull from a peer already bound to a stream of the group: it started over (it
      // restarted, or reloaded the group), and the old stream cannot rewind.
      const startedOver = this.outgoing.find((s) => s.peer === from && s.group === pull.group);
      if (startedOver !== undefined) this.closeStream(startedOver);
      stream = this.outgoing.find(
        (s) =>
          s.group === pull.group &&
          s.snapshotIndex === pull.snapshotIndex &&
          s.claimed &&
          s.peer === null,
      );
      if (stream !== undefined) {
        stream.peer = from;
        stream.streamRequestId = pull.streamRequestId;
      }
    }
    if (stream === undefined) {
      this.abort(from, pull.group, pull.streamRequestId, 'no stream of that snapshot is open');
      this.host.streamLost(pull.group, from);
      return;
    }
    stream.idleTicks = 0;
    if (stream.lastSent !== null && pull.seq === stream.lastSent.seq) {
      this.host.send(from, stream.lastSent);
      return;
    }
    if (pull.seq !== stream.nextSeq || stream.done) {
      if (pull.seq < stream.nextSeq) return; // A stale repeat of an earlier pull.
      this.closeStream(stream);
      this.abort(from, pull.group, pull.streamRequestId, `chunk ${pull.seq} was not next`);
      this.host.streamLost(pull.group, from);
      return;
    }
    this.sendNext(stream);
  }

  private sendNext(stream: OutgoingStream): void {
    const current = stream.next ?? stream.iterator.next();
    stream.next = null;
    const seq = stream.nextSeq++;
    current
      .then(async (result) => {
        if (result.done === true) throw new Error('the stream ended before a final chunk');
        const following = stream.iterator.next();
        const after = await following;
        const final = after.done === true;
        if (!final) stream.next = Promise.resolve(after);
        const record: SnapshotChunkRecord = {
          kind: 'snapshotChunk',
          group: stream.group,
          streamRequestId: stream.streamRequestId,
          seq,
          final,
          data: result.value,
        };
        stream.lastSent = record;
        if (final) this.finish(stream);
        if (stream.peer !== null) this.host.send(stream.peer, record);
        this.host.wake();
      })
      .catch((error: unknown) => {
        if (stream.peer !== null) {
          this.abort(stream.peer, stream.group, stream.streamRequestId, String(error));
          this.host.streamLost(stream.group, stream.peer);
        }
        this.closeStream(stream);
        this.host.wake();
      });
  }

  private abort(to: NodeId, group: GroupId, streamRequestId: number, reason: string): void {
    const record: SnapshotAbortRecord = {
      kind: 'snapshotAbort',
      group,
      streamRequestId,
      reason: reason.slice(0, 200),
    };
    this.host.send(to, record);
  }

  /**
   * The final chunk is read: release the store's view now and free the stream's slot; keep
   * the record for a repeated pull, within the bound on finished streams.
   */
  private finish(stream: OutgoingStream): void {
    stream.done = true;
    stream.iterator.return?.().catch(() => {});
    let finished = 0;
    for (const s of this.outgoing) if (s.done) finished++;
    for (let i = 0; finished > this.settings.maxOpenStreams && i < this.outgoing.length; ) {
      const oldest = this.outgoing[i]!;
      if (oldest.done && oldest !== stream) {
        this.outgoing.splice(i, 1);
        finished--;
      } else {
        i++;
      }
    }
  }

  private closeStream(stream: OutgoingStream): void {
    const at = this.outgoing.indexOf(stream);
    if (at >= 0) this.outgoing.splice(at, 1);
    // Closing releases the store's view (an iterator's return()); a finished stream did.
    if (!stream.done) stream.iterator.return?.().catch(() => {});
  }

  /** Closes every stream of `group` (the group is gone from this node). */
  dropGroup(group: GroupId): void {
    for (const stream of [...this.outgoing]) if (stream.group === group) this.closeStream(stream);
    const pull = this.incoming.get(group);
    if (pull !== undefined) this.giveUp(pull, 'the group was removed', false);
  }

  // ---- Follower side --------------------------------------------------------------------

  /** Whether another install may start (a held Ready beyond the bound is reloaded). */
  canStartPull(): boolean {
    return this.incoming.size < this.settings.maxIncomingStreams;
  }

  /** Starts pulling the KV stream for the snapshot of `replica.heldReady` from `leader`. */
  startPull(replica: GroupReplica, snapshot: Snapshot, leader: NodeId): void {
    const pull: IncomingPull = {
      replica,
      snapshot,
      leader,
      streamRequestId: this.host.random.nextInt(U32_RANGE),
      restore: null,
      nextSeq: 0,
      idleTicks: 0,
      sinceRequestTicks: 0,
      adding: true,
      failed: false,
    };
    this.incoming.set(replica.group, pull);
    this.host.trace(
      `group ${replica.group}: pulling the KV state of snapshot ${snapshot.metadata.index} from ${leader}`,
    );
    this.host.storage.beginRestore(replica.group).then(
      (restore) => {
        if (pull.failed) {
          restore.abort().catch(() => {});
          return;
        }
        pull.restore = restore;
        pull.adding = false;
        this.requestChunk(pull);
      },
      (error: unknown) => this.giveUp(pull, `beginRestore failed: ${String(error)}`, true),
    );
  }

  /** The restore of a held Ready, if it is complete (the loop then writes it). */
  completedRestore(group: GroupId): SnapshotRestore | null {
    const pull = this.incoming.get(group);
    if (pull === undefined || pull.restore === null || !pull.restore.complete || pull.adding) {
      return null;
    }
    return pull.restore;
  }

  /** The batch carrying the restore is durable: the install is done. */
  installedRestore(group: GroupId): void {
    this.incoming.delete(group);
    this.installed++;
  }

  onChunk(from: NodeId, chunk: SnapshotChunkRecord): void {
    const pull = this.incoming.get(chunk.group);
    if (
      pull === undefined ||
      pull.leader !== from ||
      pull.streamRequestId !== chunk.streamRequestId ||
      pull.restore === null ||
      pull.adding ||
      chunk.seq !== pull.nextSeq
    ) {
      return; // A duplicate or a chunk of an abandoned stream.
    }
    pull.adding = true;
    pull.idleTicks = 0;
    const restore = pull.restore;
    restore.add(chunk.data).then(
      () => {
        if (pull.failed) return;
        pull.adding = false;
        pull.nextSeq++;
        if (restore.complete) {
          this.host.touch(pull.replica);
        } else if (chunk.final) {
          this.giveUp(pull, 'the final chunk did not complete the restore', true);
        } else {
          this.requestChunk(pull);
        }
      },
      (error: unknown) => this.giveUp(pull, `a chunk was refused: ${String(error)}`, true),
    );
  }

  onAbort(from: NodeId, abort: SnapshotAbortRecord): void {
    const pull = this.incoming.get(abort.group);
    if (pull === undefined || pull.leader !== from) return;
    if (pull.streamRequestId !== abort.streamRequestId) return;
    this.giveUp(pull, `the leader gave the stream up: ${abort.reason}`, true);
  }

  private requestChunk(pull: IncomingPull): void {
    pull.sinceRequestTicks = 0;
    this.host.send(pull.leader, {
      kind: 'snapshotPull',
      group: pull.replica.group,
      snapshotIndex: pull.snapshot.metadata.index,
      streamRequestId: pull.streamRequestId,
      seq: pull.nextSeq,
    });
  }

  private giveUp(pull: IncomingPull, why: string, reload: boolean): void {
    if (pull.failed) return;
    pull.failed = true;
    if (this.incoming.get(pull.replica.group) === pull) this.incoming.delete(pull.replica.group);
    pull.restore?.abort().catch(() => {});
    this.host.trace(`group ${pull.replica.group}: snapshot install given up: ${why}`);
    if (reload) this.host.reload(pull.replica, why);
    this.host.touch(pull.replica);
  }

  // ---- Time ------------------------------------------------------------------------------

  onTick(): void {
    const idle = this.settings.streamIdleTicks;
    for (const stream of [...this.outgoing]) {
      if (++stream.idleTicks <= idle) continue;
      this.closeStream(stream);
      if (stream.peer !== null && !stream.done) this.host.streamLost(stream.group, stream.peer);
    }
    for (const pull of [...this.incoming.values()]) {
      // Adding a chunk, or complete and waiting for the batch that installs it: not idle.
      if (pull.adding || pull.restore?.complete === true) continue;
      if (++pull.idleTicks > idle) {
        this.giveUp(pull, `no chunk for ${idle} ticks`, true);
      } else if (++pull.sinceRequestTicks > this.settings.pullResendTicks && pull.restore) {
        this.requestChunk(pull);
      }
    }
  }

  /** Closes every stream (the node is closing). */
  close(): void {
    for (const stream of [...this.outgoing]) this.closeStream(stream);
    for (const pull of [...this.incoming.values()]) this.giveUp(pull, 'the node closed', false);
  }
}
