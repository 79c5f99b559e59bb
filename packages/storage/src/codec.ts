/**
 * The binary format shared by every backend: record keys, and the versioned encoding of
 * node and group metadata, log segments, snapshots and snapshot chunks. See README.md
 * ("Format") for the layout; FORMAT_VERSION changes whenever any of it does.
 *
 * Every record value starts with [tag u8][version u8] so that a record of the wrong kind, of
 * another version or cut short is detected on decode (DecodeError), never misread. Integers
 * are big-endian; indexes and terms are u53 stored in 8 bytes; strings are u32-length UTF-8.
 */
import type { ConfState, Entry, EntryType, HardState, Snapshot } from '@meshkv/raft';
import type { EngineOp } from './engine.ts';
import type { AppliedState } from './storage.ts';

export const FORMAT_VERSION = 2;
/** Identifies a meshkv store in its node record (foreign data never carries it). */
export const MAGIC = 'meshkv-storage';

const Tag = {
  Node: 1,
  Group: 2,
  Segment: 3,
  Snapshot: 4,
  Chunk: 5,
  JournalWrite: 6,
  JournalBasePage: 7,
  JournalBaseEnd: 8,
} as const;
type Tag = (typeof Tag)[keyof typeof Tag];

/** The first byte of each journal frame payload (journal-protocol.ts): its record tag. */
export const JournalTag = {
  Write: Tag.JournalWrite,
  BasePage: Tag.JournalBasePage,
  BaseEnd: Tag.JournalBaseEnd,
} as const;

/** A record that cannot be decoded: damaged, foreign or of an unknown version. */
export class DecodeError extends Error {
  constructor(
    readonly code: 'corrupt' | 'unsupported_version',
    message: string,
  ) {
    super(message);
  }
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const TWO_32 = 2 ** 32;

export function utf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

/**
 * The UTF-8 length of `text` as TextEncoder encodes it (a lone surrogate becomes U+FFFD,
 * 3 bytes), counted without encoding it: validation and keys need it per string.
 */
export function utf8Length(text: string): number {
  const units = text.length;
  let bytes = units;
  for (let i = 0; i < units; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) bytes += 1;
    else if (
      unit >= 0xd800 &&
      unit < 0xdc00 &&
      i + 1 < units &&
      (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      bytes += 2; // a surrogate pair: 2 units, 4 bytes
      i++;
    } else bytes += 2;
  }
  return bytes;
}

/**
 * Writes `text` as UTF-8 at `at`, where utf8Length(text) bytes are free. ASCII is copied
 * unit by unit (ids and keys are short: a TextEncoder call per string costs more than
 * the copy); the rest goes through `encodeInto`.
 */
function writeUtf8(target: Uint8Array, at: number, text: string): void {
  const units = text.length;
  for (let i = 0; i < units; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0x80) {
      utf8Encoder.encodeInto(text.slice(i), target.subarray(at + i));
      return;
    }
    target[at + i] = unit;
  }
}

/** Big-endian u32 at `at` (a Uint8Array store keeps the low 8 bits of each shift). */
function putU32(target: Uint8Array, at: number, value: number): void {
  target[at] = value >>> 24;
  target[at + 1] = value >>> 16;
  target[at + 2] = value >>> 8;
  target[at + 3] = value;
}

function getU32(source: Uint8Array, at: number): number {
  return (
    ((source[at]! << 24) | (source[at + 1]! << 16) | (source[at + 2]! << 8) | source[at + 3]!) >>> 0
  );
}

/** Records up to this size are encoded in one reused buffer, then copied out at their size. */
const scratchBytes = 64 * 1024;

/**
 * Sealed records (the ones handed to an engine) up to this size are cut from a shared slab
 * instead of getting a buffer each: a buffer of more than 64 bytes lives off the V8 heap and
 * costs ~0.6 µs to allocate (and more to collect), a view of a slab ~0.1 µs. A slab's bytes
 * are written once, by the record they are handed to, and never reused, so the views keep
 * the Engine.write contract (the caller never changes them). Engines that store a view's
 * whole buffer copy it out (IndexedDB's `exact`); the memory engine keeps views, so a live
 * record holds at most one slab (`recordSlabBytes`) alive.
 */
