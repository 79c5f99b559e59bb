/**
 * Paged scans of the IndexedDB record store whose view is fixed when they are called,
 * however slowly they are consumed (the Engine contract), holding in memory one page plus
 * what is overwritten in their unread part meanwhile.
 *
 * IndexedDB has no snapshots, and a transaction cannot stay open across a slow consumer
 * (it commits once no request is pending; a long one would block every write). So each
 * page is read by its own transaction, and every write first asks `preserve`, which reads
 * the values its ops are about to overwrite or delete in a scan's unread part (or their
 * absence) and keeps them with the scan: copy-on-write. A page then shows kept values in
 * place of current ones. Writes never overlap (store.ts serializes them), and IndexedDB
 * runs a page's transaction either wholly before or wholly after a write's, so a page sees
 * the state before a write, or after it with the kept values already in place.
 */
import { promisifyRequest } from 'idb-keyval';
import { binaryKey, keyOfBinary } from './binary-key.ts';
import type { JournalOp } from './codec.ts';
import type { EnginePage } from './engine.ts';

/** A page ends at the first record that brings it to this many bytes. */
const pageBytes = 1024 * 1024;

/** Our keys are always fresh arrays, never views of a SharedArrayBuffer. */
export function idbKey(key: Uint8Array): IDBValidKey {
  return key as Uint8Array<ArrayBuffer>;
}

interface ScanView {
  /** The unread part: keys after `readUpTo` (from `lo` on, before the first page), below `hi`. */
  readonly lo: string;
  readonly hi: string | null;
  readUpTo: string | null;
  /** Values as of the call, for keys written since: null where the key did not exist. */
  readonly kept: Map<string, Uint8Array | null>;
}

function unread(view: ScanView, key: string): boolean {
  const started = view.readUpTo === null ? key >= view.lo : key > view.readUpTo;
  return started && (view.hi === null || key < view.hi);
}

/** The record store's pairs from `from` (exclusive if `after`) below `hi`, one page. */
function readPage(
  db: IDBDatabase,
  storeName: string,
  from: string,
  after: boolean,
  hi: string | null,
): Promise<{ pairs: Array<[Uint8Array, Uint8Array]>; done: boolean }> {
  return new Promise((resolve, reject) => {
    const lower = idbKey(keyOfBinary(from));
    const range =
      hi === null
        ? IDBKeyRange.lowerBound(lower, after)
        : IDBKeyRange.bound(lower, idbKey(keyOfBinary(hi)), after, true);
    const request = db.transaction(storeName, 'readonly').objectStore(storeName).openCursor(range);
    const pairs: Array<[Uint8Array, Uint8Array]> = [];
    let bytes = 0;
    request.onsuccess = () => {
      const cursor = request.result;
      if (cursor === null) return resolve({ pairs, done: true });
      const key = new Uint8Array(cursor.key as ArrayBuffer);
      const value = cursor.value as Uint8Array;
      pairs.push([key, value]);
      bytes += key.length + value.length;
      if (bytes >= pageBytes) resolve({ pairs, done: false });
      else cursor.continue();
    };
    request.onerror = () => reject(request.error);
  });
}

export class ScanViews {
  private readonly open = new Set<ScanView>();
  /** A scan dropped unfinished (never run to its end, never returned) stops costing writes once collected. */
  private readonly abandoned = new FinalizationRegistry<ScanView>((view) => this.open.delete(view));

  constructor(
    private readonly db: IDBDatabase,
    private readonly storeName: string,
  ) {}

  /**
   * Pairs with lo ≤ key < hi (no upper bound if null), as of now, in pages of ~1 MiB.
   * `pending`: values of keys in the range that are newer than the database's (written
   * behind it, write-behind.ts; null where deleted): the view shows them.
   */
  scan(
    lo: Uint8Array,
    hi: Uint8Array | null,
    pending: Map<string, Uint8Array | null> = new Map(),
  ): AsyncIterable<EnginePage> {
    const view: ScanView = {
      lo: binaryKey(lo),
      hi: hi === null ? null : binaryKey(hi),
      readUpTo: null,
      kept: pending,
    };
    if (view.hi !== null && view.hi <= view.lo) return (async function* empty() {})();
    this.open.add(view);
    const pages = this.pages(view);
    this.abandoned.register(pages, view);
    return pages;
  }

