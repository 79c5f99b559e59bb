/**
 * The in-memory index of one group's log segments (store.ts keeps one per group): where
 * each segment starts and the terms of the entries it covers. The node's group commit
 * appends one segment per group and batch, so a batch must cost the same after a million
 * batches as after ten: appending, truncating a suffix and compacting a prefix touch only
 * the segments they add or remove (amortized), and the append path's lookups (the last
 * index, the term before it) look at the last segment only. Other lookups try the last
 * few segments (the applied index a part checks lies there), then search.
 *
 * Edits happen in place while a batch is planned; each returns how to undo it, so a batch
 * rejected halfway leaves the index as it was.
 */

/** A segment: its key's first index and the terms of the entries it covers. */
export interface Segment {
  readonly first: number;
  /** Entries it covers: up to the next segment's first index. */
  readonly count: number;
  /** Terms of its entries; may be longer than `count` (a tail masked by a later segment). */
  readonly terms: readonly number[];
}

export type Undo = () => void;

/** The undo of an edit that changed nothing (one function, not one per call). */
const unchanged: Undo = () => {};

/** Lookups look at this many segments from the end before searching. */
const nearEndSegments = 4;

/** The front is dropped lazily: the array is rebased once this many slots are unused. */
const rebaseSlots = 1024;

export class SegmentLog {
  /**
   * Segments examined by every SegmentLog so far (lookups and edits): what a batch costs
   * in the index, counted instead of timed (the per-batch cost test, `pnpm bench storage`).
   */
  static visited = 0;

  private segments: Segment[];
  /** Segments before `head` were compacted away. */
  private head = 0;

  constructor(segments: Segment[] = []) {
    this.segments = segments;
  }

  /** The undo of `push`, made once per log: a batch pushes a segment per group. */
  private readonly popLast: Undo = () => {
    this.segments.pop();
  };

  get length(): number {
    return this.segments.length - this.head;
  }

  /** The `i`-th live segment, 0 ≤ i < length. */
  at(i: number): Segment {
    SegmentLog.visited++;
    return this.segments[this.head + i]!;
  }

  /** The last index a segment covers, or null without segments. */
  lastIndex(): number | null {
    if (this.length === 0) return null;
    const last = this.at(this.length - 1);
    return last.first + last.count - 1;
  }

  /** Position of the last segment starting at or before `index`, or -1. */
  private locate(index: number): number {
    let lo = 0;
    let hi = this.length - 1;
    if (hi < 0 || this.at(0).first > index) return -1;
    // The last few segments first: the applied index checked per part is a batch or two
    // behind the last index, in one of them.
    for (let tries = 0; tries < nearEndSegments && hi > lo; tries++, hi--) {
      if (this.at(hi).first <= index) return hi;
    }
    if (this.at(hi).first <= index) return hi;
    // Invariant: at(lo).first ≤ index < at(hi).first.
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      if (this.at(mid).first <= index) lo = mid;
      else hi = mid;
    }
    return lo;
  }

  /** The term of the entry at `index`, or undefined if no segment covers it. */
  termAt(index: number): number | undefined {
    const at = this.locate(index);
    if (at < 0) return undefined;
    const segment = this.at(at);
    return index < segment.first + segment.count ? segment.terms[index - segment.first] : undefined;
  }

  /**
   * Drops the segments starting at or after `start` (each passed to `dropped`) and masks
   * the tail at `start` of the one it falls in.
   */
  truncateFrom(start: number, dropped: (segment: Segment) => void): Undo {
    const keep = this.locate(start - 1) + 1;
    const last = keep > 0 ? this.at(keep - 1) : undefined;
    const masks = last !== undefined && last.first + last.count > start;
    // An append after the last entry (the group commit's case) changes nothing here.
    if (keep === this.length && !masks) return unchanged;
    const removed = this.segments.splice(this.head + keep);
    SegmentLog.visited += removed.length;
    for (const segment of removed) dropped(segment);
    if (masks) {
      const masked: Segment = { first: last.first, count: start - last.first, terms: last.terms };
      this.segments[this.head + keep - 1] = masked;
    }
    return () => {
      if (masks) this.segments[this.head + keep - 1] = last;
      this.segments.push(...removed);
    };
  }

  push(segment: Segment): Undo {
    const last = this.length > 0 ? this.at(this.length - 1) : undefined;
    if (last !== undefined && last.first + last.count !== segment.first) {
      throw new Error(
        `segment at ${segment.first} does not follow the one ending at ${last.first + last.count - 1}`,
      );
    }
    this.segments.push(segment);
    return this.popLast;
  }

  /** Drops the segments wholly at or below `index` (each passed to `dropped`). */
  dropThrough(index: number, dropped: (segment: Segment) => void): Undo {
    let count = 0;
    while (count < this.length) {
      const segment = this.at(count);
      if (segment.first + segment.count - 1 > index) break;
      dropped(segment);
      count++;
    }
    if (count === 0) return unchanged;
    this.head += count;
    return () => {
      this.head -= count;
    };
  }

  /** Drops every segment (each passed to `dropped`). */
  clear(dropped: (segment: Segment) => void): Undo {
    return this.truncateFrom(this.length === 0 ? 0 : this.at(0).first, dropped);
  }

  /** Frees the slots of compacted segments once there are many; only between batches. */
  settle(): void {
    if (this.head >= rebaseSlots && this.head >= this.length) {
      this.segments = this.segments.slice(this.head);
      this.head = 0;
    }
  }
}
