/**
 * A bounded cache of one partition's durable values (README "The state machine"): a get
 * of a hot key is answered from memory instead of a storage read (an IndexedDB
 * transaction of its own in a browser).
 *
 * Coherent with applies by construction: every applied write goes through `write` (a
 * delete makes the entry "no value", a put drops it), and a storage read that was in
 * flight when a write of its key applied can no longer fill the entry (`fill` takes the
 * token `readStarted` gave, which `write` revokes). So an entry always holds the value as
 * of every entry applied so far.
 *
 * Bounded by bytes (keys counted as UTF-16, plus a fixed per-entry overhead), least
 * recently used out first; values above an eighth of the bound are not kept. Entries are
 * copies: a value read may be a view of a larger buffer that it would keep alive.
 */

/** Per-entry bytes counted besides the key and value (map slot, array header). */
const ENTRY_OVERHEAD_BYTES = 64;

export class ValueCache {
  private readonly maxBytes: number;
  private readonly maxValueBytes: number;
  /** Iteration order is least recently used first. */
  private readonly entries = new Map<string, Uint8Array | null>();
  /** Storage reads in flight, by key: the token a read must still hold to fill. */
  private readonly reads = new Map<string, object>();
  private bytes = 0;

  constructor(maxBytes: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw new RangeError(`valueCacheBytes must be an integer ≥ 0, got ${maxBytes}`);
    }
    this.maxBytes = maxBytes;
    this.maxValueBytes = Math.floor(maxBytes / 8);
  }

  /** Bytes held (as counted against the bound). */
  get sizeBytes(): number {
    return this.bytes;
  }

  /** The cached value (null: the key holds none), or undefined if not cached. */
  get(key: string): Uint8Array | null | undefined {
    const value = this.entries.get(key);
    if (value === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, value);
    return value;
  }

  /** A storage read of `key` begins: pass the token to `fill` with its result. */
  readStarted(key: string): object {
    let token = this.reads.get(key);
    if (token === undefined) {
      token = {};
      this.reads.set(key, token);
    }
    return token;
  }

  /** A storage read finished: its value is cached unless a write of the key applied since. */
  fill(key: string, token: object, value: Uint8Array | null): void {
    if (this.reads.get(key) !== token) return;
    this.reads.delete(key);
    this.put(key, value);
  }

  /**
   * A write of `key` applied (null: deleted); reads in flight are stale. A delete is kept
   * (the key holds nothing); a put only drops the entry, and the next read fills it: a
   * copy of every value put would cost each put more than a later read of it saves.
   */
  write(key: string, value: Uint8Array | null): void {
    if (this.reads.size > 0) this.reads.delete(key);
    if (value === null) this.put(key, null);
    else this.remove(key);
  }

  private put(key: string, value: Uint8Array | null): void {
    this.remove(key);
    const valueBytes = value === null ? 0 : value.byteLength;
    if (valueBytes > this.maxValueBytes) return;
    const cost = costOf(key, valueBytes);
    if (cost > this.maxBytes) return;
    this.entries.set(key, value === null ? null : value.slice());
    this.bytes += cost;
    if (this.bytes <= this.maxBytes) return;
    for (const [oldest, held] of this.entries) {
      this.entries.delete(oldest);
      this.bytes -= costOf(oldest, held === null ? 0 : held.byteLength);
      if (this.bytes <= this.maxBytes) return;
    }
  }

  private remove(key: string): void {
    const held = this.entries.get(key);
    if (held === undefined) return;
    this.entries.delete(key);
    this.bytes -= costOf(key, held === null ? 0 : held.byteLength);
  }
}

function costOf(key: string, valueBytes: number): number {
  return ENTRY_OVERHEAD_BYTES + 2 * key.length + valueBytes;
}
