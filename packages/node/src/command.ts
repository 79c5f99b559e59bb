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

/**
 * Big-endian numbers written and read byte by byte through one scratch f64: a DataView
 * per record cost more than the record (a small array's `.buffer` is materialized for
 * it, moving the array off the heap), and every entry is decoded on every replica.
 */
const f64Scratch = new Float64Array(1);
const f64Bytes = new Uint8Array(f64Scratch.buffer);
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function writeF64(data: Uint8Array, offset: number, value: number): void {
  f64Scratch[0] = value;
  if (littleEndian) for (let i = 0; i < 8; i++) data[offset + i] = f64Bytes[7 - i]!;
  else for (let i = 0; i < 8; i++) data[offset + i] = f64Bytes[i]!;
}

function readF64(data: Uint8Array, offset: number): number {
  if (littleEndian) for (let i = 0; i < 8; i++) f64Bytes[7 - i] = data[offset + i]!;
  else for (let i = 0; i < 8; i++) f64Bytes[i] = data[offset + i]!;
  return f64Scratch[0]!;
}

function writeU16(data: Uint8Array, offset: number, value: number): void {
  data[offset] = value >>> 8;
  data[offset + 1] = value & 0xff;
}

function readU16(data: Uint8Array, offset: number): number {
  return (data[offset]! << 8) | data[offset + 1]!;
}

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
  data[0] = COMMAND_VERSION;
  data[1] = isPut ? KIND_PUT : KIND_DELETE;
  writeU16(data, 2, clientIdBytes);
  writeU16(data, 4, keyBytes);
  writeF64(data, 6, command.seq);
  writeF64(data, 14, command.lowestUnanswered);
  writeF64(data, 22, command.proposedAtMs);
  let offset = COMMAND_HEADER_BYTES;
  offset = writeText(command.clientId, clientIdBytes, data, offset);
  offset = writeText(command.key, keyBytes, data, offset);
  if (value !== null) data.set(value, offset);
  assert(offset + valueBytes === data.length, 'encoded length');
  return data;
}

/**
 * Writes `text` (`byteLength` UTF-8 bytes) at `offset`, returning the offset after it: ASCII
 * unit by unit (keys and client ids mostly are), the rest through encodeInto.
 */
function writeText(text: string, byteLength: number, data: Uint8Array, offset: number): number {
  if (byteLength === text.length) {
    for (let i = 0; i < byteLength; i++) data[offset + i] = text.charCodeAt(i);
    return offset + byteLength;
  }
  return offset + textEncoder.encodeInto(text, data.subarray(offset)).written;
}

/** Decodes UTF-8 text of data[start, end), or returns null if it is not well-formed. */
function readText(data: Uint8Array, start: number, end: number): string | null {
  // ASCII (the common case) as one call on the bytes, no decoder call.
  let ascii = end - start <= MAX_ASCII_DECODE_BYTES;
  for (let i = start; ascii && i < end; i++) if (data[i]! >= 0x80) ascii = false;
  if (ascii)
    return String.fromCharCode.apply(null, data.subarray(start, end) as unknown as number[]);
  return decodeText(data.subarray(start, end));
}

/**
 * The client ids decoded last, with their bytes: a partition sees a few clients (one per
 * node), so most commands name one of them; reusing its string saves the decoding, and
 * the session table's lookups then hash and compare one string object.
 */
const recentClientIds: { bytes: Uint8Array; text: string }[] = [];
const MAX_RECENT_CLIENT_IDS = 8;

function readClientId(data: Uint8Array, start: number, end: number): string | null {
  const length = end - start;
  for (let r = 0; r < recentClientIds.length; r++) {
    const recent = recentClientIds[r]!;
    const bytes = recent.bytes;
    if (bytes.length !== length) continue;
    let i = 0;
    while (i < length && bytes[i] === data[start + i]) i++;
    if (i === length) return recent.text;
  }
  const text = readText(data, start, end);
  if (text === null) return null;
  if (recentClientIds.length === MAX_RECENT_CLIENT_IDS) recentClientIds.pop();
  // A copy: the entry's data may be a view into a frame, which must not be kept alive.
  recentClientIds.unshift({ bytes: data.slice(start, end), text });
  return text;
}

