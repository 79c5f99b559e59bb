import { invariant, RaftError, RaftErrorCode } from './errors.ts';
import {
  bootstrapSnapshot,
  type ConfState,
  type Entry,
  emptyConfState,
  emptyHardState,
  entrySizeBytes,
  type HardState,
  type Snapshot,
} from './types.ts';

/**
 * What raft reads from durable storage. Raft never writes through this interface: the
 * host persists each Ready (hard state, entries, snapshot) and then calls `advance()`;
 * the storage must reflect that write when raft next reads.
 *
 * Index space: the storage holds a snapshot (possibly empty, index 0) and the entries
 * `firstIndex()..lastIndex()` following it. `firstIndex() - 1` is the snapshot's index,
 * whose term `term()` must still return (it anchors the log-matching check).
 *
 * Errors: only RaftError with code Compacted, Unavailable or
 * SnapshotTemporarilyUnavailable as documented below; anything else thrown is treated as
 * fatal by the host (raft does not catch it).
 */
export interface Storage {
  /**
   * The persisted HardState and the configuration as of the last applied index
   * (`Config.applied`), or as of the snapshot when nothing was applied since it.
   */
  initialState(): { hardState: HardState; confState: ConfState };
  /**
   * Entries in [lo, hi), at most `maxBytes` by `entrySizeBytes` but always at least one
   * entry when lo < hi. Throws Compacted if lo < firstIndex(), Unavailable if
   * hi > lastIndex() + 1.
   */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /**
   * Term of entry `index`, for firstIndex() - 1 ≤ index ≤ lastIndex(). Throws Compacted
   * below that range, Unavailable above it.
   */
  term(index: number): number;
  /** Index of the first entry still available (snapshot index + 1). */
  firstIndex(): number;
  /** Index of the last entry (the snapshot index when there are no entries). */
  lastIndex(): number;
  /**
   * The most recent snapshot, sent to followers that need compacted entries. Its index
   * is at least firstIndex() - 1 (nothing is compacted that no snapshot covers), and it
   * includes every applied configuration change up to that index. Throws
   * SnapshotTemporarilyUnavailable while one is being produced; raft retries later.
   */
  snapshot(): Snapshot;
}

const emptySnapshot: Snapshot = Object.freeze({
  metadata: Object.freeze({ index: 0, term: 0, confState: emptyConfState }),
  data: new Uint8Array(0),
});

/**
 * Storage held in memory, for tests and the simulation; also the model durable backends
 * follow. The write methods (`append`, `setHardState`, `applySnapshot`, `compact`,
 * `createSnapshot`) are what a host calls while persisting a Ready.
 */
export class MemoryStorage implements Storage {
  private hardState: HardState = emptyHardState;
  private snap: Snapshot;
  /** ents[0] is a dummy entry holding the snapshot's index and term. */
  private ents: Entry[];

