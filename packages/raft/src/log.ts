import { invariant, isRaftError, RaftError, RaftErrorCode } from './errors.ts';
import type { Storage } from './storage.ts';
import { limitSize } from './storage.ts';
import type { Entry, Snapshot } from './types.ts';

/**
 * Entries (and possibly a snapshot) not yet persisted: everything raft produced since the
 * last Ready the host acknowledged with advance(). `offset` is the index of entries[0].
 */
class UnstableLog {
  snapshot: Snapshot | null = null;
  entries: Entry[] = [];

  constructor(public offset: number) {}

  maybeFirstIndex(): number | undefined {
    return this.snapshot ? this.snapshot.metadata.index + 1 : undefined;
  }

  maybeLastIndex(): number | undefined {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1;
    return this.snapshot ? this.snapshot.metadata.index : undefined;
  }

  maybeTerm(index: number): number | undefined {
    if (index < this.offset) {
      const snap = this.snapshot?.metadata;
      return snap && snap.index === index ? snap.term : undefined;
    }
    return this.entries[index - this.offset]?.term;
  }

  /** Entries up to (index, term) are durable; drop them unless they were replaced meanwhile. */
  stableTo(index: number, term: number): void {
    if (this.maybeTerm(index) !== term || index < this.offset) return;
    this.entries = this.entries.slice(index + 1 - this.offset);
    this.offset = index + 1;
  }

  stableSnapTo(index: number): void {
    if (this.snapshot && this.snapshot.metadata.index === index) this.snapshot = null;
  }

  restore(snapshot: Snapshot): void {
    this.offset = snapshot.metadata.index + 1;
    this.entries = [];
    this.snapshot = snapshot;
  }

  /**
   * Appends in place (`entries` is this log's own array, never handed out: Ready gets a
   * copy), so many proposals between two Readies cost linear time, not a copy each.
   */
  truncateAndAppend(entries: readonly Entry[]): void {
    const from = entries[0]!.index;
    if (from <= this.offset) {
      // Replaces everything unstable; the storage suffix after `from` is superseded too.
      this.offset = from;
      this.entries = [...entries];
      return;
    }
    // RaftLog.append asserted there is no gap: from ≤ offset + entries.length.
    this.entries.length = from - this.offset;
    for (const e of entries) this.entries.push(e);
  }

  slice(lo: number, hi: number): Entry[] {
    invariant(
      this.offset <= lo && hi <= this.offset + this.entries.length,
      `unstable.slice(${lo}, ${hi}) out of [${this.offset}, ${this.offset + this.entries.length}]`,
    );
    return this.entries.slice(lo - this.offset, hi - this.offset);
  }
}

/**
 * The replicated log: durable entries in Storage followed by unstable ones in memory
 * (etcd-io/raft log.go). Tracks `committed` (known committed) and `applied` (handed to and
 * acknowledged by the application). Invariant: applied ≤ committed ≤ lastIndex.
 */
export class RaftLog {
  readonly unstable: UnstableLog;
  committed: number;
  applied: number;
  /** Highest index handed out in a Ready and not yet acknowledged by advance(). */
  applying: number;

  constructor(
    readonly storage: Storage,
    private readonly maxApplyingBytes: number,
  ) {
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new UnstableLog(last + 1);
    this.committed = first - 1;
    this.applied = first - 1;
    this.applying = first - 1;
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  lastTerm(): number {
    const t = this.term(this.lastIndex());
    invariant(t !== undefined, `no term for last index ${this.lastIndex()}`);
    return t;
  }

  /** Term of `index`, or undefined when it is compacted or beyond the last index. */
  term(index: number): number | undefined {
    const t = this.unstable.maybeTerm(index);
    if (t !== undefined) return t;
    // The term of firstIndex - 1 (the snapshot's) stays available for log matching.
    if (index + 1 < this.firstIndex() || index > this.lastIndex()) return undefined;
    try {
      return this.storage.term(index);
    } catch (e) {
      if (isRaftError(e, RaftErrorCode.Compacted) || isRaftError(e, RaftErrorCode.Unavailable)) {
        return undefined;
      }
      throw e;
    }
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** A candidate's log (lastIndex, lastTerm) is at least as up to date as ours (§5.4.1). */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /** A candidate's log (lastIndex, lastTerm) is strictly more up to date than ours. */
  isAhead(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex > this.lastIndex());
  }

  /** Index of the first entry whose term differs from ours (or that we lack); 0 if none. */
  findConflict(entries: readonly Entry[]): number {
    for (const e of entries) if (!this.matchTerm(e.index, e.term)) return e.index;
    return 0;
  }

  /**
   * Fast backtracking: the largest index ≤ `index` whose term is ≤ `term`, with that term
   * (0 if unknown). Any entry after it cannot match a log whose entry at `index` has `term`.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    for (let i = index; i > 0; i--) {
      const ours = this.term(i);
      if (ours === undefined) return { index: i, term: 0 };
      if (ours <= term) return { index: i, term: ours };
    }
    return { index: 0, term: 0 };
  }

  /**
   * Follower side of AppendEntries (§5.3): if our entry at `index` has `logTerm`, append
   * `entries` (replacing a conflicting suffix), advance commit, and return the new last
   * index the message covers; otherwise undefined.
   */
  maybeAppend(
    index: number,
    logTerm: number,
    committed: number,
    entries: readonly Entry[],
  ): number | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNew = index + entries.length;
    const conflict = this.findConflict(entries);
    if (conflict !== 0) {
      invariant(
        conflict > this.committed,
        `entry ${conflict} conflicts with committed entry (committed ${this.committed})`,
      );
      this.append(entries.slice(conflict - index - 1));
    }
    this.commitTo(Math.min(committed, lastNew));
    return lastNew;
  }