  private async *pages(view: ScanView): AsyncGenerator<EnginePage> {
    try {
      for (;;) {
        const from = view.readUpTo ?? view.lo;
        const { pairs, done } = await readPage(
          this.db,
          this.storeName,
          from,
          view.readUpTo !== null,
          view.hi,
        );
        // The page covers the keys from `from` up to its last (or, at the end, up to hi).
        const last = done ? null : binaryKey(pairs.at(-1)![0]);
        const covers = (key: string) =>
          (view.readUpTo === null ? key >= from : key > from) &&
          (last === null ? view.hi === null || key < view.hi : key <= last);
        const page: Array<[string, Uint8Array]> = [];
        for (const [key, value] of pairs) {
          const name = binaryKey(key);
          const old = view.kept.get(name);
          if (old === undefined) page.push([name, value]);
          else if (old !== null) page.push([name, old]);
        }
        const current = new Set(page.map(([name]) => name));
        for (const [name, old] of view.kept) {
          if (!covers(name)) continue;
          if (old !== null && !current.has(name)) page.push([name, old]);
          view.kept.delete(name);
        }
        page.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        if (page.length > 0) yield page.map(([name, value]) => [keyOfBinary(name), value] as const);
        if (done) return;
        view.readUpTo = last;
      }
    } finally {
      this.open.delete(view);
    }
  }

  /**
   * Called before a write of `ops` starts its transaction: keeps, for every open scan,
   * what the write would change in the scan's unread part.
   */
  async preserve(ops: readonly JournalOp[]): Promise<void> {
    if (this.open.size === 0) return;
    const keys = new Set<string>();
    const ranges: Array<[string, string]> = [];
    for (const view of this.open) {
      for (const op of ops) {
        if (op.type !== 'delRange') {
          const key = binaryKey(op.key);
          if (unread(view, key) && !view.kept.has(key)) keys.add(key);
          continue;
        }
        // The range's overlap with the unread part (its first key included: kept below
        // only where unread).
        let lo = binaryKey(op.key);
        if (lo < (view.readUpTo ?? view.lo)) lo = view.readUpTo ?? view.lo;
        let hi = binaryKey(op.end);
        if (view.hi !== null && view.hi < hi) hi = view.hi;
        if (lo < hi) ranges.push([lo, hi]);
      }
    }
    if (keys.size === 0 && ranges.length === 0) return;
    const store = this.db.transaction(this.storeName, 'readonly').objectStore(this.storeName);
    const found = new Map<string, Uint8Array | null>();
    const singles = [...keys].map(async (key) => {
      const value = (await promisifyRequest(store.get(idbKey(keyOfBinary(key))))) as
        | Uint8Array
        | undefined;
      found.set(key, value ?? null);
    });
    const spans = ranges.map(async ([lo, hi]) => {
      const range = IDBKeyRange.bound(
        idbKey(keyOfBinary(lo)),
        idbKey(keyOfBinary(hi)),
        false,
        true,
      );
      const [names, values] = await Promise.all([
        promisifyRequest(store.getAllKeys(range)),
        promisifyRequest(store.getAll(range)),
      ]);
      names.forEach((name, i) => {
        found.set(binaryKey(new Uint8Array(name as ArrayBuffer)), values[i] as Uint8Array);
      });
    });
    await Promise.all([...singles, ...spans]);
    // Only now, with no await left before the write's transaction starts: a page read
    // meanwhile may have advanced a scan, and what it read needs nothing kept.
    for (const view of this.open) {
      for (const [key, value] of found) {
        if (unread(view, key) && !view.kept.has(key)) view.kept.set(key, value);
      }
    }
  }
}
