/**
 * Node-to-node frames: everything one MeshNode sends another in one loop round, coalesced
 * into as few Transport frames as fit (README.md, "Wire format", has the layout).
 *
 *   frame  = u8 NODE_WIRE_VERSION, then records back to back until the end
 *   record = u8 kind, then the kind's fields
 *
 * Numbers are unsigned LEB128 varints of safe integers (at most 8 bytes; decoding refuses
 * overlong encodings and values ≥ 2^53). Strings are varint-length UTF-8 (node ids: a u8
 * length). A RAFT record leads with a presence bitmap, so zero fields cost nothing, and
 * its `from`/`to` may say "the same as the previous RAFT record's in this frame" (length
 * 0: a node id is never empty), so the heartbeats of many groups to one peer cost a few
 * bytes each. Every frame stands alone: the builder restarts these references in each.
 *
 * Decoding validates the whole frame before handing out anything; a malformed frame
 * (wrong version, truncated, an unknown kind, a field out of range, ill-formed UTF-8,
 * trailing bytes) is refused whole with a reason, never thrown. Byte fields of decoded
 * records (entry data, contexts, snapshot data, values, chunks) are VIEWS into the frame:
 * the transport hands each frame to its handler, who owns it and must not reuse it while
 * the records live.
 */
import {
  type ConfState,
  type Entry,
  EntryType,
  type GroupId,
  isLocalMessage,
  type Message,
  MessageType,
  type NodeId,
  type SnapshotChunk,
} from '@meshkv/raft';
import { limits } from '@meshkv/storage';
import { ErrorCode } from './errors.ts';

export const NODE_WIRE_VERSION = 1;

const KiB = 1024;
const MiB = 1024 * KiB;
const U32_MAX = 0xffff_ffff;

/** Limits of every field a frame carries; a record beyond one is refused on both sides. */
export const wireLimits = {
  /** `from`, `to`, ConfState members and leader hints (types.ts: ≤ 64 UTF-8 bytes). */
  maxNodeIdBytes: limits.maxNodeIdBytes,
  /** Entries in one Raft message (raft's 1 MiB maxSizePerMsgBytes allows ~43,690 empty ones). */
  maxEntriesPerMessage: 65_536,
  /** One entry's data. */
  maxEntryDataBytes: limits.maxEntryDataBytes,
  /** All entries' data in one Raft message (raft sends ≤ maxSizePerMsgBytes, 1 MiB by default). */
  maxEntriesDataBytes: 8 * MiB,
  /** A Raft message's context (read-index request ids, heartbeat rounds: a few bytes). */
  maxContextBytes: 4 * KiB,
  /** The data of one Raft snapshot chunk (raft's maxSnapshotChunkBytes, 256 KiB by default). */
  maxRaftSnapshotChunkBytes: 4 * MiB,
  /** A Raft snapshot's whole data (its `totalBytes`): what storage keeps at most. */
  maxRaftSnapshotBytes: limits.maxSnapshotDataBytes,
  /** Members in each list of a ConfState. */
  maxConfMembers: limits.maxConfMembers,
  maxKeyBytes: limits.maxKeyBytes,
  maxValueBytes: limits.maxValueBytes,
  maxClientIdBytes: limits.maxClientIdBytes,
  /** An error's message in a RESPONSE. */
  maxErrorMessageBytes: 4 * KiB,
  /** A SNAPSHOT_ABORT's reason. */
  maxAbortReasonBytes: 256,
  /** A SNAPSHOT_CHUNK's bytes: what a storage restore takes at most. */
  maxSnapshotChunkBytes: limits.maxChunkBytes,
} as const;

/** Bytes of a varint holding `value` (a safe integer ≥ 0). */
function varintBytes(value: number): number {
  let count = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    count++;
  }
  return count;
}

const SAFE_VARINT_BYTES = varintBytes(Number.MAX_SAFE_INTEGER); // 8
const U32_VARINT_BYTES = varintBytes(U32_MAX); // 5
const nodeIdMaxBytes = 1 + wireLimits.maxNodeIdBytes;
const bytesFieldMaxBytes = (maxBytes: number) => varintBytes(maxBytes) + maxBytes;

/**
 * The largest record any kind can encode to within wireLimits (a RAFT message with every
 * field at its limit, entries and snapshot both, bounds them all). A Transport whose
 * maxFrameBytes is at least 1 + this carries every record: the node checks it at start.
 */
export const maxRecordBytes = ((): number => {
  const raftBytes =
    1 + // kind
    U32_VARINT_BYTES + // groupId
    1 + // type
    2 + // presence bitmap (9 bits)
    2 * nodeIdMaxBytes +
    5 * SAFE_VARINT_BYTES + // term, commit, index, logTerm, rejectHint
    bytesFieldMaxBytes(wireLimits.maxContextBytes) +
    varintBytes(wireLimits.maxEntriesPerMessage) +
    wireLimits.maxEntriesPerMessage *
      (2 * SAFE_VARINT_BYTES + 1 + varintBytes(wireLimits.maxEntryDataBytes)) +
    wireLimits.maxEntriesDataBytes +
    2 * SAFE_VARINT_BYTES + // snapshot index, term
    4 * (varintBytes(wireLimits.maxConfMembers) + wireLimits.maxConfMembers * nodeIdMaxBytes) +
    1 + // autoLeave
    2 * SAFE_VARINT_BYTES + // offsetBytes, totalBytes
    bytesFieldMaxBytes(wireLimits.maxRaftSnapshotChunkBytes);
  const requestBytes =
    1 +
    2 * U32_VARINT_BYTES + // requestId, partition
    1 + // op
    U32_VARINT_BYTES + // deadline
    bytesFieldMaxBytes(wireLimits.maxKeyBytes) +
    bytesFieldMaxBytes(wireLimits.maxClientIdBytes) +
    3 * SAFE_VARINT_BYTES + // seq, lowestUnanswered, appliedIndex
    bytesFieldMaxBytes(wireLimits.maxValueBytes);
  const responseBytes =
    1 +
    U32_VARINT_BYTES +
    1 + // outcome
    Math.max(
      bytesFieldMaxBytes(wireLimits.maxValueBytes),
      1 + bytesFieldMaxBytes(wireLimits.maxErrorMessageBytes) + nodeIdMaxBytes,
    );
  const chunkBytes =
    1 +
    3 * U32_VARINT_BYTES + // group, streamRequestId, seq
    1 + // final
    bytesFieldMaxBytes(wireLimits.maxSnapshotChunkBytes);
  // A RELAYED record holds any of them after its kind and two node ids.
  return 1 + 2 * nodeIdMaxBytes + Math.max(raftBytes, requestBytes, responseBytes, chunkBytes);
})();

