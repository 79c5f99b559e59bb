/**
 * The binary encodings of a partition: the command a Normal Raft entry carries, and the
 * session record the state machine keeps per client (Raft thesis §6.3).
 *
 * Command (entry data), big-endian, 30-byte header:
 *
 *   0  version u8 (1)        1  kind u8 (1 put, 2 delete)
 *   2  clientId length u16   4  key length u16
 *   6  seq f64               14 lowestUnanswered f64        22 proposedAtMs f64
 *   30 clientId UTF-8, then key UTF-8, then (put only) the value: the rest of the data.
 *
 * Numbers are f64 holding safe non-negative integers (checked both ways). A committed entry
 * is decoded by every replica: `decodeCommand` never throws, it returns an InvalidCommand
 * that the state machine applies as a no-op with the `command_invalid` result, the same on
 * every replica.
 *
 * Session record, big-endian, 27-byte header then 9 bytes per result:
 *
 *   0  version u8 (1)   1  result count u16   3  lastTouchedMs f64   11 lastTouchedIndex f64
 *   19 lowestUnanswered f64   27 (seq f64, result u8) × count
 */
import { limits } from '@meshkv/storage';
import { utf8ByteLength } from './errors.ts';

export const COMMAND_VERSION = 1;
export const SESSION_RECORD_VERSION = 1;

/** Bytes before the client id in a command. */
export const COMMAND_HEADER_BYTES = 30;
const SESSION_HEADER_BYTES = 27;
const SESSION_RESULT_BYTES = 9;

/** The most results one session record can hold within limits.maxSessionRecordBytes. */
export const maxResultsPerSessionRecord = Math.floor(
  (limits.maxSessionRecordBytes - SESSION_HEADER_BYTES) / SESSION_RESULT_BYTES,
);

const KIND_PUT = 1;
const KIND_DELETE = 2;

/**
 * A client's request as the log carries it. `seq` numbers a client's requests (one per
 * request, retries keep theirs); `lowestUnanswered` is the lowest seq the client has not
 * had an answer for yet (≤ seq): results below it may be forgotten. `proposedAtMs` is the
 * proposing node's clock, the only time the state machine knows.
 */
export interface Command {
  readonly kind: 'put' | 'delete';
  readonly clientId: string;
  readonly seq: number;
  readonly lowestUnanswered: number;
  readonly proposedAtMs: number;
  readonly key: string;
  /**
   * put: the value; delete: null. A decoded value is a view into the entry's data (not a
   * copy): entry data is immutable once proposed (raft's log holds it too).
   */
  readonly value: Uint8Array | null;
}

/** Data of a Normal entry that is not a command this version understands. */
export interface InvalidCommand {
  readonly kind: 'invalid';
  /** Why, for logs and tests. */
  readonly reason: string;
}

/** put → true; delete → whether the key existed. */
export type CommandResult = boolean;

/** One client's session (Raft thesis §6.3), as stored. */
export interface SessionRecord {
  /** The partition's clock (max proposedAtMs applied) when the client was last seen. */
  readonly lastTouchedMs: number;
  /** The log index of the client's last command: orders clients for LRU eviction. */
  readonly lastTouchedIndex: number;
  /** No command of this client with a lower seq applies any more (its result is gone). */
  readonly lowestUnanswered: number;
  /** seq → result of the applied commands at or above lowestUnanswered. */
  readonly results: ReadonlyMap<number, CommandResult>;
}

export interface InvalidSessionRecord {
  readonly invalid: string;
}

const textEncoder = new TextEncoder();
// fatal: malformed UTF-8 is an error, not U+FFFD; ignoreBOM: a key may start with U+FEFF.
const textDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function isCount(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`command: ${message}`);
}

/**
 * Encodes a command into a new buffer (the entry owns it). The caller validated the key
 * and value (errors.ts); anything else wrong is a bug of the caller and throws.
 */
