/**
 * The durable storage contract of a meshkv node: what it persists for every Raft group it
 * hosts, and how it gets it back after a restart.
 *
 * A node owns one NodeStorage. Its loop gathers the Ready of every group, writes them as
 * ONE WriteBatch (group commit), and only after `write` resolves sends messages that depend
 * on that state, applies committed entries and advances. On restart it calls `load()` and
 * rebuilds each group's Raft MemoryStorage (hard state, snapshot, entries) and partition
 * state machine (applied state, sessions; KV values are read with `get`/`snapshotChunks`).
 *
 * Backends: memory (memory.ts; tests and simulation, with crash injection), IndexedDB
 * (`@meshkv/storage/browser`) and disk (`@meshkv/storage/node`). All three run the same
 * implementation (store.ts) over a different Engine, so they behave identically.
 */
import {
  type ConfState,
  configDefaults,
  type Entry,
  type GroupId,
  type HardState,
  type Snapshot,
} from '@meshkv/raft';

/** Limits on everything a caller hands in; exceeding one fails with code 'too_large'. */
export const limits = {
  /** A KV key: non-empty, well-formed UTF-16, at most this many UTF-8 bytes. */
  maxKeyBytes: 1024,
  /** A KV value (DESIGN: values up to 1 MiB). */
  maxValueBytes: 1024 * 1024,
  /** One log entry's data: a 1 MiB value plus its key and command header fit with room. */
  maxEntryDataBytes: 2 * 1024 * 1024,
  /**
   * A Raft snapshot's `data` (the KV data itself travels as chunks, not here): exactly what
   * a raft follower reassembles at most by default, so a snapshot raft accepts is stored.
   */
  maxSnapshotDataBytes: configDefaults.maxSnapshotBytes,
  /** A client id in the session table. */
  maxClientIdBytes: 256,
  /** One session record (the last sequence number and result of one client). */
  maxSessionRecordBytes: 64 * 1024,
  /** A NodeId in a hard state's vote or a ConfState (types.ts: at most 64 UTF-8 bytes). */
  maxNodeIdBytes: 64,
  /** Members listed in one ConfState field. */
  maxConfMembers: 1024,
  /** Groups written by one batch. */
  maxGroupsPerBatch: 65536,
  /** Everything one batch carries (entry data, values, records), in bytes. */
  maxBatchBytes: 256 * 1024 * 1024,
  /**
   * A snapshot chunk handed to SnapshotRestore.add. 8 MiB, so that a chunk with the node's
   * frame header fits one transport frame (16 MiB by default; test/limits.test.ts checks).
   */
  maxChunkBytes: 8 * 1024 * 1024,
  /**
   * `snapshotChunks`' targetChunkBytes at most. A chunk closes once past its target, so it
   * may overshoot by one record (a 1 KiB key and a 1 MiB value) and the first chunk also
   * carries the applied state (up to 4 × maxConfMembers ids): 2 MiB below maxChunkBytes,
   * every chunk a stream makes is one a restore accepts.
   */
  maxTargetChunkBytes: 6 * 1024 * 1024,
} as const;

/** One KV change; `value: null` deletes the key (a no-op if it is absent). */
export interface KvWrite {
  readonly key: string;
  readonly value: Uint8Array | null;
}

/**
 * One client-session change (Raft thesis §6.3): `record` is the node's opaque encoding of
 * the client's last sequence number and result; `null` drops the client (session expiry).
 */
export interface SessionWrite {
  readonly clientId: string;
  readonly record: Uint8Array | null;
}

/** The state machine's position: the last applied entry and the configuration after it. */
export interface AppliedState {
  readonly index: number;
  readonly term: number;
  readonly confState: ConfState;
}

/**
 * One group's part of a batch. Every field is optional except `group`; the parts are applied
 * in this order, each seeing the result of the previous ones:
 *
 *   create → snapshot → restore → entries → savedSnapshot → compactTo → hardState →
 *   appliedState → kv (in array order) → sessions (in array order)
 *
 * `remove` excludes every other field. A group not hosted needs `create` in its part
 * ('unknown_group' otherwise); a hosted one refuses it ('group_exists'). Any violation rejects the WHOLE batch with
 * 'invalid_argument' (or 'too_large', 'unknown_group', 'group_exists',
 * 'snapshot_out_of_date') and changes nothing.
 */