// ---- Records ----------------------------------------------------------------------------

/** One Raft message of any group. */
export interface RaftRecord {
  readonly kind: 'raft';
  readonly message: Message;
}

/**
 * A record that travels through a third node because the link between its author and its
 * target is down (README "One missing link"): the author sends it to a relay, the relay
 * forwards it unchanged to `target`, which takes `record` as if `author` had sent it. A
 * relayed record never holds another.
 */
export interface RelayedRecord {
  readonly kind: 'relayed';
  readonly author: NodeId;
  readonly target: NodeId;
  readonly record: DirectRecord;
}

export type RequestOp = 'put' | 'delete' | 'get' | 'localGet' | 'appliedQuery' | 'putAckAll';

/**
 * A client operation forwarded to another node (the partition's leader, or a replica for
 * a local read or an applied query). `value` is non-null exactly for put; `appliedIndex`
 * is the log index asked about for appliedQuery (0 otherwise), which carries no key.
 */
export interface RequestRecord {
  readonly kind: 'request';
  /** The sender's id for the request (u32): the RESPONSE names it. */
  readonly requestId: number;
  readonly op: RequestOp;
  /** u32. */
  readonly partition: number;
  /** Non-empty, ≤ maxKeyBytes UTF-8; empty for appliedQuery. */
  readonly key: string;
  readonly value: Uint8Array | null;
  /** The session's client (Raft thesis §6.3), ≤ maxClientIdBytes UTF-8. */
  readonly clientId: string;
  readonly seq: number;
  /** The client's lowest sequence number still unanswered: ≤ seq. */
  readonly lowestUnanswered: number;
  /** What is left of the request's deadline when sent (u32): the receiver's clock differs. */
  readonly deadlineRemainingMs: number;
  readonly appliedIndex: number;
  /**
   * The sender cannot reach the partition's leader (its link is down): a receiver that
   * does not lead the partition forwards the request to the leader it knows, over its own
   * link, and sends the answer back (once: the forwarded copy has `relay` false). Only
   * put, putAckAll, delete and get are relayed.
   */
  readonly relay: boolean;
}

/**
 * The error codes a RESPONSE carries, in wire order (the byte is the position + 1: append
 * new codes, never reorder): every MeshKvError code (errors.ts), and NOT_LEADER (the
 * receiver does not lead the partition; `leaderHint` names the leader it knows).
 */
export const wireErrorCodes = [
  ErrorCode.KEY_INVALID,
  ErrorCode.VALUE_TOO_LARGE,
  ErrorCode.VALUE_INVALID,
  ErrorCode.UNAVAILABLE,
  ErrorCode.TIMEOUT,
  ErrorCode.OVERLOADED,
  ErrorCode.ACK_INCOMPLETE,
  ErrorCode.CLOSED,
  ErrorCode.OUTCOME_UNKNOWN,
  'NOT_LEADER',
] as const;
export type WireErrorCode = ErrorCode | 'NOT_LEADER';

interface ResponseBase {
  readonly kind: 'response';
  /** The REQUEST's requestId. */
  readonly requestId: number;
}
/** put → true; delete → whether the key existed. */
export interface BooleanResponse extends ResponseBase {
  readonly outcome: 'boolean';
  readonly value: boolean;
}
/** get / localGet: the value, or null when the key is absent. */
export interface ValueResponse extends ResponseBase {
  readonly outcome: 'value';
  readonly value: Uint8Array | null;
}
/** appliedQuery: the replica's applied index. */
export interface AppliedResponse extends ResponseBase {
  readonly outcome: 'applied';
  readonly appliedIndex: number;
}
export interface ErrorResponse extends ResponseBase {
  readonly outcome: 'error';
  readonly code: WireErrorCode;
  /** For a person, ≤ maxErrorMessageBytes UTF-8. */
  readonly message: string;
  /** The leader the sender knows of, if any. */
  readonly leaderHint: NodeId | null;
}
export type ResponseRecord = BooleanResponse | ValueResponse | AppliedResponse | ErrorResponse;

/** Follower → leader: send chunk `seq` of the KV stream of snapshot `snapshotIndex`. */
export interface SnapshotPullRecord {
  readonly kind: 'snapshotPull';
  /** u32. */
  readonly group: GroupId;
  /** ≥ 1: the snapshot whose KV state streams. */
  readonly snapshotIndex: number;
  /** The puller's id for the stream (u32): every chunk and abort names it. */
  readonly streamRequestId: number;
  readonly seq: number;
}

/** Leader → follower: chunk `seq` of a stream; `final` = the stream ends with it. */
export interface SnapshotChunkRecord {
  readonly kind: 'snapshotChunk';
  readonly group: GroupId;
  readonly streamRequestId: number;
  readonly seq: number;
  readonly final: boolean;
  /** ≤ maxSnapshotChunkBytes (storage's limits.maxChunkBytes). */
  readonly data: Uint8Array;
}

/** Either side: the stream is given up (leader gone, stream closed, too many streams...). */
export interface SnapshotAbortRecord {
  readonly kind: 'snapshotAbort';
  readonly group: GroupId;
  readonly streamRequestId: number;
  /** For logs, ≤ maxAbortReasonBytes UTF-8. */
  readonly reason: string;
}

/**
 * "You are not in group `group`'s configuration applied at my index `configIndex`"
 * (packages/raft/README.md, "Removed replicas"): the receiver destroys its replica only if
 * `configIndex` is above its own applied index.
 */
export interface NotMemberRecord {
  readonly kind: 'notMember';
  readonly group: GroupId;
  readonly configIndex: number;
  /** The replica told (a replica id: the node may host a newer replica of the group). */
  readonly replica: NodeId;
}

