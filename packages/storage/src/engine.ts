/**
 * What a backend provides to the shared implementation (store.ts): one ordered key space of
 * byte keys (compared bytewise) and byte values, with atomic durable batches.
 */

export type EngineOp =
  | { readonly type: 'put'; readonly key: Uint8Array; readonly value: Uint8Array }
  | { readonly type: 'del'; readonly key: Uint8Array };

/** A page of [key, value] pairs in ascending key order. */
export type EnginePage = ReadonlyArray<readonly [Uint8Array, Uint8Array]>;

export interface Engine {
  /** The database (path, IndexedDB name) for error messages. */
  readonly name: string;

  /** The value under `key`, as of all writes that resolved before the call. */
  get(key: Uint8Array): Promise<Uint8Array | undefined>;

  /**
   * All pairs with lo ≤ key < hi (no upper bound if hi is null), in pages. The view is fixed when `scan` is called (writes
   * that start afterwards are not seen), however slowly the pages are consumed.
   */
  scan(lo: Uint8Array, hi: Uint8Array | null): AsyncIterable<EnginePage>;

  /**
   * Applies all ops or none, durably: resolved means it survives a crash of the process or
   * the machine. Callers never overlap writes (store.ts serializes every call). The ops'
   * arrays are handed over: the caller never changes them afterwards (store.ts makes new
   * ones for every write), so an engine may keep them instead of copying (memory.ts does).
   */
  write(ops: readonly EngineOp[]): Promise<void>;

  /**
   * Deletes every key in [lo, hi). Used only for data no record refers to any more, so it
   * need be neither atomic nor durable: a crash midway leaves garbage the next open clears.
   */
  clearRange(lo: Uint8Array, hi: Uint8Array): Promise<void>;

  /** Releases the database. */
  close(): Promise<void>;
}
