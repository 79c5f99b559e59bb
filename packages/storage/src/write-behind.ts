/**
 * The database copy written behind the journal (README "IndexedDB and its journal"). A
 * batch is acknowledged once its journal frame is flushed: the journal alone makes it
 * durable, and an open replays into the database whatever batches the database lacks (a
 * kill between the two writes already left the journal ahead). The database then takes
 * the acknowledged batches in the background, several at a time in one strict
 * transaction, each key's last op only: a group record, a session record or the batch
 * number rewritten by every batch is put once per transaction instead of once per batch,
 * and a batch no longer waits for IndexedDB's commit, the slowest part of a write.
 *
 * Until a batch is in the database, its values are pending here: reads look here first,
 * and a scan's view starts with the pending values in its range (ScanViews keeps what the
 * transactions overwrite under it afterwards). Bounded: past MAX_BEHIND_BATCHES batches or
 * MAX_BEHIND_BYTES bytes not in the database, the next write waits for it to catch up. A
 * transaction that fails leaves the store failed for good (every later call rejects with
 * `io`); the next open replays the journal's batches into the database.
 *
 * Pure (no IndexedDB here): indexeddb.browser.ts hands it the transaction to run.
 */
import { binaryKey } from './binary-key.ts';
import type { JournalOp } from './codec.ts';
import type { EngineOp } from './engine.ts';
import { StorageError } from './errors.ts';

/** What the scans need to hear before a transaction overwrites records under them (ScanViews). */
export interface ScanGuard {
  preserve(ops: readonly JournalOp[]): Promise<void>;
}

/** Batches acknowledged but not in the database at most, before a write waits. */
export const MAX_BEHIND_BATCHES = 256;
/** The key and value bytes of those batches at most, before a write waits. */
export const MAX_BEHIND_BYTES = 16 * 1024 * 1024;
/** Batches one transaction takes at most (a write that waits, waits for one such). */
export const MAX_BATCHES_PER_TRANSACTION = 64;

interface QueuedBatch {
  readonly seq: number;
  readonly ops: readonly EngineOp[];
  /** `ops`' keys as binary strings, in order. */
  readonly keys: readonly string[];
  /** `ops`' key and value bytes. */
  readonly bytes: number;
}

/** Writes one transaction: the ops, then the batch number; resolves once it committed. */
export type DatabaseWrite = (ops: readonly JournalOp[], seq: number) => Promise<void>;

export class DatabaseBehind {
  /** Each pending key's latest value (null: deleted), until a transaction holds that op. */
  private readonly pending = new Map<string, Uint8Array | null>();
  private queued: QueuedBatch[] = [];
  private queuedBytes = 0;
  private flushing: Promise<void> | null = null;
  private failure: StorageError | null = null;

  constructor(
    private readonly name: string,
    private readonly views: ScanGuard,
    private readonly write: DatabaseWrite,
  ) {}

  /** Throws the failure of a transaction behind, if one failed. */
  check(): void {
    if (this.failure !== null) throw this.failure;
  }

  /** Whether a write should wait for the database first (the bounds above). */
  get full(): boolean {
    return this.queued.length >= MAX_BEHIND_BATCHES || this.queuedBytes >= MAX_BEHIND_BYTES;
  }

  /** The value pending for `key`: undefined if none is (read the database), null if deleted. */
  lookup(key: Uint8Array): Uint8Array | null | undefined {
    if (this.pending.size === 0) return undefined;
    return this.pending.get(binaryKey(key));
  }

  /** The pending values of keys in [lo, hi) (no upper bound if null), for a scan's view. */
  pendingIn(lo: Uint8Array, hi: Uint8Array | null): Map<string, Uint8Array | null> {
    const found = new Map<string, Uint8Array | null>();
    if (this.pending.size === 0) return found;
    const from = binaryKey(lo);
    const to = hi === null ? null : binaryKey(hi);
    for (const [key, value] of this.pending) {
      if (key >= from && (to === null || key < to)) found.set(key, value);
    }
    return found;
  }

  /** Batch `seq` is in the journal (acknowledged): it goes to the database behind. */
  add(seq: number, ops: readonly EngineOp[]): void {
    const keys: string[] = new Array(ops.length);
    let bytes = 0;
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      const key = binaryKey(op.key);
      keys[i] = key;
      this.pending.set(key, op.type === 'put' ? op.value : null);
      bytes += op.key.length + (op.type === 'put' ? op.value.length : 0);
    }
    this.queued.push({ seq, ops, keys, bytes });
    this.queuedBytes += bytes;
    this.kick();
  }

  /** Resolves once the transaction in flight (if any) ended; rejects if one failed. */
  async settle(): Promise<void> {
    await this.flushing?.catch(() => {});
    this.check();
  }

  /** Resolves once every batch added so far is in the database; rejects if one failed. */
  async drain(): Promise<void> {
    while (this.flushing !== null || (this.queued.length > 0 && this.failure === null)) {
      this.kick();
      await this.flushing?.catch(() => {});
    }
    this.check();
  }

  private kick(): void {
    if (this.flushing !== null || this.queued.length === 0 || this.failure !== null) return;
    this.flushing = this.flushOnce().finally(() => {
      this.flushing = null;
      this.kick();
    });
    this.flushing.catch(() => {});
  }

  /** One transaction of every batch queued now, each key's last op only. */
  private async flushOnce(): Promise<void> {
    const batches = this.queued.splice(0, MAX_BATCHES_PER_TRANSACTION);
    for (const batch of batches) this.queuedBytes -= batch.bytes;
    const latest = new Map<string, EngineOp>();
    for (const batch of batches) {
      for (let i = 0; i < batch.ops.length; i++) latest.set(batch.keys[i]!, batch.ops[i]!);
    }
    const ops = [...latest.values()];
    try {
      await this.views.preserve(ops);
      await this.write(ops, batches[batches.length - 1]!.seq);
    } catch (error) {
      this.failure = new StorageError(
        'io',
        `${this.name}: batches ${batches[0]!.seq}..${batches.at(-1)!.seq}, acknowledged from the journal, could not be written to the database (the next open replays them from the journal): ${String(error)}`,
        { cause: error },
      );
      throw this.failure;
    }
    for (const [key, op] of latest) {
      // A later batch's op of the same key stays pending until its own transaction.
      if (this.pending.get(key) === (op.type === 'put' ? op.value : null)) this.pending.delete(key);
    }
  }
}