  /**
   * Starts empty (a node waiting to be caught up by a snapshot), or bootstrapped with an
   * initial configuration (see bootstrapSnapshot).
   */
  constructor(options: { confState?: ConfState } = {}) {
    this.snap = emptySnapshot;
    this.ents = [{ term: 0, index: 0, type: 0, data: new Uint8Array(0) }];
    if (options.confState) this.applySnapshot(bootstrapSnapshot(options.confState));
  }

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: this.hardState, confState: this.snap.metadata.confState };
  }

  setHardState(hs: HardState): void {
    this.hardState = hs;
  }

  /** The hard state last set: initialState's, without building its object (hosts check it per write). */
  writtenHardState(): HardState {
    return this.hardState;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const offset = this.ents[0]!.index;
    if (lo <= offset) {
      throw new RaftError(RaftErrorCode.Compacted, `entries(${lo}): compacted up to ${offset}`);
    }
    if (hi > this.lastIndex() + 1) {
      throw new RaftError(
        RaftErrorCode.Unavailable,
        `entries(${lo}, ${hi}): last index is ${this.lastIndex()}`,
      );
    }
    invariant(lo <= hi, `entries: lo ${lo} > hi ${hi}`);
    return limitSize(this.ents.slice(lo - offset, hi - offset), maxBytes);
  }

  term(index: number): number {
    const offset = this.ents[0]!.index;
    if (index < offset) {
      throw new RaftError(RaftErrorCode.Compacted, `term(${index}): compacted up to ${offset}`);
    }
    const entry = this.ents[index - offset];
    if (entry === undefined) {
      throw new RaftError(
        RaftErrorCode.Unavailable,
        `term(${index}): last index is ${this.lastIndex()}`,
      );
    }
    return entry.term;
  }

  firstIndex(): number {
    return this.ents[0]!.index + 1;
  }

  lastIndex(): number {
    return this.ents[0]!.index + this.ents.length - 1;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /**
   * Replaces the whole state with a snapshot received from the leader (a Ready's
   * `snapshot`). Throws SnapshotOutOfDate if it is older than the current one.
   */
  applySnapshot(snap: Snapshot): void {
    if (snap.metadata.index < this.snap.metadata.index) {
      throw new RaftError(
        RaftErrorCode.SnapshotOutOfDate,
        `snapshot ${snap.metadata.index} is older than ${this.snap.metadata.index}`,
      );
    }
    this.snap = snap;
    this.ents = [
      { term: snap.metadata.term, index: snap.metadata.index, type: 0, data: new Uint8Array(0) },
    ];
  }

  /**
   * Records a snapshot of the application state at `index` (≤ lastIndex) so it can be
   * sent to followers; call `compact` afterwards to drop the entries it covers.
   */
  createSnapshot(index: number, confState: ConfState, data: Uint8Array): Snapshot {
    if (index <= this.snap.metadata.index) {
      throw new RaftError(
        RaftErrorCode.SnapshotOutOfDate,
        `snapshot ${index} is not newer than ${this.snap.metadata.index}`,
      );
    }
    if (index > this.lastIndex()) {
      throw new RaftError(
        RaftErrorCode.InvalidArgument,
        `createSnapshot(${index}): last index is ${this.lastIndex()}`,
      );
    }
    this.snap = { metadata: { index, term: this.term(index), confState }, data };
    return this.snap;
  }

  /** Discards entries up to and including `compactIndex` (which must be ≤ lastIndex). */
  compact(compactIndex: number): void {
    const offset = this.ents[0]!.index;
    if (compactIndex <= offset) {
      throw new RaftError(
        RaftErrorCode.Compacted,
        `compact(${compactIndex}): already at ${offset}`,
      );
    }
    if (compactIndex > this.lastIndex()) {
      throw new RaftError(
        RaftErrorCode.InvalidArgument,
        `compact(${compactIndex}): last index is ${this.lastIndex()}`,
      );
    }
    const dummy = this.ents[compactIndex - offset]!;
    this.ents = [
      { term: dummy.term, index: dummy.index, type: 0, data: new Uint8Array(0) },
      ...this.ents.slice(compactIndex - offset + 1),
    ];
  }

  /**
   * Appends entries from a Ready, replacing any conflicting suffix. Entries already
   * covered by the snapshot are ignored; a gap after lastIndex is an invariant violation.
   */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[entries.length - 1]!.index;
    if (last < first) return;
    const kept = entries[0]!.index < first ? entries.slice(first - entries[0]!.index) : entries;
    const start = kept[0]!.index;
    invariant(
      start <= this.lastIndex() + 1,
      `append: gap between last index ${this.lastIndex()} and ${start}`,
    );
    // In place: `ents` is never handed out (entries() returns copies), and a copy per
    // append would make a long log quadratic to build.
    this.ents.length = start - this.ents[0]!.index;
    for (const e of kept) this.ents.push(e);
  }
}

/** The longest prefix of `entries` within `maxBytes`, but at least one entry. */
export function limitSize<T extends Entry>(entries: T[], maxBytes: number): T[] {
  if (entries.length === 0) return entries;
  let size = entrySizeBytes(entries[0]!);
  let n = 1;
  for (; n < entries.length; n++) {
    size += entrySizeBytes(entries[n]!);
    if (size > maxBytes) break;
  }
  return n === entries.length ? entries : entries.slice(0, n);
}