export const maxSlabRecordBytes = 512;
export const recordSlabBytes = 8 * 1024;
let slab = new ArrayBuffer(recordSlabBytes);
let slabUsed = 0;

/** Zeroed bytes for one sealed record, nobody else's. */
function recordBytes(size: number): Uint8Array {
  if (size > maxSlabRecordBytes) return new Uint8Array(size);
  if (slabUsed + size > recordSlabBytes) {
    slab = new ArrayBuffer(recordSlabBytes);
    slabUsed = 0;
  }
  const at = slabUsed;
  slabUsed = at + size;
  // A view made directly, not subarray(): that looks up a species constructor (~2x the cost).
  return new Uint8Array(slab, at, size);
}

class Writer {
  private bytes: Uint8Array;
  private length = 0;
  /** The key the record being written is sealed under (`start`), or null. */
  private sealKey: Uint8Array | null = null;

  /**
   * `capacityBytes`: an exact-size writer for one record (finish() hands out its buffer:
   * for a `sealed` record, `recordBytes`); without it, the shared scratch writer (`scratch()`).
   */
  constructor(
    private readonly capacityBytes?: number,
    sealed = false,
  ) {
    this.bytes =
      capacityBytes === undefined
        ? new Uint8Array(scratchBytes)
        : sealed
          ? recordBytes(capacityBytes)
          : new Uint8Array(capacityBytes);
  }

  private reserve(count: number): number {
    const at = this.length;
    if (at + count > this.bytes.length) {
      const grown = new Uint8Array(Math.max(this.bytes.length * 2, at + count));
      grown.set(this.bytes.subarray(0, at));
      this.bytes = grown;
    }
    this.length = at + count;
    return at;
  }

  /** Forgets a record left unfinished (an encoder that threw midway). */
  clear(): this {
    this.length = 0;
    this.sealKey = null;
    return this;
  }

  /**
   * Starts a record. With `sealKey`, finish() hands it out as stored under that key:
   * behind its CRC-32 (seal()), written in place instead of copied behind it.
   */
  start(sealKey: Uint8Array | undefined): this {
    if (sealKey !== undefined) {
      this.sealKey = sealKey;
      this.reserve(sealBytes);
    }
    return this;
  }

  u8(value: number): this {
    const at = this.reserve(1);
    this.bytes[at] = value;
    return this;
  }
  // `reserve` may replace `this.bytes`: call it before reading the field.
  u32(value: number): this {
    const at = this.reserve(4);
    putU32(this.bytes, at, value);
    return this;
  }
  u53(value: number): this {
    const at = this.reserve(8);
    putU32(this.bytes, at, Math.floor(value / TWO_32));
    putU32(this.bytes, at + 4, value >>> 0);
    return this;
  }
  raw(value: Uint8Array): this {
    const at = this.reserve(value.length);
    this.bytes.set(value, at);
    return this;
  }
  bytesField(value: Uint8Array): this {
    return this.u32(value.length).raw(value);
  }
  string(value: string): this {
    const length = utf8Length(value);
    this.u32(length);
    const at = this.reserve(length);
    writeUtf8(this.bytes, at, value);
    return this;
  }
  /**
   * The record; the scratch writer copies it out (a sealed one into `recordBytes`) and is
   * then free for the next one.
   */
  finish(): Uint8Array {
    const length = this.length;
    this.length = 0;
    const sealKey = this.sealKey;
    if (sealKey !== null) {
      putU32(this.bytes, 0, crc32(this.bytes, crc32(sealKey), sealBytes, length));
      this.sealKey = null;
    }
    if (this.capacityBytes !== undefined) return this.bytes.subarray(0, length);
    let record: Uint8Array;
    if (sealKey !== null) {
      record = recordBytes(length);
      record.set(this.bytes.subarray(0, length));
    } else record = this.bytes.slice(0, length);
    // A record that grew the scratch buffer must not keep it grown.
    if (this.bytes.length > scratchBytes) this.bytes = new Uint8Array(scratchBytes);
    return record;
  }
}

const scratchWriter = new Writer();

/**
 * The shared writer for records of unknown size. Encoders are synchronous and never nest,
 * so one is enough: each takes it, writes a record and finishes it before returning (or
 * throws midway, which the next one's `clear` forgets).
 */