/**
 * "Is replica `replica` still in group `group`'s configuration?": sent by a voter that has
 * heard nothing for a long time and is outside the partition's placement, to the nodes of
 * the placement (the ones its stale configuration may no longer name). A node whose
 * replica applied a configuration without `replica`, at an index at or above the one that
 * added it, answers NOT_MEMBER; any other node stays silent.
 */
export interface MemberQueryRecord {
  readonly kind: 'memberQuery';
  readonly group: GroupId;
  readonly replica: NodeId;
}

/** Leader → follower: group `group` hibernates at (`term`, `commit`) (README "The loop"). */
export interface QuiesceRecord {
  readonly kind: 'quiesce';
  readonly group: GroupId;
  readonly term: number;
  readonly commit: number;
}

/** Every record but RELAYED: what a RELAYED record may carry. */
export type DirectRecord =
  | RaftRecord
  | RequestRecord
  | ResponseRecord
  | SnapshotPullRecord
  | SnapshotChunkRecord
  | SnapshotAbortRecord
  | NotMemberRecord
  | QuiesceRecord
  | MemberQueryRecord;

export type WireRecord = DirectRecord | RelayedRecord;

/** The kind byte of each record. */
const Kind = {
  Raft: 1,
  Request: 2,
  Response: 3,
  SnapshotPull: 4,
  SnapshotChunk: 5,
  SnapshotAbort: 6,
  NotMember: 7,
  Quiesce: 8,
  MemberQuery: 9,
  Relayed: 10,
} as const;

const requestOps: readonly RequestOp[] = [
  'put',
  'delete',
  'get',
  'localGet',
  'appliedQuery',
  'putAckAll',
];
/** put and putAckAll carry a value (putAckAll: answered once every voter applied it). */
function isPut(op: RequestOp): boolean {
  return op === 'put' || op === 'putAckAll';
}

/** The op byte is the position in requestOps + 1, or'ed with RELAY_BIT for a relayed request. */
const requestOpBytes: Readonly<Record<RequestOp, number>> = {
  put: 1,
  delete: 2,
  get: 3,
  localGet: 4,
  appliedQuery: 5,
  putAckAll: 6,
};

const RELAY_BIT = 0x80;
/** The ops a request may ask to be relayed (the ones that go to a partition's leader). */
function isRelayable(op: RequestOp): boolean {
  return op === 'put' || op === 'putAckAll' || op === 'delete' || op === 'get';
}

const Outcome = { False: 1, True: 2, ValueNull: 3, Value: 4, Applied: 5, Error: 6 } as const;

/**
 * Presence bits of a RAFT record's fields; the heartbeat's (term, commit, context) come
 * first so a heartbeat's bitmap is one byte. `reject` is the bit alone.
 */
const Field = {
  Term: 1 << 0,
  Commit: 1 << 1,
  Context: 1 << 2,
  Index: 1 << 3,
  LogTerm: 1 << 4,
  Reject: 1 << 5,
  Entries: 1 << 6,
  RejectHint: 1 << 7,
  Snapshot: 1 << 8,
} as const;
const ALL_FIELDS = (1 << 9) - 1;

const MAX_MESSAGE_TYPE = MessageType.Commit;
// Read once: a re-exported binding may be a getter per access (tsx's module shims are).
const ENTRY_NORMAL = EntryType.Normal;
const ENTRY_CONF_CHANGE = EntryType.ConfChange;

// ---- Encoding ---------------------------------------------------------------------------

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
/** A lone surrogate: TextEncoder would turn it into U+FFFD, so the peer would read another string. */
const loneSurrogate = /\p{Cs}/u;
/** Scratch for strings that are not plain ASCII (3 UTF-8 bytes per UTF-16 unit at most). */
const stringScratch = new Uint8Array(3 * wireLimits.maxErrorMessageBytes);

/** A record the builder refuses: a field out of wireLimits or of the wrong shape (a bug). */
function refuse(what: string): never {
  throw new RangeError(`wire: cannot encode ${what}`);
}