export interface GroupWrite {
  readonly group: GroupId;
  /**
   * Start hosting the group: hard state {term 0, vote null, commit 0}, empty log compacted
   * at {index 0, term 0}, no snapshot, applied {0, 0, empty ConfState}, no KV data.
   */
  readonly create?: true;
  /**
   * Stop hosting the group and drop all of its data (log, snapshot, KV, sessions). Its id
   * may be created again later, in a later batch, with empty state.
   */
  readonly remove?: true;
  /**
   * Ready.snapshot: a snapshot received from the leader. Replaces the whole log: the log is
   * then empty and compacted at (metadata.index, metadata.term). It must be newer than the
   * stored snapshot or at its index ('snapshot_out_of_date' if older, as raft's
   * MemoryStorage.applySnapshot). It does not touch the KV data: pair it with
   * `restore` to install the state machine carried by the snapshot's chunks (or write it
   * with `kv`, `sessions` and `appliedState`). After a part carrying `snapshot` or
   * `restore`, the applied index must be at least the compaction point: a state machine
   * behind it could never get the entries in between ('invalid_argument').
   */
  readonly snapshot?: Snapshot;
  /**
   * Replaces the group's KV data, sessions and applied state with those staged by a
   * completed SnapshotRestore begun for this group on this store instance. The restored
   * applied state must lie on the log as the part leaves it (between the compaction point
   * and the last index, with the log's term there): normally it is exactly the snapshot
   * of the same part. Anything else is an 'invalid_argument'.
   */
  readonly restore?: SnapshotRestore;
  /**
   * Ready.entries: entries to append, with consecutive indexes and non-decreasing terms.
   * Entries at or below compacted.index are ignored (as raft's MemoryStorage.append does);
   * the first remaining index i must be ≤ lastIndex + 1 and its term ≥ the term at i − 1.
   * Everything stored at index ≥ i is replaced (a conflicting suffix is truncated), but
   * committed entries (up to the stored hardState.commit) are never replaced: entries may
   * restate them, with their terms, and must then reach the last committed one.
   */
  readonly entries?: readonly Entry[];
  /**
   * A snapshot the node made itself (etcd's CreateSnapshot): stored as the latest
   * snapshot; the log is untouched. metadata.index must lie in [compacted.index, lastIndex],
   * its term match the log, and it must be newer than the stored snapshot.
   */
  readonly savedSnapshot?: Snapshot;
  /**
   * Discard entries at or below this index (etcd's Compact). At or below the current
   * compaction point it is a no-op; above the latest snapshot's index (a snapshot saved in
   * the same part counts) it is an 'invalid_argument': entries are only dropped once a
   * snapshot covers them, so a restarted raft MemoryStorage is applySnapshot + append.
   */
  readonly compactTo?: number;
  /**
   * Ready.hardState. Term and commit never decrease, and commit never passes the last
   * index as the part leaves the log ('invalid_argument').
   */
  readonly hardState?: HardState;
  /**
   * The state machine's new position; its index never decreases, and where the log holds
   * that index, its term is the log's.
   */
  readonly appliedState?: AppliedState;
  /** KV changes of entries applied by the state machine. */
  readonly kv?: readonly KvWrite[];
  /** Session-table changes of entries applied by the state machine. */
  readonly sessions?: readonly SessionWrite[];
}

/** The output of many groups, written atomically: each group appears at most once. */
export interface WriteBatch {
  readonly groups: readonly GroupWrite[];
}

/** Everything a restarted node needs to resume a group where its last durable batch left it. */
export interface GroupState {
  readonly group: GroupId;
  readonly hardState: HardState;
  /** The latest snapshot (received or saved), or null if there never was one. */
  readonly snapshot: Snapshot | null;
  /** The log's compaction point: entries start at compacted.index + 1. */
  readonly compacted: { readonly index: number; readonly term: number };
  /** The log after the compaction point, consecutive. */
  readonly entries: readonly Entry[];
  readonly appliedState: AppliedState;
  readonly sessions: ReadonlyMap<string, Uint8Array>;
}