function scratch(): Writer {
  return scratchWriter.clear();
}

class Reader {
  private offset = 0;
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private take(count: number): number {
    const at = this.offset;
    if (count > this.bytes.length - at) {
      throw new DecodeError(
        'corrupt',
        `${this.what} is truncated (needs ${at + count} bytes, has ${this.bytes.length})`,
      );
    }
    this.offset = at + count;
    return at;
  }

  u8(): number {
    return this.view.getUint8(this.take(1));
  }
  u32(): number {
    return this.view.getUint32(this.take(4));
  }
  u53(): number {
    const at = this.take(8);
    const high = this.view.getUint32(at);
    if (high >= 2 ** 21) throw new DecodeError('corrupt', `${this.what} holds an integer ≥ 2^53`);
    return high * TWO_32 + this.view.getUint32(at + 4);
  }
  /** A boolean stored as 0 or 1; any other byte is damage, not false. */
  flag(): boolean {
    const byte = this.u8();
    if (byte > 1)
      throw new DecodeError('corrupt', `${this.what} holds flag byte ${byte}, not 0 or 1`);
    return byte === 1;
  }
  raw(length: number): Uint8Array {
    const at = this.take(length);
    return this.bytes.subarray(at, at + length);
  }
  bytesField(): Uint8Array {
    const length = this.u32();
    const at = this.take(length);
    return this.bytes.subarray(at, at + length);
  }
  string(): string {
    try {
      return utf8Decoder.decode(this.bytesField());
    } catch (error) {
      if (error instanceof DecodeError) throw error;
      throw new DecodeError('corrupt', `${this.what} holds invalid UTF-8`);
    }
  }
  header(tag: Tag): void {
    const found = this.u8();
    if (found !== tag) {
      throw new DecodeError('corrupt', `${this.what} has tag ${found}, expected ${tag}`);
    }
    const version = this.u8();
    if (version !== FORMAT_VERSION) {
      throw new DecodeError(
        version > FORMAT_VERSION ? 'unsupported_version' : 'corrupt',
        `${this.what} has format version ${version}; this build reads version ${FORMAT_VERSION}`,
      );
    }
  }
  end(): void {
    if (this.offset !== this.bytes.length) {
      throw new DecodeError(
        'corrupt',
        `${this.what} has ${this.bytes.length - this.offset} trailing bytes`,
      );
    }
  }
}

// ---- Checksums ------------------------------------------------------------------------
// Every value the store writes is sealed: [u32 CRC-32 of key and value][value]. Engines do
// not all check what they read back (classic-level enables neither LevelDB's paranoid
// checks nor verify_checksums), so the store checks every record itself.

/** CRC-32 tables for slicing by 8 (8 bytes per step: ~4× the byte-wise loop's speed). */
const crcTables = (() => {
  const tables = Array.from({ length: 8 }, () => new Uint32Array(256));
  const [first] = tables as [Uint32Array];
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    first[n] = c >>> 0;
  }
  for (let t = 1; t < 8; t++) {
    for (let n = 0; n < 256; n++) {
      const previous = tables[t - 1]![n]!;
      tables[t]![n] = (previous >>> 8) ^ first[previous & 0xff]!;
    }
  }
  return tables as [
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
  ];
})();

/** A CRC-32 (IEEE) of all of `bytes`, continuing `previous` (zlib's `crc32(data, value)`). */
export type NativeCrc32 = (bytes: Uint8Array, previous: number) => number;

let nativeCrc32: NativeCrc32 | null = null;
/**
 * From this many bytes on `crc32` calls the native one: below it the call (and the
 * subarray for a range) costs more than the JavaScript loop (measured with zlib.crc32 on
 * Node 20: even at ~128 B, 6-8x faster from 1 KiB).
 */
const nativeCrcMinBytes = 256;

/**
 * Makes `crc32` use `crc` for inputs of `nativeCrcMinBytes` or more. Called by
 * crc32.node.ts (zlib.crc32); the browser keeps the JavaScript CRC. The values are the same.
 */
export function useNativeCrc32(crc: NativeCrc32): void {
  nativeCrc32 = crc;
}

/**
 * CRC-32 (IEEE) of `bytes[from, to)` (default: all of them); pass the CRC of what precedes
 * them to continue it.
 */