function isSafeCount(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

function isU32(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= U32_MAX;
}

/** A builder's buffer beyond this is given back by takeFrames (one per peer). */
const RETAINED_CAPACITY_BYTES = 1 * MiB;

/**
 * Builds the frames for one peer. Add every record of a round, then `takeFrames()`: each
 * frame is at most `maxFrameBytes` and holds whole records, in the order added. Records
 * are validated as they are added (a RangeError for one out of wireLimits, and for one
 * that cannot fit a frame alone); a refused record leaves the builder as it was.
 */
export class FrameBuilder {
  private bytes: Uint8Array;
  private length = 0;
  /** Offset of the open frame's version byte; the frame is open when length > frameStart. */
  private frameStart = 0;
  /** End offsets of the frames closed so far (each starts where the previous ended). */
  private frameEnds: number[] = [];
  /** The previous RAFT record's from/to in the open frame, for the "same as before" form. */
  private lastFrom: NodeId | null = null;
  private lastTo: NodeId | null = null;
  private records = 0;

  constructor(
    readonly maxFrameBytes: number,
    private readonly initialCapacityBytes = 4 * KiB,
  ) {
    if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 2) {
      throw new RangeError(`maxFrameBytes must be an integer ≥ 2, got ${maxFrameBytes}`);
    }
    if (!Number.isSafeInteger(initialCapacityBytes) || initialCapacityBytes < 16) {
      throw new RangeError(
        `initialCapacityBytes must be an integer ≥ 16, got ${initialCapacityBytes}`,
      );
    }
    if (initialCapacityBytes > RETAINED_CAPACITY_BYTES) {
      throw new RangeError(`initialCapacityBytes must be ≤ ${RETAINED_CAPACITY_BYTES}`);
    }
    this.bytes = new Uint8Array(initialCapacityBytes);
  }

  /** Bytes the builder's buffer holds now (tests check it does not stay large). */
  get capacityBytes(): number {
    return this.bytes.length;
  }

  /** Records added since the last takeFrames(). */
  get recordCount(): number {
    return this.records;
  }

  /** Bytes the frames taken now would hold in total. */
  get byteLength(): number {
    return this.length;
  }

  add(record: WireRecord): void {
    this.addRecord(record, this.writeRecord);
  }

  addRaft(m: Message): void {
    this.addRecord(m, this.writeRaft);
  }

  /**
   * The frames of everything added, in order, each ≤ maxFrameBytes; the builder is empty
   * afterwards and reuses its buffer. The frames are copies the caller owns.
   */
  takeFrames(): Uint8Array[] {
    if (this.length > this.frameStart + 1) this.frameEnds.push(this.length);
    const frames: Uint8Array[] = [];
    let start = 0;
    for (const end of this.frameEnds) {
      frames.push(this.bytes.slice(start, end));
      start = end;
    }
    // A round that carried a snapshot chunk must not pin megabytes per peer for good.
    if (this.bytes.length > RETAINED_CAPACITY_BYTES) {
      this.bytes = new Uint8Array(this.initialCapacityBytes);
    }
    this.length = 0;
    this.frameStart = 0;
    this.frameEnds = [];
    this.lastFrom = null;
    this.lastTo = null;
    this.records = 0;
    return frames;
  }

  /**
   * Writes a record into the open frame; if that overflows it, writes it again as the
   * first of a new frame (whose RAFT records name their ids afresh).
   */
  private addRecord<R>(record: R, write: (this: FrameBuilder, record: R) => void): void {
    const from = this.lastFrom;
    const to = this.lastTo;
    const start = this.openRecord();
    try {
      write.call(this, record);
      if (this.length - this.frameStart > this.maxFrameBytes) {
        this.restartFrame(start);
        write.call(this, record);
        this.checkAlone();
      }
    } catch (error) {
      this.rollBack(start, from, to);
      throw error;
    }
    this.records++;
  }

  /** Opens a frame if none is; returns where the record starts. */
  private openRecord(): number {
    if (this.length === this.frameStart) {
      this.ensure(1);
      this.bytes[this.length++] = NODE_WIRE_VERSION;
    }
    return this.length;
  }

  /** The record written at `start` overflows the open frame: close it before the record. */
  private restartFrame(start: number): void {
    if (start === this.frameStart + 1) this.checkAlone();
    this.length = start;
    this.frameEnds.push(start);
    this.frameStart = start;
    this.lastFrom = null;
    this.lastTo = null;
    this.bytes[this.length++] = NODE_WIRE_VERSION;
  }

  /** Throws if the record alone in the open frame (ending at `end`) overflows it. */
  private checkAlone(end = this.length): void {
    if (end - this.frameStart > this.maxFrameBytes) {
      throw new RangeError(
        `wire: a record of ${end - this.frameStart - 1} bytes does not fit a frame of ${this.maxFrameBytes} bytes (records are at most maxRecordBytes = ${maxRecordBytes})`,
      );
    }
  }

  /**
   * Undoes a refused record written from `start`. A frame it opened, or restarted, holds
   * nothing else: it is dropped again, and with it the previous records' from/to.
   */
  private rollBack(start: number, from: NodeId | null, to: NodeId | null): void {
    this.length = start <= this.frameStart + 1 ? this.frameStart : start;
    const empty = this.length === this.frameStart;
    this.lastFrom = empty ? null : from;
    this.lastTo = empty ? null : to;
  }

  private ensure(count: number): void {
    if (this.length + count <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.length + count));
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  private u8(value: number): void {
    this.ensure(1);
    this.bytes[this.length++] = value;
  }

  /** A safe integer ≥ 0, checked by the caller. */
  private varint(value: number): void {
    this.ensure(SAFE_VARINT_BYTES);
    const b = this.bytes;
    let at = this.length;
    while (value > U32_MAX) {
      b[at++] = (value % 0x80) | 0x80;
      value = Math.floor(value / 0x80);
    }
    while (value > 0x7f) {
      b[at++] = (value & 0x7f) | 0x80;
      value >>>= 7;
    }
    b[at++] = value;
    this.length = at;
  }

  private safe(value: number, what: string): void {
    if (!isSafeCount(value)) refuse(`${what} ${value}: not a safe integer ≥ 0`);
    this.varint(value);
  }

  private u32(value: number, what: string): void {
    if (!isU32(value)) refuse(`${what} ${value}: not a u32`);
    this.varint(value);
  }

  private bytesField(value: Uint8Array, maxBytes: number, what: string): void {
    if (!(value instanceof Uint8Array)) refuse(`${what}: not bytes`);
    if (value.byteLength > maxBytes)
      refuse(`${what} of ${value.byteLength} bytes (max ${maxBytes})`);
    this.varint(value.byteLength);
    this.ensure(value.byteLength);
    this.bytes.set(value, this.length);
    this.length += value.byteLength;
  }

  /** A string as UTF-8 with a varint length (u8 for node ids, whose maxBytes < 128). */
  private string(value: string, maxBytes: number, what: string): void {
    if (typeof value !== 'string') refuse(`${what}: not a string`);
    // UTF-8 never has fewer bytes than UTF-16 units.
    if (value.length > maxBytes) refuse(`${what} of ${value.length}+ bytes (max ${maxBytes})`);
    const units = value.length;
    let ascii = true;
    for (let i = 0; i < units; i++) {
      if (value.charCodeAt(i) >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      this.varint(units);
      this.ensure(units);
      const b = this.bytes;
      let at = this.length;
      for (let i = 0; i < units; i++) b[at++] = value.charCodeAt(i);
      this.length = at;
      return;
    }
    if (loneSurrogate.test(value)) refuse(`${what}: not well-formed UTF-16`);
    const { written } = utf8Encoder.encodeInto(value, stringScratch);
    if (written > maxBytes) refuse(`${what} of ${written} bytes (max ${maxBytes})`);
    this.bytesField(stringScratch.subarray(0, written), maxBytes, what);
  }

  private nodeId(id: NodeId, what: string): void {
    if (typeof id !== 'string' || id.length === 0) refuse(`${what}: not a non-empty string`);
    this.string(id, wireLimits.maxNodeIdBytes, what);
  }

  private writeRecord(record: WireRecord): void {
    switch (record.kind) {
      case 'raft':
        this.writeRaft(record.message);
        break;
      case 'relayed':
        this.writeRelayed(record);
        break;
      case 'request':
        this.writeRequest(record);
        break;
      case 'response':
        this.writeResponse(record);
        break;
      case 'snapshotPull':
        this.writeSnapshotPull(record);
        break;
      case 'snapshotChunk':
        this.writeSnapshotChunk(record);
        break;
      case 'snapshotAbort':
        this.writeSnapshotAbort(record);
        break;
      case 'notMember':
        this.writeNotMember(record);
        break;
      case 'quiesce':
        this.writeQuiesce(record);
        break;
      case 'memberQuery':
        this.writeMemberQuery(record);
        break;
      default:
        refuse(`record kind ${(record as { kind: unknown }).kind}`);
    }
  }

  private writeRelayed(r: RelayedRecord): void {
    if (r.record.kind === ('relayed' as string)) refuse('a relayed record inside another');
    this.u8(Kind.Relayed);
    this.nodeId(r.author, 'author');
    this.nodeId(r.target, 'target');
    this.writeRecord(r.record);
  }

  private writeRaft(m: Message): void {
    if (!isU32(m.groupId)) refuse(`groupId ${m.groupId}`);
    if (!Number.isInteger(m.type) || m.type < 0 || m.type > MAX_MESSAGE_TYPE) {
      refuse(`message type ${m.type}`);
    }
    if (isLocalMessage(m.type)) refuse(`local message type ${m.type}`);
    let fields = 0;
    if (m.term !== 0) fields |= Field.Term;
    if (m.commit !== 0) fields |= Field.Commit;
    if (m.context.byteLength !== 0) fields |= Field.Context;
    if (m.index !== 0) fields |= Field.Index;
    if (m.logTerm !== 0) fields |= Field.LogTerm;
    if (m.reject) fields |= Field.Reject;
    if (m.entries.length !== 0) fields |= Field.Entries;
    if (m.rejectHint !== 0) fields |= Field.RejectHint;
    if (m.snapshot !== null) fields |= Field.Snapshot;
    this.u8(Kind.Raft);
    this.varint(m.groupId);
    this.u8(m.type);
    this.varint(fields);
    if (m.from === this.lastFrom) {
      this.u8(0);
    } else {
      this.nodeId(m.from, 'from');
      this.lastFrom = m.from;
    }
    if (m.to === this.lastTo) {
      this.u8(0);
    } else {
      this.nodeId(m.to, 'to');
      this.lastTo = m.to;
    }
    if (fields & Field.Term) this.safe(m.term, 'term');
    if (fields & Field.Commit) this.safe(m.commit, 'commit');
    if (fields & Field.Context) this.bytesField(m.context, wireLimits.maxContextBytes, 'context');
    if (fields & Field.Index) this.safe(m.index, 'index');
    if (fields & Field.LogTerm) this.safe(m.logTerm, 'logTerm');
    if (fields & Field.Entries) this.entries(m.entries);
    if (fields & Field.RejectHint) this.safe(m.rejectHint, 'rejectHint');
    if (m.snapshot !== null) this.snapshotChunk(m.snapshot);
  }

  private entries(entries: readonly Entry[]): void {
    const count = entries.length;
    if (count > wireLimits.maxEntriesPerMessage) refuse(`${count} entries in one message`);
    this.varint(count);
    let dataBytes = 0;
    for (let i = 0; i < count; i++) {
      const e = entries[i]!;
      if (e.type !== ENTRY_NORMAL && e.type !== ENTRY_CONF_CHANGE) {
        refuse(`entry type ${e.type}`);
      }
      this.safe(e.term, 'entry term');
      this.safe(e.index, 'entry index');
      this.u8(e.type);
      this.bytesField(e.data, wireLimits.maxEntryDataBytes, 'entry data');
      dataBytes += e.data.byteLength;
    }
    if (dataBytes > wireLimits.maxEntriesDataBytes) {
      refuse(
        `entries of ${dataBytes} bytes in one message (max ${wireLimits.maxEntriesDataBytes})`,
      );
    }
  }

  private snapshotChunk(c: SnapshotChunk): void {
    const meta = c.metadata;
    if (meta.index === 0) refuse('snapshot index 0');
    this.safe(meta.index, 'snapshot index');
    this.safe(meta.term, 'snapshot term');
    const cs = meta.confState;
    this.members(cs.voters, 'voters');
    this.members(cs.learners, 'learners');
    this.members(cs.votersOutgoing, 'votersOutgoing');
    this.members(cs.learnersNext, 'learnersNext');
    this.u8(cs.autoLeave ? 1 : 0);
    if (c.totalBytes > wireLimits.maxRaftSnapshotBytes) refuse(`snapshot of ${c.totalBytes} bytes`);
    if (!isSafeCount(c.offsetBytes) || c.offsetBytes + c.data.byteLength > c.totalBytes) {
      refuse(`snapshot chunk at ${c.offsetBytes} beyond its total ${c.totalBytes}`);
    }
    this.safe(c.offsetBytes, 'snapshot offsetBytes');
    this.safe(c.totalBytes, 'snapshot totalBytes');
    this.bytesField(c.data, wireLimits.maxRaftSnapshotChunkBytes, 'snapshot chunk data');
  }

  private members(ids: readonly NodeId[], what: string): void {
    if (ids.length > wireLimits.maxConfMembers) refuse(`${ids.length} ${what}`);
    this.varint(ids.length);
    for (let i = 0; i < ids.length; i++) this.nodeId(ids[i]!, what);
  }

  private writeRequest(r: RequestRecord): void {
    const op = requestOpBytes[r.op];
    if (op === undefined) refuse(`request op ${r.op}`);
    if ((r.value !== null) !== isPut(r.op)) refuse(`${r.op} request with value ${r.value}`);
    if (r.op === 'appliedQuery' ? r.key !== '' : r.key === '')
      refuse(`${r.op} with key '${r.key}'`);
    if (r.op !== 'appliedQuery' && r.appliedIndex !== 0) refuse(`${r.op} with an appliedIndex`);
    if (r.lowestUnanswered > r.seq) refuse(`lowestUnanswered ${r.lowestUnanswered} > seq ${r.seq}`);
    if (r.relay && !isRelayable(r.op)) refuse(`a relayed ${r.op}`);
    this.u8(Kind.Request);
    this.u32(r.requestId, 'requestId');
    this.u8(r.relay ? op | RELAY_BIT : op);
    this.u32(r.partition, 'partition');
    this.u32(r.deadlineRemainingMs, 'deadlineRemainingMs');
    this.string(r.key, wireLimits.maxKeyBytes, 'key');
    this.string(r.clientId, wireLimits.maxClientIdBytes, 'clientId');
    this.safe(r.seq, 'seq');
    this.safe(r.lowestUnanswered, 'lowestUnanswered');
    if (r.value !== null) this.bytesField(r.value, wireLimits.maxValueBytes, 'value');
    if (r.op === 'appliedQuery') this.safe(r.appliedIndex, 'appliedIndex');
  }

  private writeResponse(r: ResponseRecord): void {
    this.u8(Kind.Response);
    this.u32(r.requestId, 'requestId');
    switch (r.outcome) {
      case 'boolean': {
        const value: unknown = r.value;
        if (typeof value !== 'boolean') refuse(`boolean response ${String(value)}`);
        this.u8(value ? Outcome.True : Outcome.False);
        return;
      }
      case 'value':
        if (r.value === null) {
          this.u8(Outcome.ValueNull);
        } else {
          this.u8(Outcome.Value);
          this.bytesField(r.value, wireLimits.maxValueBytes, 'value');
        }
        return;
      case 'applied':
        this.u8(Outcome.Applied);
        this.safe(r.appliedIndex, 'appliedIndex');
        return;
      case 'error': {
        const code = wireErrorCodes.indexOf(r.code);
        if (code < 0) refuse(`error code ${r.code}`);
        this.u8(Outcome.Error);
        this.u8(code + 1);
        this.string(r.message, wireLimits.maxErrorMessageBytes, 'error message');
        if (r.leaderHint === null) {
          this.u8(0);
        } else {
          this.nodeId(r.leaderHint, 'leaderHint');
        }
        return;
      }
      default:
        refuse(`response outcome ${(r as { outcome: unknown }).outcome}`);
    }
  }

  private writeSnapshotPull(r: SnapshotPullRecord): void {
    if (r.snapshotIndex === 0) refuse('snapshotIndex 0');
    this.u8(Kind.SnapshotPull);
    this.u32(r.group, 'group');
    this.safe(r.snapshotIndex, 'snapshotIndex');
    this.u32(r.streamRequestId, 'streamRequestId');
    this.safe(r.seq, 'seq');
  }

  private writeSnapshotChunk(r: SnapshotChunkRecord): void {
    if (typeof r.final !== 'boolean') refuse(`final ${r.final}`);
    this.u8(Kind.SnapshotChunk);
    this.u32(r.group, 'group');
    this.u32(r.streamRequestId, 'streamRequestId');
    this.safe(r.seq, 'seq');
    this.u8(r.final ? 1 : 0);
    this.bytesField(r.data, wireLimits.maxSnapshotChunkBytes, 'snapshot chunk');
  }

  private writeSnapshotAbort(r: SnapshotAbortRecord): void {
    this.u8(Kind.SnapshotAbort);
    this.u32(r.group, 'group');
    this.u32(r.streamRequestId, 'streamRequestId');
    this.string(r.reason, wireLimits.maxAbortReasonBytes, 'abort reason');
  }

  private writeNotMember(r: NotMemberRecord): void {
    this.u8(Kind.NotMember);
    this.u32(r.group, 'group');
    this.safe(r.configIndex, 'configIndex');
    this.nodeId(r.replica, 'replica');
  }

  private writeQuiesce(r: QuiesceRecord): void {
    this.u8(Kind.Quiesce);
    this.u32(r.group, 'group');
    this.safe(r.term, 'term');
    this.safe(r.commit, 'commit');
  }

  private writeMemberQuery(r: MemberQueryRecord): void {
    this.u8(Kind.MemberQuery);
    this.u32(r.group, 'group');
    this.nodeId(r.replica, 'replica');
  }
}

// ---- Decoding ---------------------------------------------------------------------------

export type DecodeFrameResult =
  | { readonly ok: true; readonly records: WireRecord[] }
  | { readonly ok: false; readonly reason: string };

/** Why a frame is refused; thrown inside the decoder only, caught by decodeFrame. */
class MalformedFrame extends Error {}

function malformed(reason: string): never {
  throw new MalformedFrame(reason);
}

/** An entry's smallest encoding: term, index, type, data length, one byte each. */
const MIN_ENTRY_BYTES = 4;
/** A node id's smallest encoding: its length and one byte. */
const MIN_NODE_ID_BYTES = 2;
const noEntries: readonly Entry[] = Object.freeze([]);
const noBytes = new Uint8Array(0);

class FrameReader {
  offset = 1;
  private lastFrom: NodeId | null = null;
  private lastTo: NodeId | null = null;

  constructor(private readonly bytes: Uint8Array) {}

  get done(): boolean {
    return this.offset === this.bytes.length;
  }

  u8(what: string): number {
    if (this.offset >= this.bytes.length) malformed(`truncated at ${what}`);
    return this.bytes[this.offset++]!;
  }

  flag(what: string): boolean {
    const byte = this.u8(what);
    if (byte > 1) malformed(`${what} is ${byte}, not 0 or 1`);
    return byte === 1;
  }

  /** A safe integer: at most 8 bytes, no overlong form, below 2^53. */
  varint(what: string): number {
    const b = this.bytes;
    const end = b.length;
    let at = this.offset;
    if (at >= end) malformed(`truncated at ${what}`);
    const first = b[at++]!;
    if (first < 0x80) {
      this.offset = at;
      return first;
    }
    let value = first & 0x7f;
    let scale = 0x80;
    for (let i = 1; i < SAFE_VARINT_BYTES; i++) {
      if (at >= end) malformed(`truncated at ${what}`);
      const byte = b[at++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) {
        if (byte === 0) malformed(`${what} is an overlong varint`);
        if (value > Number.MAX_SAFE_INTEGER) malformed(`${what} is ≥ 2^53`);
        this.offset = at;
        return value;
      }
      scale *= 0x80;
    }
    return malformed(`${what} is a varint of more than ${SAFE_VARINT_BYTES} bytes`);
  }

  /** Refuses a count of items that cannot fit the bytes left, before allocating for them. */
  fits(count: number, minItemBytes: number, what: string): void {
    const leftBytes = this.bytes.length - this.offset;
    if (count * minItemBytes > leftBytes) {
      malformed(`${count} ${what} cannot fit the ${leftBytes} bytes left`);
    }
  }

  u32(what: string): number {
    const value = this.varint(what);
    if (value > U32_MAX) malformed(`${what} ${value} is not a u32`);
    return value;
  }

  bytesField(maxBytes: number, what: string): Uint8Array {
    const length = this.varint(what);
    if (length > maxBytes) malformed(`${what} of ${length} bytes (max ${maxBytes})`);
    const at = this.offset;
    if (length > this.bytes.length - at) malformed(`truncated in ${what}`);
    this.offset = at + length;
    return this.bytes.subarray(at, at + length);
  }

  string(maxBytes: number, what: string): string {
    const bytes = this.bytesField(maxBytes, what);
    try {
      return utf8Decoder.decode(bytes);
    } catch {
      return malformed(`${what} is not well-formed UTF-8`);
    }
  }

  nodeId(what: string): NodeId {
    const id = this.string(wireLimits.maxNodeIdBytes, what);
    if (id.length === 0) malformed(`${what} is empty`);
    return id;
  }

  /** A node id, or null for the empty string (a node id is never empty). */
  private optionalNodeId(what: string): NodeId | null {
    if (this.offset < this.bytes.length && this.bytes[this.offset] === 0) {
      this.offset++;
      return null;
    }
    return this.nodeId(what);
  }

  /** A RAFT record's from/to: a node id, or empty for the previous RAFT record's. */
  private linkId(previous: NodeId | null, what: string): NodeId {
    const id = this.optionalNodeId(what);
    if (id !== null) return id;
    if (previous === null) malformed(`${what} refers to no earlier RAFT record`);
    return previous;
  }

  raft(): RaftRecord {
    return { kind: 'raft', message: this.raftMessage() };
  }

  relayed(): RelayedRecord {
    const author = this.nodeId('author');
    const target = this.nodeId('target');
    const record = this.record();
    if (record.kind === 'relayed') malformed('a relayed record inside another');
    return { kind: 'relayed', author, target, record };
  }

  private raftMessage(): Message {
    const groupId = this.u32('groupId');
    const type = this.u8('type') as MessageType;
    if (type > MAX_MESSAGE_TYPE) malformed(`unknown message type ${type}`);
    if (isLocalMessage(type)) malformed(`local message type ${type}`);
    const fields = this.varint('fields');
    if (fields > ALL_FIELDS) malformed(`unknown fields 0x${fields.toString(16)}`);
    const from = this.linkId(this.lastFrom, 'from');
    this.lastFrom = from;
    const to = this.linkId(this.lastTo, 'to');
    this.lastTo = to;
    const term = fields & Field.Term ? this.varint('term') : 0;
    const commit = fields & Field.Commit ? this.varint('commit') : 0;
    const context =
      fields & Field.Context ? this.bytesField(wireLimits.maxContextBytes, 'context') : noBytes;
    const index = fields & Field.Index ? this.varint('index') : 0;
    const logTerm = fields & Field.LogTerm ? this.varint('logTerm') : 0;
    const entries = fields & Field.Entries ? this.entries() : noEntries;
    const rejectHint = fields & Field.RejectHint ? this.varint('rejectHint') : 0;
    const snapshot = fields & Field.Snapshot ? this.snapshotChunk() : null;
    return {
      groupId,
      type,
      from,
      to,
      term,
      logTerm,
      index,
      entries,
      commit,
      reject: (fields & Field.Reject) !== 0,
      rejectHint,
      context,
      snapshot,
    };
  }

  private entries(): Entry[] {
    const count = this.varint('entry count');
    if (count > wireLimits.maxEntriesPerMessage) malformed(`${count} entries in one message`);
    this.fits(count, MIN_ENTRY_BYTES, 'entries');
    const entries: Entry[] = new Array(count);
    let dataBytes = 0;
    for (let i = 0; i < count; i++) {
      const term = this.varint('entry term');
      const index = this.varint('entry index');
      const type = this.u8('entry type') as EntryType;
      if (type !== ENTRY_NORMAL && type !== ENTRY_CONF_CHANGE) {
        malformed(`entry type ${type}`);
      }
      const data = this.bytesField(wireLimits.maxEntryDataBytes, 'entry data');
      dataBytes += data.byteLength;
      entries[i] = { term, index, type, data };
    }
    if (dataBytes > wireLimits.maxEntriesDataBytes) {
      malformed(`entries of ${dataBytes} bytes in one message`);
    }
    return entries;
  }

  private snapshotChunk(): SnapshotChunk {
    const index = this.varint('snapshot index');
    if (index === 0) malformed('snapshot index 0');
    const term = this.varint('snapshot term');
    const confState: ConfState = {
      voters: this.members('voters'),
      learners: this.members('learners'),
      votersOutgoing: this.members('votersOutgoing'),
      learnersNext: this.members('learnersNext'),
      autoLeave: this.flag('autoLeave'),
    };
    const offsetBytes = this.varint('snapshot offsetBytes');
    const totalBytes = this.varint('snapshot totalBytes');
    if (totalBytes > wireLimits.maxRaftSnapshotBytes) malformed(`snapshot of ${totalBytes} bytes`);
    const data = this.bytesField(wireLimits.maxRaftSnapshotChunkBytes, 'snapshot chunk data');
    if (offsetBytes + data.byteLength > totalBytes) {
      malformed(`snapshot chunk at ${offsetBytes} beyond its total ${totalBytes}`);
    }
    return { metadata: { index, term, confState }, offsetBytes, totalBytes, data };
  }

  private members(what: string): NodeId[] {
    const count = this.varint(`${what} count`);
    if (count > wireLimits.maxConfMembers) malformed(`${count} ${what}`);
    this.fits(count, MIN_NODE_ID_BYTES, what);
    const ids: NodeId[] = new Array(count);
    for (let i = 0; i < count; i++) ids[i] = this.nodeId(what);
    return ids;
  }

  request(): RequestRecord {
    const requestId = this.u32('requestId');
    const opByte = this.u8('op');
    const relay = (opByte & RELAY_BIT) !== 0;
    const op = requestOps[(opByte & ~RELAY_BIT) - 1];
    if (op === undefined) malformed(`unknown request op ${opByte}`);
    if (relay && !isRelayable(op)) malformed(`a relayed ${op}`);
    const partition = this.u32('partition');
    const deadlineRemainingMs = this.u32('deadlineRemainingMs');
    const key = this.string(wireLimits.maxKeyBytes, 'key');
    if (op === 'appliedQuery' ? key !== '' : key === '') malformed(`${op} with key '${key}'`);
    const clientId = this.string(wireLimits.maxClientIdBytes, 'clientId');
    const seq = this.varint('seq');
    const lowestUnanswered = this.varint('lowestUnanswered');
    if (lowestUnanswered > seq) malformed(`lowestUnanswered ${lowestUnanswered} > seq ${seq}`);
    const value = isPut(op) ? this.bytesField(wireLimits.maxValueBytes, 'value') : null;
    const appliedIndex = op === 'appliedQuery' ? this.varint('appliedIndex') : 0;
    return {
      kind: 'request',
      requestId,
      op,
      partition,
      key,
      value,
      clientId,
      seq,
      lowestUnanswered,
      deadlineRemainingMs,
      appliedIndex,
      relay,
    };
  }

  response(): ResponseRecord {
    const requestId = this.u32('requestId');
    const outcome = this.u8('outcome');
    switch (outcome) {
      case Outcome.False:
      case Outcome.True:
        return { kind: 'response', requestId, outcome: 'boolean', value: outcome === Outcome.True };
      case Outcome.ValueNull:
        return { kind: 'response', requestId, outcome: 'value', value: null };
      case Outcome.Value: {
        const value = this.bytesField(wireLimits.maxValueBytes, 'value');
        return { kind: 'response', requestId, outcome: 'value', value };
      }
      case Outcome.Applied: {
        const appliedIndex = this.varint('appliedIndex');
        return { kind: 'response', requestId, outcome: 'applied', appliedIndex };
      }
      case Outcome.Error: {
        const codeByte = this.u8('error code');
        const code = wireErrorCodes[codeByte - 1];
        if (code === undefined) malformed(`unknown error code ${codeByte}`);
        const message = this.string(wireLimits.maxErrorMessageBytes, 'error message');
        const leaderHint = this.optionalNodeId('leaderHint');
        return { kind: 'response', requestId, outcome: 'error', code, message, leaderHint };
      }
      default:
        return malformed(`unknown response outcome ${outcome}`);
    }
  }

  snapshotPull(): SnapshotPullRecord {
    const group = this.u32('group');
    const snapshotIndex = this.varint('snapshotIndex');
    if (snapshotIndex === 0) malformed('snapshotIndex 0');
    const streamRequestId = this.u32('streamRequestId');
    const seq = this.varint('seq');
    return { kind: 'snapshotPull', group, snapshotIndex, streamRequestId, seq };
  }

  snapshotChunkRecord(): SnapshotChunkRecord {
    const group = this.u32('group');
    const streamRequestId = this.u32('streamRequestId');
    const seq = this.varint('seq');
    const final = this.flag('final');
    const data = this.bytesField(wireLimits.maxSnapshotChunkBytes, 'snapshot chunk');
    return { kind: 'snapshotChunk', group, streamRequestId, seq, final, data };
  }

  snapshotAbort(): SnapshotAbortRecord {
    const group = this.u32('group');
    const streamRequestId = this.u32('streamRequestId');
    const reason = this.string(wireLimits.maxAbortReasonBytes, 'abort reason');
    return { kind: 'snapshotAbort', group, streamRequestId, reason };
  }

  notMember(): NotMemberRecord {
    const group = this.u32('group');
    const configIndex = this.varint('configIndex');
    const replica = this.nodeId('replica');
    return { kind: 'notMember', group, configIndex, replica };
  }

  quiesce(): QuiesceRecord {
    const group = this.u32('group');
    const term = this.varint('term');
    const commit = this.varint('commit');
    return { kind: 'quiesce', group, term, commit };
  }

  memberQuery(): MemberQueryRecord {
    const group = this.u32('group');
    const replica = this.nodeId('replica');
    return { kind: 'memberQuery', group, replica };
  }

  record(): WireRecord {
    const kind = this.u8('record kind');
    switch (kind) {
      case Kind.Raft:
        return this.raft();
      case Kind.Request:
        return this.request();
      case Kind.Response:
        return this.response();
      case Kind.SnapshotPull:
        return this.snapshotPull();
      case Kind.SnapshotChunk:
        return this.snapshotChunkRecord();
      case Kind.SnapshotAbort:
        return this.snapshotAbort();
      case Kind.NotMember:
        return this.notMember();
      case Kind.Quiesce:
        return this.quiesce();
      case Kind.MemberQuery:
        return this.memberQuery();
      case Kind.Relayed:
        return this.relayed();
      default:
        return malformed(`unknown record kind ${kind}`);
    }
  }
}

/**
 * Decodes a whole frame, or refuses it whole (never throws). The records' byte fields are
 * views into `frame` (see the top of this file). A frame holds at least one record.
 */
export function decodeFrame(frame: Uint8Array): DecodeFrameResult {
  if (!(frame instanceof Uint8Array) || frame.length === 0) {
    return { ok: false, reason: 'empty frame' };
  }
  if (frame[0] !== NODE_WIRE_VERSION) {
    return { ok: false, reason: `wire version ${frame[0]}; this build reads ${NODE_WIRE_VERSION}` };
  }
  if (frame.length === 1) return { ok: false, reason: 'frame without records' };
  const reader = new FrameReader(frame);
  const records: WireRecord[] = [];
  try {
    while (!reader.done) records.push(reader.record());
  } catch (error) {
    if (error instanceof MalformedFrame) return { ok: false, reason: error.message };
    throw error;
  }
  return { ok: true, records };
}