export function encodeCommand(command: Command): Uint8Array {
  const clientIdBytes = utf8ByteLength(command.clientId);
  const keyBytes = utf8ByteLength(command.key);
  assert(
    clientIdBytes > 0 && clientIdBytes <= limits.maxClientIdBytes,
    `client id must be 1..${limits.maxClientIdBytes} UTF-8 bytes of well-formed text`,
  );
  assert(keyBytes > 0 && keyBytes <= limits.maxKeyBytes, 'key must be validated');
  assert(isCount(command.seq), `seq must be a safe non-negative integer, got ${command.seq}`);
  assert(
    isCount(command.lowestUnanswered) && command.lowestUnanswered <= command.seq,
    `lowestUnanswered must be a safe integer in [0, seq], got ${command.lowestUnanswered}`,
  );
  assert(isCount(command.proposedAtMs), `proposedAtMs must be a safe non-negative integer`);
  const isPut = command.kind === 'put';
  assert(isPut || command.kind === 'delete', `unknown command kind ${command.kind}`);
  const value = command.value;
  assert(isPut === (value !== null), 'a put carries a value, a delete none');
  const valueBytes = value === null ? 0 : value.byteLength;
  assert(valueBytes <= limits.maxValueBytes, 'value must be validated');

  const data = new Uint8Array(COMMAND_HEADER_BYTES + clientIdBytes + keyBytes + valueBytes);
  const view = new DataView(data.buffer);
  view.setUint8(0, COMMAND_VERSION);
  view.setUint8(1, isPut ? KIND_PUT : KIND_DELETE);
  view.setUint16(2, clientIdBytes);
  view.setUint16(4, keyBytes);
  view.setFloat64(6, command.seq);
  view.setFloat64(14, command.lowestUnanswered);
  view.setFloat64(22, command.proposedAtMs);
  let offset = COMMAND_HEADER_BYTES;
  offset += textEncoder.encodeInto(command.clientId, data.subarray(offset)).written;
  offset += textEncoder.encodeInto(command.key, data.subarray(offset)).written;
  if (value !== null) data.set(value, offset);
  assert(offset + valueBytes === data.length, 'encoded length');
  return data;
}

function invalid(reason: string): InvalidCommand {
  return { kind: 'invalid', reason };
}

/** Decodes text, or returns null if it is not well-formed UTF-8. */
function decodeText(bytes: Uint8Array): string | null {
  try {
    return textDecoder.decode(bytes);
  } catch {
    return null;
  }
}