  append(entries: readonly Entry[]): number {
    if (entries.length === 0) return this.lastIndex();
    const after = entries[0]!.index - 1;
    invariant(after >= this.committed, `append after ${after} is below commit ${this.committed}`);
    invariant(after <= this.lastIndex(), `append after ${after} leaves a gap`);
    this.unstable.truncateAndAppend(entries);
    return this.lastIndex();
  }

  commitTo(index: number): void {
    if (this.committed >= index) return;
    invariant(
      index <= this.lastIndex(),
      `commit ${index} is beyond last index ${this.lastIndex()} (corrupt or truncated log?)`,
    );
    this.committed = index;
  }

  /** Commits `index` only if its entry is from `term`, the leader's current term (§5.4.2). */
  maybeCommit(index: number, term: number): boolean {
    if (index > this.committed && this.term(index) === term) {
      this.commitTo(index);
      return true;
    }
    return false;
  }

  appliedTo(index: number): void {
    if (index === 0) return;
    invariant(
      index <= this.committed && index >= this.applied,
      `applied ${index} outside [${this.applied}, ${this.committed}]`,
    );
    this.applied = index;
    this.applying = Math.max(this.applying, index);
  }

  stableTo(index: number, term: number): void {
    this.unstable.stableTo(index, term);
  }

  stableSnapTo(index: number): void {
    this.unstable.stableSnapTo(index);
  }

  restore(snapshot: Snapshot): void {
    this.committed = snapshot.metadata.index;
    this.unstable.restore(snapshot);
  }

  hasPendingSnapshot(): boolean {
    return this.unstable.snapshot !== null;
  }

  /** Committed entries not yet handed out, up to maxApplyingBytes (none while a snapshot is pending). */
  nextCommittedEntries(): Entry[] {
    if (!this.hasNextCommittedEntries()) return [];
    const lo = Math.max(this.applying, this.applied) + 1;
    return this.slice(lo, this.committed + 1, this.maxApplyingBytes);
  }

  hasNextCommittedEntries(): boolean {
    if (this.hasPendingSnapshot()) return false;
    return this.committed > Math.max(this.applying, this.applied);
  }

  /** Entries from `index` to the end, at most `maxBytes` (at least one). Throws Compacted. */
  entriesFrom(index: number, maxBytes: number): Entry[] {
    if (index > this.lastIndex()) return [];
    return this.slice(index, this.lastIndex() + 1, maxBytes);
  }

  /** Entries in [lo, hi) from storage then the unstable log. Throws Compacted if lo is compacted. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    invariant(lo <= hi, `slice: lo ${lo} > hi ${hi}`);
    if (lo < this.firstIndex()) {
      throw new RaftError(
        RaftErrorCode.Compacted,
        `slice(${lo}): first index is ${this.firstIndex()}`,
      );
    }
    invariant(
      hi <= this.lastIndex() + 1,
      `slice(${lo}, ${hi}) beyond last index ${this.lastIndex()}`,
    );
    if (lo === hi) return [];
    let result: Entry[] = [];
    const unstableFrom = this.unstable.offset;
    if (lo < unstableFrom) {
      const stored = this.storage.entries(lo, Math.min(hi, unstableFrom), maxBytes);
      // Fewer than asked: the byte limit was reached, stop here.
      if (stored.length < Math.min(hi, unstableFrom) - lo) return stored;
      result = stored;
    }
    if (hi > unstableFrom) {
      const fromUnstable = this.unstable.slice(Math.max(lo, unstableFrom), hi);
      result = result.length > 0 ? result.concat(fromUnstable) : fromUnstable;
    }
    return limitSize(result, maxBytes);
  }

  /** The snapshot to send to a follower: the unstable one if any, else the storage's. */
  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }
}
