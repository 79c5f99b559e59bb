/**
 * The errors of the KV API. Every failure of `put`/`get`/`delete` rejects with a
 * MeshKvError: a `code` a program switches on, a message a person understands, and
 * `details`, a JSON-serialisable record of what the node knew (partition, replicas, the
 * nodes it considers down, the leader, whether a write may have applied).
 *
 * Also the validation of keys and values, done before a request is admitted, with the
 * limits of @meshkv/storage (a key or value the store would refuse is refused here first).
 */
import { limits } from '@meshkv/storage';

export const ErrorCode = {
  /** The key is not a string, empty, not well-formed UTF-16, or over limits.maxKeyBytes. */
  KEY_INVALID: 'KEY_INVALID',
  /** The value is over limits.maxValueBytes. */
  VALUE_TOO_LARGE: 'VALUE_TOO_LARGE',
  /** The value is neither a string nor a Uint8Array, or a string that is not well-formed. */
  VALUE_INVALID: 'VALUE_INVALID',
  /** No replica of the partition is reachable, or no live majority of its voters. */
  UNAVAILABLE: 'UNAVAILABLE',
  /** The deadline passed; a write may or may not have been applied. */
  TIMEOUT: 'TIMEOUT',
  /** A bound was reached (pending requests, queues): nothing was done; retry later. */
  OVERLOADED: 'OVERLOADED',
  /** `ack: 'all'`: committed (and applied) on a majority, but some voter did not confirm. */
  ACK_INCOMPLETE: 'ACK_INCOMPLETE',
  /** The node was closed or left the cluster. */
  CLOSED: 'CLOSED',
  /**
   * The partition no longer holds the request's result: its session was pruned (the
   * client reported the request answered, or had more than maxResultsPerSession requests
   * outstanding). The write may or may not have been applied, as with TIMEOUT.
   */
  OUTCOME_UNKNOWN: 'OUTCOME_UNKNOWN',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** What the node knew when the request failed. Every field is JSON-serialisable. */
export interface MeshKvErrorDetails {
  /** The partition of the key. */
  readonly partition?: number;
  /** The partition's replicas (voters) as the node knew them. */
  readonly replicas?: readonly string[];
  /** Replicas the node considers down (unreachable or marked down by the registry). */
  readonly downNodes?: readonly string[];
  /** The partition's leader as the node knew it, or null if none was known. */
  readonly leader?: string | null;
  /** For a write: whether it may have been applied (true) or surely was not (false). */
  readonly mayHaveApplied?: boolean;
  /** The request's deadline. */
  readonly deadlineMs?: number;
  /** Replicas that did not confirm an `ack: 'all'` write. */
  readonly unconfirmed?: readonly string[];
  /** The bound that was reached (OVERLOADED), by name, and its value. */
  readonly bound?: string;
  readonly limit?: number;
  /** The size of a key or value (UTF-8 bytes for strings) and the most allowed. */
  readonly sizeBytes?: number;
  readonly maxBytes?: number;
  /** What was passed instead of a key or value (`typeof`, or 'null'). */
  readonly got?: string;
  /** A short machine-readable reason within the code ('empty', 'lone_surrogate', ...). */
  readonly reason?: string;
}

export class MeshKvError extends Error {
  readonly code: ErrorCode;
  readonly details: MeshKvErrorDetails;

  constructor(code: ErrorCode, message: string, details: MeshKvErrorDetails = {}) {
    super(message);
    this.name = 'MeshKvError';
    this.code = code;
    this.details = details;
  }
}

/** Whether `error` is a MeshKvError (of `code`, if given). */
export function isMeshKvError(error: unknown, code?: ErrorCode): error is MeshKvError {
  return error instanceof MeshKvError && (code === undefined || error.code === code);
}

// ---- Builders: one per code, each with a message a person understands ---------------------

function describeType(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
}

function names(ids: readonly string[]): string {
  return ids.length === 0 ? '(none)' : ids.join(', ');
}

export function keyTooLarge(sizeBytes: number): MeshKvError {
  return new MeshKvError(
    ErrorCode.KEY_INVALID,
    `the key is ${sizeBytes} UTF-8 bytes, the limit is ${limits.maxKeyBytes}`,
    { reason: 'too_large', sizeBytes, maxBytes: limits.maxKeyBytes },
  );
}

export function keyNotString(key: unknown): MeshKvError {
  const got = describeType(key);
  return new MeshKvError(ErrorCode.KEY_INVALID, `the key must be a string, got ${got}`, {
    reason: 'not_string',
    got,
  });
}

export function keyEmpty(): MeshKvError {
  return new MeshKvError(ErrorCode.KEY_INVALID, 'the key must not be empty', {
    reason: 'empty',
  });
}

export function keyNotWellFormed(): MeshKvError {
  return new MeshKvError(
    ErrorCode.KEY_INVALID,
    'the key is not well-formed UTF-16 (it holds a lone surrogate, which UTF-8 cannot encode)',
    { reason: 'lone_surrogate' },
  );
}

export function valueTooLarge(sizeBytes: number): MeshKvError {
  return new MeshKvError(
    ErrorCode.VALUE_TOO_LARGE,
    `the value is ${sizeBytes} bytes, the limit is ${limits.maxValueBytes}`,
    { sizeBytes, maxBytes: limits.maxValueBytes },
  );
}

export function valueNotBytes(value: unknown): MeshKvError {
  const got = describeType(value);
  return new MeshKvError(
    ErrorCode.VALUE_INVALID,
    `the value must be a string or a Uint8Array, got ${got}`,
    { reason: 'not_string_or_bytes', got },
  );
}

export function valueNotWellFormed(): MeshKvError {
  return new MeshKvError(
    ErrorCode.VALUE_INVALID,
    'the value string is not well-formed UTF-16 (it holds a lone surrogate, which UTF-8 cannot encode)',
    { reason: 'lone_surrogate' },
  );
}

/**
 * No replica reachable (every replica down), or no live majority (some are up, too few).
 * `leader` is the leader the node last knew, if any.
 */
export function unavailable(
  partition: number,
  replicas: readonly string[],
  downNodes: readonly string[],
  leader: string | null = null,
): MeshKvError {
  const details = { partition, replicas, downNodes, leader };
  const allDown = replicas.length > 0 && replicas.every((id) => downNodes.includes(id));
  const message =
    replicas.length === 0
      ? `partition ${partition} has no known replica`
      : allDown
        ? `no replica of partition ${partition} is reachable: ${downNodes.length === 1 ? 'node' : 'nodes'} ${names(downNodes)} ${downNodes.length === 1 ? 'is' : 'are'} down`
        : `partition ${partition} has no live majority: ${downNodes.length} of its ${replicas.length} replicas (${names(replicas)}) ${downNodes.length === 1 ? 'is' : 'are'} down: ${names(downNodes)}`;
  return new MeshKvError(ErrorCode.UNAVAILABLE, message, details);
}

/**
 * The deadline passed. For a write whose proposal may have reached a leader
 * (`mayHaveApplied`), the caller cannot know whether it applied.
 */
export function timeout(
  deadlineMs: number,
  request: 'read' | 'write',
  mayHaveApplied: boolean,
  partition?: number,
): MeshKvError {
  const where = partition === undefined ? '' : ` (partition ${partition})`;
  const consequence =
    request === 'read'
      ? 'the read did not complete'
      : mayHaveApplied
        ? 'the write may or may not have been applied'
        : 'the write was not applied';
  const applied = request === 'write' && mayHaveApplied;
  // No `partition: undefined`: details survive a JSON round trip unchanged.
  const details: MeshKvErrorDetails =
    partition === undefined
      ? { deadlineMs, mayHaveApplied: applied }
      : { deadlineMs, mayHaveApplied: applied, partition };
  const message = `timed out after ${deadlineMs} ms${where}: ${consequence}`;
  return new MeshKvError(ErrorCode.TIMEOUT, message, details);
}

/** A bound (by name, e.g. 'maxPendingRequests') was reached: nothing was done. */
export function overloaded(bound: string, limit: number): MeshKvError {
  return new MeshKvError(
    ErrorCode.OVERLOADED,
    `the node is overloaded: ${bound} (${limit}) reached; nothing was done, retry later`,
    { bound, limit, mayHaveApplied: false },
  );
}

export function ackIncomplete(
  partition: number,
  replicas: readonly string[],
  unconfirmed: readonly string[],
): MeshKvError {
  return new MeshKvError(
    ErrorCode.ACK_INCOMPLETE,
    `the write was committed on a majority of partition ${partition}, but ${names(unconfirmed)} of its replicas (${names(replicas)}) did not confirm applying it before the deadline`,
    { partition, replicas, unconfirmed, mayHaveApplied: true },
  );
}

/** `reason` completes "the node ..." (e.g. 'was closed', 'left the cluster'). */
export function closed(reason: string): MeshKvError {
  return new MeshKvError(ErrorCode.CLOSED, `the node ${reason}: the request was not served`, {
    reason,
  });
}

export function outcomeUnknown(partition: number): MeshKvError {
  return new MeshKvError(
    ErrorCode.OUTCOME_UNKNOWN,
    `partition ${partition} no longer holds this request's result (its session was pruned): the write may or may not have been applied`,
    { partition, mayHaveApplied: true },
  );
}

// ---- Validation -----------------------------------------------------------------------------

/**
 * The UTF-8 length of `text`, or -1 if it is not well-formed UTF-16 (a lone surrogate).
 * One pass, no allocation (the hot path measures every key).
 */
export function utf8ByteLength(text: string): number {
  let bytes = 0;
  const length = text.length;
  for (let i = 0; i < length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit < 0xd800 || unit > 0xdfff) bytes += 3;
    else if (unit <= 0xdbff && i + 1 < length) {
      const low = text.charCodeAt(i + 1);
      if (low < 0xdc00 || low > 0xdfff) return -1;
      bytes += 4;
      i++;
    } else return -1;
  }
  return bytes;
}

/** Checks a key (throws KEY_INVALID) and returns its UTF-8 length. */
export function validateKey(key: unknown): number {
  if (typeof key !== 'string') throw keyNotString(key);
  if (key.length === 0) throw keyEmpty();
  const sizeBytes = utf8ByteLength(key);
  if (sizeBytes < 0) throw keyNotWellFormed();
  if (sizeBytes > limits.maxKeyBytes) throw keyTooLarge(sizeBytes);
  return sizeBytes;
}

const textEncoder = new TextEncoder();

/**
 * Checks a value and returns its bytes: a string as UTF-8 (a lone surrogate is refused
 * rather than silently stored as U+FFFD), a Uint8Array as is (not copied: the caller must
 * not change it afterwards). Throws VALUE_INVALID or VALUE_TOO_LARGE.
 */
export function valueBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) {
    if (value.byteLength > limits.maxValueBytes) throw valueTooLarge(value.byteLength);
    return value;
  }
  if (typeof value !== 'string') throw valueNotBytes(value);
  const sizeBytes = utf8ByteLength(value);
  if (sizeBytes < 0) throw valueNotWellFormed();
  if (sizeBytes > limits.maxValueBytes) throw valueTooLarge(sizeBytes);
  return textEncoder.encode(value);
}