export function crc32(bytes: Uint8Array, previous = 0, from = 0, to = bytes.length): number {
  if (nativeCrc32 !== null && to - from >= nativeCrcMinBytes) {
    return nativeCrc32(
      from === 0 && to === bytes.length ? bytes : bytes.subarray(from, to),
      previous,
    );
  }
  return jsCrc32(bytes, previous, from, to);
}

/** `crc32` in JavaScript, slicing by 8 (exported for the test comparing it with the native one). */
export function jsCrc32(bytes: Uint8Array, previous = 0, from = 0, to = bytes.length): number {
  // Indexed, not destructured: destructuring walks an iterator, on every call (keys are 5 B).
  const t0 = crcTables[0];
  const t1 = crcTables[1];
  const t2 = crcTables[2];
  const t3 = crcTables[3];
  const t4 = crcTables[4];
  const t5 = crcTables[5];
  const t6 = crcTables[6];
  const t7 = crcTables[7];
  let crc = ~previous;
  let i = from;
  for (const whole = to - 8; i <= whole; i += 8) {
    const low =
      crc ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24));
    crc =
      t7[low & 0xff]! ^
      t6[(low >>> 8) & 0xff]! ^
      t5[(low >>> 16) & 0xff]! ^
      t4[low >>> 24]! ^
      t3[bytes[i + 4]!]! ^
      t2[bytes[i + 5]!]! ^
      t1[bytes[i + 6]!]! ^
      t0[bytes[i + 7]!]!;
  }
  for (; i < to; i++) crc = t0[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

export const sealBytes = 4;

/** `value` as stored under `key`: behind the CRC-32 of key and value. */
export function seal(key: Uint8Array, value: Uint8Array): Uint8Array {
  const sealed = recordBytes(sealBytes + value.length);
  sealed.set(value, sealBytes);
  putU32(sealed, 0, crc32(value, crc32(key)));
  return sealed;
}

/** The value a sealed record holds; 'corrupt' if it fails its checksum. */
export function unseal(key: Uint8Array, sealed: Uint8Array, what: string): Uint8Array {
  const value = sealed.subarray(sealBytes);
  const stored = sealed.length < sealBytes ? null : getU32(sealed, 0);
  if (stored !== crc32(value, crc32(key))) {
    throw new DecodeError(
      'corrupt',
      `${what}: the record under key ${hex(key)} fails its checksum`,
    );
  }
  return value;
}

// ---- Keys -----------------------------------------------------------------------------
// One ordered key space per node. Tables are the first byte; log, snapshot and state
// machine data are keyed by a "space" (u32) rather than by group, so that a removed or
// restored group's data becomes unreachable by rewriting one group record, and is then
// cleared by range.

export const Table = {
  Node: 0,
  Group: 1,
  Segment: 2,
  Snapshot: 3,
  StateMachine: 4,
  Batch: 5,
} as const;
/** Sub-tables of a state-machine space: sessions sort before KV data. */
const SessionPart = 0;
const KvPart = 1;

/** A key: the table byte, then `u32Count` of `a`, `b`, `c` (no rest array: made per record). */
function keyOf(table: number, u32Count: 0 | 1 | 2 | 3, a = 0, b = 0, c = 0): Uint8Array {
  const key = new Uint8Array(1 + 4 * u32Count);
  key[0] = table;
  if (u32Count > 0) putU32(key, 1, a);
  if (u32Count > 1) putU32(key, 5, b);
  if (u32Count > 2) putU32(key, 9, c);
  return key;
}

/** A state-machine key: table, space, part, then `name` in UTF-8, in one allocation. */
function stateMachineKey(space: number, part: number, name: string): Uint8Array {
  const key = new Uint8Array(6 + utf8Length(name));
  key[0] = Table.StateMachine;
  putU32(key, 1, space);
  key[5] = part;
  writeUtf8(key, 6, name);
  return key;
}

export const nodeKey = (): Uint8Array => keyOf(Table.Node, 0);
export const groupKey = (group: number): Uint8Array => keyOf(Table.Group, 1, group);
export const segmentKey = (space: number, firstIndex: number): Uint8Array =>
  keyOf(Table.Segment, 3, space, Math.floor(firstIndex / TWO_32), firstIndex >>> 0);
export const snapshotKey = (space: number): Uint8Array => keyOf(Table.Snapshot, 1, space);
/** The batch marker: the one key of Table.Batch, naming how many writes the store made. */
export const batchKey = (seq: number): Uint8Array =>
  keyOf(Table.Batch, 2, Math.floor(seq / TWO_32), seq >>> 0);
export const sessionKey = (space: number, clientId: string): Uint8Array =>
  stateMachineKey(space, SessionPart, clientId);
export const kvKey = (space: number, key: string): Uint8Array =>
  stateMachineKey(space, KvPart, key);

/** [lo, hi) of one space in one table. */
export function spaceRange(table: number, space: number): [Uint8Array, Uint8Array] {
  return space + 1 < TWO_32
    ? [keyOf(table, 1, space), keyOf(table, 1, space + 1)]
    : [keyOf(table, 1, space), keyOf(table + 1, 0)];
}
export function sessionRange(space: number): [Uint8Array, Uint8Array] {
  return [stateMachineKey(space, SessionPart, ''), stateMachineKey(space, KvPart, '')];
}
export function tableRange(table: number): [Uint8Array, Uint8Array] {
  return [keyOf(table, 0), keyOf(table + 1, 0)];
}
/** The keys of `table` whose space is in [fromSpace, toSpace) (toSpace may be 2^32). */
export function spacesRange(table: number, fromSpace: number, toSpace: number) {
  const lo = keyOf(table, 1, fromSpace);
  const hi = toSpace < TWO_32 ? keyOf(table, 1, toSpace) : keyOf(table + 1, 0);
  return [lo, hi] as [Uint8Array, Uint8Array];
}

export function readSpace(key: Uint8Array): number {
  return getU32(key, 1);
}
export function readSegmentFirstIndex(key: Uint8Array): number {
  return getU32(key, 5) * TWO_32 + getU32(key, 9);
}
export function readBatchSeq(key: Uint8Array): number {
  return getU32(key, 1) * TWO_32 + getU32(key, 5);
}
/** Splits a state-machine key into its part and UTF-8 name. */
export function readStateMachineKey(key: Uint8Array, what: string) {
  if (key.length < 6) throw new DecodeError('corrupt', `${what} has a short key`);
  const part = key[5] === SessionPart ? 'session' : key[5] === KvPart ? 'kv' : null;
  if (part === null) throw new DecodeError('corrupt', `${what} has an unknown key part`);
  let name: string;
  try {
    name = utf8Decoder.decode(key.subarray(6));
  } catch {
    throw new DecodeError('corrupt', `${what} has a key that is not UTF-8`);
  }
  return { part, name } as const;
}

// ---- Shared fields --------------------------------------------------------------------

function writeIds(w: Writer, ids: readonly string[]): void {
  w.u32(ids.length);
  for (let i = 0; i < ids.length; i++) w.string(ids[i]!);
}

function writeConfState(w: Writer, conf: ConfState): void {
  writeIds(w, conf.voters);
  writeIds(w, conf.learners);
  writeIds(w, conf.votersOutgoing);
  writeIds(w, conf.learnersNext);
  w.u8(conf.autoLeave ? 1 : 0);
}

function readConfState(r: Reader): ConfState {
  const lists: string[][] = [];
  for (let l = 0; l < 4; l++) {
    const count = r.u32();
    const list: string[] = [];
    for (let i = 0; i < count; i++) list.push(r.string());
    lists.push(list);
  }
  const [voters, learners, votersOutgoing, learnersNext] = lists as [
    string[],
    string[],
    string[],
    string[],
  ];
  return { voters, learners, votersOutgoing, learnersNext, autoLeave: r.flag() };
}

function writeApplied(w: Writer, applied: AppliedState): void {
  w.u53(applied.index).u53(applied.term);
  writeConfState(w, applied.confState);
}

function readApplied(r: Reader): AppliedState {
  const index = r.u53();
  const term = r.u53();
  return { index, term, confState: readConfState(r) };
}

// ---- Node record ----------------------------------------------------------------------

export interface NodeRecord {
  /** The next unused space id: space ids are never reused. */
  readonly nextSpace: number;
  /** Spaces no group record refers to (removed, replaced, or staging a restore). */
  readonly garbage: readonly number[];
}

/**
 * The encoders of records the store writes take the record's key (`sealedUnder`) to hand
 * it out sealed under it, as seal(key, record) would (one allocation instead of two).
 */
export function encodeNode(node: NodeRecord, sealedUnder?: Uint8Array): Uint8Array {
  const w = scratch()
    .start(sealedUnder)
    .u8(Tag.Node)
    .u8(FORMAT_VERSION)
    .string(MAGIC)
    .u32(node.nextSpace);
  w.u32(node.garbage.length);
  for (const space of node.garbage) w.u32(space);
  return w.finish();
}

export function decodeNode(bytes: Uint8Array, what: string): NodeRecord {
  const r = new Reader(bytes, what);
  // The magic comes first for foreign data; a version mismatch is reported by header().
  if (r.u8() !== Tag.Node) throw new DecodeError('corrupt', `${what} is not a meshkv node record`);
  const version = r.u8();
  if (r.string() !== MAGIC) throw new DecodeError('corrupt', `${what} is not a meshkv node record`);
  if (version !== FORMAT_VERSION) {
    throw new DecodeError(
      'unsupported_version',
      `${what} has format version ${version}; this build reads version ${FORMAT_VERSION}`,
    );
  }
  const nextSpace = r.u32();
  const count = r.u32();
  if (count > bytes.length / 4) throw new DecodeError('corrupt', `${what} claims ${count} spaces`);
  const garbage: number[] = [];
  for (let i = 0; i < count; i++) garbage.push(r.u32());
  r.end();
  return { nextSpace, garbage };
}

// ---- Group record ---------------------------------------------------------------------

export interface GroupRecord {
  readonly group: number;
  readonly logSpace: number;
  readonly stateSpace: number;
  readonly hardState: HardState;
  readonly compacted: { readonly index: number; readonly term: number };
  /** Index of the stored snapshot (its record lives under logSpace), or null. */
  readonly snapshotIndex: number | null;
  readonly appliedState: AppliedState;
}

export function encodeGroup(g: GroupRecord, sealedUnder?: Uint8Array): Uint8Array {
  const w = scratch().start(sealedUnder).u8(Tag.Group).u8(FORMAT_VERSION);
  w.u32(g.group).u32(g.logSpace).u32(g.stateSpace);
  w.u53(g.hardState.term).u8(g.hardState.vote === null ? 0 : 1);
  if (g.hardState.vote !== null) w.string(g.hardState.vote);
  w.u53(g.hardState.commit);
  w.u53(g.compacted.index).u53(g.compacted.term);
  w.u8(g.snapshotIndex === null ? 0 : 1).u53(g.snapshotIndex ?? 0);
  writeApplied(w, g.appliedState);
  return w.finish();
}

export function decodeGroup(bytes: Uint8Array, what: string): GroupRecord {
  const r = new Reader(bytes, what);
  r.header(Tag.Group);
  const group = r.u32();
  const logSpace = r.u32();
  const stateSpace = r.u32();
  const term = r.u53();
  const vote = r.flag() ? r.string() : null;
  const commit = r.u53();
  const compacted = { index: r.u53(), term: r.u53() };
  const hasSnapshot = r.flag();
  const snapshotIndex = r.u53();
  const appliedState = readApplied(r);
  r.end();
  return {
    group,
    logSpace,
    stateSpace,
    hardState: { term, vote, commit },
    compacted,
    snapshotIndex: hasSnapshot ? snapshotIndex : null,
    appliedState,
  };
}

// ---- Log segments ---------------------------------------------------------------------

/** Encoded size of one entry in a segment: term, type, data length and data. */
export function segmentEntryBytes(entry: Entry): number {
  return 8 + 1 + 4 + entry.data.length;
}

/** Encoded size of a segment holding `entries[from, to)`, so it is written without reallocation. */
export function segmentBytes(entries: readonly Entry[], from = 0, to = entries.length): number {
  let size = 2 + 8 + 4;
  for (let i = from; i < to; i++) size += segmentEntryBytes(entries[i]!);
  return size;
}

/** Consecutive entries of one group, written as one record (DESIGN: ~0.1 ms per record). */
export function encodeSegment(entries: readonly Entry[], sealedUnder?: Uint8Array): Uint8Array {
  const first = entries[0];
  if (first === undefined) throw new Error('encodeSegment: no entries');
  const sealedBytes = sealedUnder === undefined ? 0 : sealBytes;
  const w = new Writer(sealedBytes + segmentBytes(entries), sealedUnder !== undefined).start(
    sealedUnder,
  );
  w.u8(Tag.Segment).u8(FORMAT_VERSION);
  w.u53(first.index).u32(entries.length);
  for (const e of entries) w.u53(e.term).u8(e.type).bytesField(e.data);
  return w.finish();
}

export function decodeSegment(bytes: Uint8Array, what: string): Entry[] {
  const r = new Reader(bytes, what);
  r.header(Tag.Segment);
  const firstIndex = r.u53();
  const count = r.u32();
  // Each entry takes at least 13 bytes: a damaged count cannot make us allocate wildly.
  if (count === 0 || count > bytes.length / 13) {
    throw new DecodeError('corrupt', `${what} claims ${count} entries`);
  }
  const entries: Entry[] = [];
  for (let i = 0; i < count; i++) {
    const term = r.u53();
    const type = r.u8();
    if (type !== 0 && type !== 1) {
      throw new DecodeError('corrupt', `${what} holds an entry of unknown type ${type}`);
    }
    entries.push({ index: firstIndex + i, term, type: type as EntryType, data: r.bytesField() });
  }
  r.end();
  return entries;
}

// ---- Snapshots ------------------------------------------------------------------------

function idsBytes(ids: readonly string[]): number {
  let bytes = 4;
  for (let i = 0; i < ids.length; i++) bytes += 4 + utf8Length(ids[i]!);
  return bytes;
}

/** Encoded size of a ConfState (writeConfState). */
function confStateBytes(conf: ConfState): number {
  const lists =
    idsBytes(conf.voters) +
    idsBytes(conf.learners) +
    idsBytes(conf.votersOutgoing) +
    idsBytes(conf.learnersNext);
  return lists + 1;
}

export function encodeSnapshot(s: Snapshot, sealedUnder?: Uint8Array): Uint8Array {
  // Exactly its size: the memory engine keeps the buffer it is handed, so a snapshot must
  // not carry a grown buffer's slack with it.
  const sealedBytes = sealedUnder === undefined ? 0 : sealBytes;
  const size = sealedBytes + 2 + 8 + 8 + confStateBytes(s.metadata.confState) + 4 + s.data.length;
  const w = new Writer(size, sealedUnder !== undefined)
    .start(sealedUnder)
    .u8(Tag.Snapshot)
    .u8(FORMAT_VERSION);
  w.u53(s.metadata.index).u53(s.metadata.term);
  writeConfState(w, s.metadata.confState);
  w.bytesField(s.data);
  return w.finish();
}

export function decodeSnapshot(bytes: Uint8Array, what: string): Snapshot {
  const r = new Reader(bytes, what);
  r.header(Tag.Snapshot);
  const index = r.u53();
  const term = r.u53();
  const confState = readConfState(r);
  const data = r.bytesField();
  r.end();
  return { metadata: { index, term, confState }, data };
}

// ---- Snapshot chunks ------------------------------------------------------------------

/** One record of a state machine as carried by snapshot chunks. */
export interface ChunkRecord {
  readonly part: 'session' | 'kv';
  readonly name: string;
  readonly value: Uint8Array;
}

/** Stream ids are this many random bytes: unique across nodes and restarts. */
export const streamIdBytes = 16;

export interface Chunk {
  /** Identifies the stream (streamIdBytes), so chunks of two streams are never mixed. */
  readonly streamId: Uint8Array;
  readonly seq: number;
  readonly final: boolean;
  /** Present in chunk 0 only. */
  readonly appliedState: AppliedState | null;
  readonly records: readonly ChunkRecord[];
}

export function chunkRecordBytes(record: ChunkRecord): number {
  return 1 + 4 + record.name.length * 3 + 4 + record.value.length;
}

export function encodeChunk(chunk: Chunk): Uint8Array {
  let capacity = 64;
  for (const record of chunk.records) capacity += chunkRecordBytes(record);
  if (chunk.streamId.length !== streamIdBytes) throw new Error('encodeChunk: bad stream id');
  const w = new Writer(capacity).u8(Tag.Chunk).u8(FORMAT_VERSION);
  w.raw(chunk.streamId)
    .u32(chunk.seq)
    .u8(chunk.final ? 1 : 0);
  if (chunk.seq === 0) {
    if (chunk.appliedState === null) throw new Error('encodeChunk: chunk 0 needs appliedState');
    writeApplied(w, chunk.appliedState);
  }
  w.u32(chunk.records.length);
  for (const record of chunk.records) {
    w.u8(record.part === 'session' ? 0 : 1)
      .string(record.name)
      .bytesField(record.value);
  }
  return w.finish();
}

export function decodeChunk(bytes: Uint8Array, what: string): Chunk {
  const r = new Reader(bytes, what);
  r.header(Tag.Chunk);
  const streamId = r.raw(streamIdBytes);
  const seq = r.u32();
  const final = r.flag();
  const appliedState = seq === 0 ? readApplied(r) : null;
  const count = r.u32();
  if (count > bytes.length / 9) throw new DecodeError('corrupt', `${what} claims ${count} records`);
  const records: ChunkRecord[] = [];
  for (let i = 0; i < count; i++) {
    const part = r.u8();
    if (part !== 0 && part !== 1) {
      throw new DecodeError('corrupt', `${what} holds a record of unknown kind ${part}`);
    }
    records.push({ part: part === 0 ? 'session' : 'kv', name: r.string(), value: r.bytesField() });
  }
  r.end();
  return { streamId, seq, final, appliedState, records };
}

// ---- Journal payloads -------------------------------------------------------------------
// The IndexedDB backend's OPFS journal (journal.browser.ts) holds engine writes and bases
// (the whole key space) in these records.

/** An engine op as the journal records it: clearRange becomes a range delete [key, end). */
export type JournalOp =
  | EngineOp
  | { readonly type: 'delRange'; readonly key: Uint8Array; readonly end: Uint8Array };

const JournalOpCode = { put: 1, del: 2, delRange: 3 } as const;

export function encodeJournalWrite(ops: readonly JournalOp[]): Uint8Array {
  const w = scratch().u8(Tag.JournalWrite).u8(FORMAT_VERSION).u32(ops.length);
  for (const op of ops) {
    w.u8(JournalOpCode[op.type]).bytesField(op.key);
    if (op.type === 'put') w.bytesField(op.value);
    else if (op.type === 'delRange') w.bytesField(op.end);
  }
  return w.finish();
}

export function decodeJournalWrite(bytes: Uint8Array, what: string): JournalOp[] {
  const r = new Reader(bytes, what);
  r.header(Tag.JournalWrite);
  const ops: JournalOp[] = [];
  for (let count = r.u32(); count > 0; count--) {
    const code = r.u8();
    const key = r.bytesField();
    if (code === JournalOpCode.put) ops.push({ type: 'put', key, value: r.bytesField() });
    else if (code === JournalOpCode.del) ops.push({ type: 'del', key });
    else if (code === JournalOpCode.delRange)
      ops.push({ type: 'delRange', key, end: r.bytesField() });
    else throw new DecodeError('corrupt', `${what} has unknown op ${code}`);
  }
  r.end();
  return ops;
}

export function encodeJournalBasePage(
  pairs: ReadonlyArray<readonly [Uint8Array, Uint8Array]>,
): Uint8Array {
  const w = scratch().u8(Tag.JournalBasePage).u8(FORMAT_VERSION).u32(pairs.length);
  for (const [key, value] of pairs) w.bytesField(key).bytesField(value);
  return w.finish();
}

export function decodeJournalBasePage(
  bytes: Uint8Array,
  what: string,
): Array<[Uint8Array, Uint8Array]> {
  const r = new Reader(bytes, what);
  r.header(Tag.JournalBasePage);
  const pairs: Array<[Uint8Array, Uint8Array]> = [];
  for (let count = r.u32(); count > 0; count--) pairs.push([r.bytesField(), r.bytesField()]);
  r.end();
  return pairs;
}

export function encodeJournalBaseEnd(): Uint8Array {
  return Uint8Array.of(Tag.JournalBaseEnd, FORMAT_VERSION);
}