/** Text up to this many bytes is decoded by fromCharCode (far below any argument limit). */
const MAX_ASCII_DECODE_BYTES = 1024;

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
  const version = data[0]!;
  if (version !== COMMAND_VERSION) return invalid(`unknown version ${version}`);
  const kindByte = data[1]!;
  if (kindByte !== KIND_PUT && kindByte !== KIND_DELETE) return invalid(`unknown kind ${kindByte}`);
  const clientIdBytes = readU16(data, 2);
  const keyBytes = readU16(data, 4);
  if (clientIdBytes === 0 || clientIdBytes > limits.maxClientIdBytes) {
    return invalid(`client id of ${clientIdBytes} bytes`);
  }
  if (keyBytes === 0 || keyBytes > limits.maxKeyBytes) return invalid(`key of ${keyBytes} bytes`);
  const seq = readF64(data, 6);
  const lowestUnanswered = readF64(data, 14);
  const proposedAtMs = readF64(data, 22);
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
  const clientId = readClientId(data, COMMAND_HEADER_BYTES, keyStart);
  if (clientId === null) return invalid('client id is not UTF-8');
  const key = readText(data, keyStart, valueStart);
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
  data[0] = SESSION_RECORD_VERSION;
  writeU16(data, 1, count);
  writeF64(data, 3, record.lastTouchedMs);
  writeF64(data, 11, record.lastTouchedIndex);
  writeF64(data, 19, record.lowestUnanswered);
  let offset = SESSION_HEADER_BYTES;
  for (const [seq, result] of record.results) {
    assert(isCount(seq) && seq >= record.lowestUnanswered, `result seq ${seq}`);
    writeF64(data, offset, seq);
    data[offset + 8] = result ? 1 : 0;
    offset += SESSION_RESULT_BYTES;
  }
  return data;
}

/** Decodes and validates a session record. Never throws. */
export function decodeSessionRecord(data: Uint8Array): SessionRecord | InvalidSessionRecord {
  if (data.length < SESSION_HEADER_BYTES) return { invalid: `${data.length} bytes: too short` };
  if (data.length > limits.maxSessionRecordBytes) return { invalid: 'too long' };
  const version = data[0]!;
  if (version !== SESSION_RECORD_VERSION) return { invalid: `unknown version ${version}` };
  const count = readU16(data, 1);
  if (data.length !== SESSION_HEADER_BYTES + count * SESSION_RESULT_BYTES) {
    return { invalid: `${data.length} bytes for ${count} results` };
  }
  const lastTouchedMs = readF64(data, 3);
  const lastTouchedIndex = readF64(data, 11);
  const lowestUnanswered = readF64(data, 19);
  if (!isCount(lastTouchedMs)) return { invalid: `lastTouchedMs ${lastTouchedMs}` };
  if (!isCount(lastTouchedIndex)) return { invalid: `lastTouchedIndex ${lastTouchedIndex}` };
  if (!isCount(lowestUnanswered)) return { invalid: `lowestUnanswered ${lowestUnanswered}` };
  const results = new Map<number, CommandResult>();
  for (let offset = SESSION_HEADER_BYTES; offset < data.length; offset += SESSION_RESULT_BYTES) {
    const seq = readF64(data, offset);
    const result = data[offset + 8]!;
    if (!isCount(seq) || seq < lowestUnanswered) return { invalid: `result seq ${seq}` };
    if (results.has(seq)) return { invalid: `result seq ${seq} twice` };
    if (result > 1) return { invalid: `result byte ${result}` };
    results.set(seq, result === 1);
  }
  return { lastTouchedMs, lastTouchedIndex, lowestUnanswered, results };
}