/** Decodes and validates a Normal entry's data. Never throws. */
export function decodeCommand(data: Uint8Array): Command | InvalidCommand {
  if (data.length < COMMAND_HEADER_BYTES) return invalid(`${data.length} bytes: too short`);
  if (data.length > limits.maxEntryDataBytes) return invalid(`${data.length} bytes: too long`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const version = view.getUint8(0);
  if (version !== COMMAND_VERSION) return invalid(`unknown version ${version}`);
  const kindByte = view.getUint8(1);
  if (kindByte !== KIND_PUT && kindByte !== KIND_DELETE) return invalid(`unknown kind ${kindByte}`);
  const clientIdBytes = view.getUint16(2);
  const keyBytes = view.getUint16(4);
  if (clientIdBytes === 0 || clientIdBytes > limits.maxClientIdBytes) {
    return invalid(`client id of ${clientIdBytes} bytes`);
  }
  if (keyBytes === 0 || keyBytes > limits.maxKeyBytes) return invalid(`key of ${keyBytes} bytes`);
  const seq = view.getFloat64(6);
  const lowestUnanswered = view.getFloat64(14);
  const proposedAtMs = view.getFloat64(22);
  if (!isCount(seq)) return invalid(`seq ${seq}`);
  if (!isCount(lowestUnanswered) || lowestUnanswered > seq) {
    return invalid(`lowestUnanswered ${lowestUnanswered} with seq ${seq}`);
  }
  if (!isCount(proposedAtMs)) return invalid(`proposedAtMs ${proposedAtMs}`);
  const keyStart = COMMAND_HEADER_BYTES + clientIdBytes;
  const valueStart = keyStart + keyBytes;
  if (valueStart > data.length) return invalid('client id and key overrun the data');
  const isPut = kindByte === KIND_PUT;
  if (!isPut && valueStart !== data.length) return invalid('a delete carries trailing bytes');
  if (data.length - valueStart > limits.maxValueBytes) return invalid('value too large');
  const clientId = decodeText(data.subarray(COMMAND_HEADER_BYTES, keyStart));
  if (clientId === null) return invalid('client id is not UTF-8');
  const key = decodeText(data.subarray(keyStart, valueStart));
  if (key === null) return invalid('key is not UTF-8');
  return {
    kind: isPut ? 'put' : 'delete',
    clientId,
    seq,
    lowestUnanswered,
    proposedAtMs,
    key,
    value: isPut ? data.subarray(valueStart) : null,
  };
}

/** Encodes a session record; it must fit limits.maxSessionRecordBytes (asserted). */
export function encodeSessionRecord(record: SessionRecord): Uint8Array {
  const count = record.results.size;
  assert(count <= maxResultsPerSessionRecord, `${count} results do not fit a session record`);
  assert(isCount(record.lastTouchedMs), 'lastTouchedMs must be a safe non-negative integer');
  assert(isCount(record.lastTouchedIndex), 'lastTouchedIndex must be a safe non-negative integer');
  assert(isCount(record.lowestUnanswered), 'lowestUnanswered must be a safe non-negative integer');
  const data = new Uint8Array(SESSION_HEADER_BYTES + count * SESSION_RESULT_BYTES);
  const view = new DataView(data.buffer);
  view.setUint8(0, SESSION_RECORD_VERSION);
  view.setUint16(1, count);
  view.setFloat64(3, record.lastTouchedMs);
  view.setFloat64(11, record.lastTouchedIndex);
  view.setFloat64(19, record.lowestUnanswered);
  let offset = SESSION_HEADER_BYTES;
  for (const [seq, result] of record.results) {
    assert(isCount(seq) && seq >= record.lowestUnanswered, `result seq ${seq}`);
    view.setFloat64(offset, seq);
    view.setUint8(offset + 8, result ? 1 : 0);
    offset += SESSION_RESULT_BYTES;
  }
  return data;
}

/** Decodes and validates a session record. Never throws. */
export function decodeSessionRecord(data: Uint8Array): SessionRecord | InvalidSessionRecord {
  if (data.length < SESSION_HEADER_BYTES) return { invalid: `${data.length} bytes: too short` };
  if (data.length > limits.maxSessionRecordBytes) return { invalid: 'too long' };
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const version = view.getUint8(0);
  if (version !== SESSION_RECORD_VERSION) return { invalid: `unknown version ${version}` };
  const count = view.getUint16(1);
  if (data.length !== SESSION_HEADER_BYTES + count * SESSION_RESULT_BYTES) {
    return { invalid: `${data.length} bytes for ${count} results` };
  }
  const lastTouchedMs = view.getFloat64(3);
  const lastTouchedIndex = view.getFloat64(11);
  const lowestUnanswered = view.getFloat64(19);
  if (!isCount(lastTouchedMs)) return { invalid: `lastTouchedMs ${lastTouchedMs}` };
  if (!isCount(lastTouchedIndex)) return { invalid: `lastTouchedIndex ${lastTouchedIndex}` };
  if (!isCount(lowestUnanswered)) return { invalid: `lowestUnanswered ${lowestUnanswered}` };
  const results = new Map<number, CommandResult>();
  for (let offset = SESSION_HEADER_BYTES; offset < data.length; offset += SESSION_RESULT_BYTES) {
    const seq = view.getFloat64(offset);
    const result = view.getUint8(offset + 8);
    if (!isCount(seq) || seq < lowestUnanswered) return { invalid: `result seq ${seq}` };
    if (results.has(seq)) return { invalid: `result seq ${seq} twice` };
    if (result > 1) return { invalid: `result byte ${result}` };
    results.set(seq, result === 1);
  }
  return { lastTouchedMs, lastTouchedIndex, lowestUnanswered, results };
}
