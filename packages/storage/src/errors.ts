/**
 * Every failure of @meshkv/storage is a StorageError with a stable `code` that callers may
 * switch on, and a message that names the database (path or IndexedDB name) it concerns.
 */
export type StorageErrorCode =
  /** A batch or call argument breaks the contract (bad index, unknown field value, ...). */
  | 'invalid_argument'
  /** An input exceeds a documented limit (key, value, entry, batch size). */
  | 'too_large'
  /** The batch writes to a group the node does not host. */
  | 'unknown_group'
  /** The batch creates a group the node already hosts. */
  | 'group_exists'
  /** A snapshot is not newer than the one already stored (etcd's ErrSnapOutOfDate). */
  | 'snapshot_out_of_date'
  /** Stored data is damaged or was not written by this library. */
  | 'corrupt'
  /** Stored data was written by a different, unknown format version. */
  | 'unsupported_version'
  /** Another process or instance holds the database open. */
  | 'locked'
  /** The store was closed (or crashed, for the memory backend); reopen it. */
  | 'closed'
  /**
   * The medium failed. What reached it is unknown, so the store refuses all further calls
   * (a failed fsync cannot be retried safely); reopen it to recover from durable state.
   */
  | 'io';

export class StorageError extends Error {
  override readonly name = 'StorageError';
  constructor(
    readonly code: StorageErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