export interface NodeState {
  /** Every hosted group, by id. */
  readonly groups: ReadonlyMap<GroupId, GroupState>;
}

/**
 * Installs a partition's state machine from snapshot chunks (made by `snapshotChunks` on
 * another node). Chunks are added in order; the restore takes effect only when a batch
 * carries it in `GroupWrite.restore`, atomically with the rest of that batch. Staged data
 * that is never committed (abort, crash, close) is discarded, at the latest on next open.
 */
export interface SnapshotRestore {
  readonly group: GroupId;
  /**
   * Validates and stages the next chunk. Rejects with 'invalid_argument' for a chunk out of
   * order, after the final chunk, or of another stream (stream ids are random, so streams
   * of two nodes, or of one node before and after a restart, never pass for one; the
   * restore stays usable: add the right one); 'corrupt' for an undecodable one; 'too_large' beyond limits.maxChunkBytes.
   * Calls run in call order with the store's other calls.
   */
  add(chunk: Uint8Array): Promise<void>;
  /** True once the final chunk was added: the restore may then be committed. */
  readonly complete: boolean;
  /** Discards the staged data. A no-op after commit. */
  abort(): Promise<void>;
}

export interface SnapshotChunkOptions {
  /** A chunk closes once it holds at least this many bytes (one record may overshoot it). */
  readonly targetChunkBytes?: number;
}

/**
 * The durable store of one node. Calls may be made concurrently; they are executed one at a
 * time in call order. After a call fails with 'io' every later call fails with 'io' too;
 * after `close()` (or a memory-backend crash) every call fails with 'closed'. Every record
 * read back is checked against the checksum it was written with, and the open checks that
 * no write was lost while later ones survived: damage is 'corrupt', never a silent change.
 */
export interface NodeStorage {
  /** The database this store uses (a path, an IndexedDB name): error messages carry it. */
  readonly name: string;

  /**
   * The state of every hosted group, after every call made before it (it waits for them).
   * The first call after opening returns what opening read (nothing changed since); later
   * calls read the medium again: three range reads plus one per group (its sessions).
   */
  load(): Promise<NodeState>;

  /**
   * Applies a batch atomically and durably: when the promise resolves the batch survives
   * any crash; after a crash at any instant before that, each group sees all of the batch
   * or none of it (in fact the whole batch is all-or-nothing). Batches apply in call order.
   * A rejected batch changed nothing, except with 'io' (unknown, hence the store stops).
   */
  write(batch: WriteBatch): Promise<void>;

  /**
   * The value of `key` in the group's KV data, or null, after every call made before it (it
   * waits for them). 'unknown_group' if the group is not hosted.
   */
  get(group: GroupId, key: string): Promise<Uint8Array | null>;

  /**
   * Streams the group's state machine (applied state, sessions, KV data) as chunks, as left
   * by every call made before it, unaffected by later writes however slowly it is consumed.
   * The first chunk carries the applied state; the last one is marked final. Feed them, in
   * order, to a SnapshotRestore on the receiving node. Errors ('unknown_group',
   * 'invalid_argument' for targetChunkBytes outside [1, limits.maxTargetChunkBytes]) surface on
   * the first iteration. Memory held while streaming: LevelDB and memory read from a
   * snapshot; IndexedDB reads pages of ~1 MiB and keeps the old values of what is written
   * into the part it has not streamed yet (copy-on-write). A stream dropped unfinished
   * (neither drained nor returned) releases that view once it is garbage-collected.
   */
  snapshotChunks(group: GroupId, options?: SnapshotChunkOptions): AsyncIterable<Uint8Array>;

  /**
   * Starts staging a state machine for `group`, which must be hosted when the batch carrying
   * the restore runs (or be created by that batch's part). One durable write.
   */
  beginRestore(group: GroupId): Promise<SnapshotRestore>;

  /** Waits for calls in progress, then releases the database. Idempotent. */
  close(): Promise<void>;
}
