import {
  type ConfState,
  type Entry,
  EntryType,
  isLocalMessage,
  type Message,
  MessageType,
  mulberry32,
  newMessage,
  type Prng,
} from '@meshkv/raft';
import { expect } from 'chai';
import { ErrorCode } from '../src/errors.ts';
import {
  type DirectRecord,
  decodeFrame,
  FrameBuilder,
  maxRecordBytes,
  NODE_WIRE_VERSION,
  type RequestOp,
  type WireRecord,
  wireErrorCodes,
  wireLimits,
} from '../src/wire.ts';

const MiB = 1024 * 1024;
const DEFAULT_FRAME_BYTES = 16 * MiB;

/** Seeds to run; WIRE_SEED (Node only) replays one. */
const envSeed = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
  ?.env?.WIRE_SEED;
const seeds = envSeed === undefined ? [1, 2, 3, 4, 5, 6, 7, 8] : [Number(envSeed)];

class Gen {
  /** Whether entries, values and chunks may be tens of KiB (else ≤ 100 bytes). */
  allowLarge = true;
  constructor(readonly rng: Prng) {}
  int(n: number): number {
    return this.rng.nextInt(n);
  }
  chance(percent: number): boolean {
    return this.int(100) < percent;
  }
  /** A safe integer, small or large, zero a third of the time. */
  number(): number {
    const pick = this.int(6);
    if (pick < 2) return 0;
    if (pick < 4) return this.int(300);
    if (pick === 4) return this.int(2 ** 31) * 2 ** 22 + this.int(2 ** 22); // up to 2^53 − 1
    return this.int(2 ** 32);
  }
  /** `largeBytes` one time in ten when allowed, else `smallBytes`. */
  large(largeBytes: number, smallBytes: number): number {
    return this.allowLarge && this.chance(10) ? largeBytes : smallBytes;
  }
  u32(): number {
    return this.chance(50) ? this.int(200) : this.int(2 ** 32);
  }
  bytes(maxBytes: number): Uint8Array {
    const out = new Uint8Array(this.int(maxBytes + 1));
    for (let i = 0; i < out.length; i++) out[i] = this.int(256);
    return out;
  }
  string(maxUnits: number, nonEmpty = false): string {
    const alphabet = ['a', 'z', '0', '-', 'é', 'ü', '€', '𝄞', '雪'];
    let s = '';
    const n = this.int(maxUnits + 1);
    for (let i = 0; i < n; i++) s += alphabet[this.int(alphabet.length)];
    return nonEmpty && s === '' ? 'x' : s;
  }
  nodeId(): string {
    const ids = ['node-a', 'node-b', 'ü-node', 'n'.repeat(64), 'peer-7f3a'];
    return this.chance(80) ? ids[this.int(ids.length)]! : this.string(16, true);
  }
  ids(): string[] {
    return Array.from({ length: this.int(6) }, () => this.nodeId());
  }
  confState(): ConfState {
    return {
      voters: this.ids(),
      learners: this.ids(),
      votersOutgoing: this.ids(),
      learnersNext: this.ids(),
      autoLeave: this.chance(50),
    };
  }
  entries(): Entry[] {
    const count = this.chance(30) ? 0 : this.int(20);
    const type = () => (this.chance(80) ? EntryType.Normal : EntryType.ConfChange);
    return Array.from({ length: count }, () => ({
      term: this.number(),
      index: this.number(),
      type: type(),
      data: this.bytes(this.large(70_000, 64)),
    }));
  }
  message(): Message {
    let type: MessageType;
    do type = this.int(MessageType.Commit + 1) as MessageType;
    while (isLocalMessage(type));
    const totalBytes = this.int(this.large(10_000, 100));
    const offsetBytes = this.int(totalBytes + 1);
    const snapshot = this.chance(30)
      ? {
          metadata: { index: 1 + this.int(1000), term: this.number(), confState: this.confState() },
          offsetBytes,
          totalBytes,
          data: this.bytes(totalBytes - offsetBytes),
        }
      : null;
    return {
      groupId: this.u32(),
      type,
      from: this.nodeId(),
      to: this.nodeId(),
      term: this.number(),
      logTerm: this.number(),
      index: this.number(),
      entries: this.entries(),
      commit: this.number(),
      reject: this.chance(30),
      rejectHint: this.number(),
      context: this.chance(50) ? new Uint8Array(0) : this.bytes(40),
      snapshot,
    };
  }
  request(): DirectRecord {
    const ops: RequestOp[] = ['put', 'delete', 'get', 'localGet', 'appliedQuery', 'putAckAll'];
    const op = ops[this.int(ops.length)]!;
    const seq = this.number();
    return {
      kind: 'request',
      requestId: this.u32(),
      op,
      partition: this.u32(),
      key: op === 'appliedQuery' ? '' : this.string(40, true),
      value: op === 'put' || op === 'putAckAll' ? this.bytes(this.large(100_000, 50)) : null,
      clientId: this.string(30),
      seq,
      lowestUnanswered: seq === 0 ? 0 : this.int(Math.min(seq, 2 ** 32 - 1) + 1),
      deadlineRemainingMs: this.u32(),
      appliedIndex: op === 'appliedQuery' ? this.number() : 0,
      relay: op !== 'localGet' && op !== 'appliedQuery' && this.chance(20),
    };
  }
  response(): DirectRecord {
    const requestId = this.u32();
    switch (this.int(4)) {
      case 0:
        return { kind: 'response', requestId, outcome: 'boolean', value: this.chance(50) };
      case 1: {
        const value = this.chance(30) ? null : this.bytes(100);
        return { kind: 'response', requestId, outcome: 'value', value };
      }
      case 2:
        return { kind: 'response', requestId, outcome: 'applied', appliedIndex: this.number() };
      default:
        return {
          kind: 'response',
          requestId,
          outcome: 'error',
          code: wireErrorCodes[this.int(wireErrorCodes.length)]!,
          message: this.string(200),
          leaderHint: this.chance(50) ? null : this.nodeId(),
        };
    }
  }
  record(): WireRecord {
    if (this.chance(8)) {
      return {
        kind: 'relayed',
        author: this.nodeId(),
        target: this.nodeId(),
        record: this.direct(),
      };
    }
    return this.direct();
  }

  direct(): DirectRecord {
    switch (this.int(11)) {
      case 0:
        return this.request();
      case 1:
        return this.response();
      case 2:
        return {
          kind: 'snapshotPull',
          group: this.u32(),
          snapshotIndex: 1 + this.int(10_000),
          streamRequestId: this.u32(),
          seq: this.number(),
        };
      case 3:
        return {
          kind: 'snapshotChunk',
          group: this.u32(),
          streamRequestId: this.u32(),
          seq: this.number(),
          final: this.chance(50),
          data: this.bytes(this.large(200_000, 100)),
        };
      case 4:
        return {
          kind: 'snapshotAbort',
          group: this.u32(),
          streamRequestId: this.u32(),
          reason: this.string(60),
        };
      case 5:
        return {
          kind: 'notMember',
          group: this.u32(),
          configIndex: this.number(),
          replica: this.nodeId(),
        };
      case 6:
        return { kind: 'quiesce', group: this.u32(), term: this.number(), commit: this.number() };
      case 7:
        return { kind: 'memberQuery', group: this.u32(), replica: this.nodeId() };
      default:
        return { kind: 'raft', message: this.message() };
    }
  }
}

function encode(records: readonly WireRecord[], maxFrameBytes = DEFAULT_FRAME_BYTES): Uint8Array[] {
  const builder = new FrameBuilder(maxFrameBytes);
  for (const record of records) builder.add(record);
  expect(builder.recordCount).to.equal(records.length);
  return builder.takeFrames();
}

function decodeAll(frames: readonly Uint8Array[]): WireRecord[] {
  const records: WireRecord[] = [];
  for (const frame of frames) {
    const result = decodeFrame(frame);
    if (!result.ok) throw new Error(`refused: ${result.reason}`);
    records.push(...result.records);
  }
  return records;
}

/** Runs `body` for every seed, naming the seed of a failure. */
function forEachSeed(body: (gen: Gen, seed: number) => void): void {
  for (const seed of seeds) {
    try {
      body(new Gen(mulberry32(seed)), seed);
    } catch (error) {
      throw new Error(`seed ${seed} (replay with WIRE_SEED=${seed}): ${(error as Error).message}`);
    }
  }
}

/** Hand-made frames: numbers are varints, arrays raw bytes, strings UTF-8 with a varint length. */
function varint(value: number): number[] {
  const out: number[] = [];
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
  return out;
}
function str(text: string): number[] {
  const bytes = new TextEncoder().encode(text);
  return [...varint(bytes.length), ...bytes];
}
type Part = number | number[] | Uint8Array;
function frameOf(...parts: Part[]): Uint8Array {
  const pieces = parts.map((part) =>
    typeof part === 'number' ? new Uint8Array(varint(part)) : new Uint8Array(part),
  );
  const out = new Uint8Array(1 + pieces.reduce((sum, piece) => sum + piece.length, 0));
  out[0] = NODE_WIRE_VERSION;
  let at = 1;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

function expectRefused(frame: Uint8Array, reason: RegExp): void {
  const result = decodeFrame(frame);
  expect(result.ok, 'refused').to.equal(false);
  if (!result.ok) expect(result.reason).to.match(reason);
}

// Record kinds, message fields and outcomes as wire.ts numbers them (the wire's contract).
const RAFT = 1;
const REQUEST = 2;
const RESPONSE = 3;
const PULL = 4;
const CHUNK = 5;
const ABORT = 6;
const HB = MessageType.Heartbeat;
const TERM = 1;
const CONTEXT = 4;
const ENTRIES = 64;
const SNAPSHOT = 256;
/** A heartbeat: group 0, node-a → node-b, term 1. */
const heartbeat = [RAFT, 0, HB, TERM, ...str('node-a'), ...str('node-b'), 1];
/** A put request's fields up to the key. */
const requestHead = (op: number) => [REQUEST, 7, op, 3, ...varint(5000)];

describe('node wire format', () => {
  it('round-trips random records of every kind, many per frame, field by field', () => {
    forEachSeed((gen) => {
      const records = Array.from({ length: 200 }, () => gen.record());
      const frames = encode(records);
      expect(frames).to.have.length(1);
      const decoded = decodeAll(frames);
      expect(decoded).to.have.length(records.length);
      for (let i = 0; i < records.length; i++) {
        expect(decoded[i], `record ${i}`).to.deep.equal(records[i]);
      }
    });
  });

  it('a RELAYED record is kind 10, author, target, then the record it carries; never another RELAYED', () => {
    const message = newMessage({ groupId: 3, type: MessageType.App, from: 'a', to: 'b', term: 2 });
    const [raft] = encode([{ kind: 'raft', message }]);
    const relayed: WireRecord = {
      kind: 'relayed',
      author: 'a',
      target: 'b',
      record: { kind: 'raft', message },
    };
    const [frame] = encode([relayed]);
    expect([...frame!.subarray(1, 6)]).to.deep.equal([10, 1, 97, 1, 98]);
    expect([...frame!.subarray(6)]).to.deep.equal([...raft!.subarray(1)]);
    expect(decodeAll([frame!])).to.deep.equal([relayed]);
    const nested = { kind: 'relayed', author: 'c', target: 'b', record: relayed };
    expect(() => encode([nested as unknown as WireRecord])).to.throw(RangeError, /inside another/);
    expectRefused(frameOf([10, 1, 99, 1, 98], [...frame!.subarray(1)]), /inside another/);
  });

  it('round-trips every message type with all fields zero (a bitmap of 0)', () => {
    for (let type = 0; type <= MessageType.Commit; type++) {
      if (isLocalMessage(type as MessageType)) continue;
      const message = newMessage({ groupId: 0, type: type as MessageType, from: 'a', to: 'b' });
      expect(decodeAll(encode([{ kind: 'raft', message }]))).to.deep.equal([
        { kind: 'raft', message },
      ]);
    }
  });

  it('never throws on a truncated or damaged frame, and what it accepts is in range', () => {
    forEachSeed((gen) => {
      gen.allowLarge = false;
      const records = Array.from({ length: 12 }, () => gen.record());
      const [frame] = encode(records);
      const checkValid = (bytes: Uint8Array) => {
        const result = decodeFrame(bytes);
        if (!result.ok) return;
        // The builder validates every field: a record it accepts is within the limits.
        const again = new FrameBuilder(DEFAULT_FRAME_BYTES);
        for (const record of result.records) again.add(record);
      };
      for (let length = 0; length < frame!.length; length++) {
        checkValid(frame!.subarray(0, length));
      }
      for (let flip = 0; flip < 2000; flip++) {
        const damaged = frame!.slice();
        const flips = 1 + gen.int(3);
        for (let j = 0; j < flips; j++) damaged[gen.int(damaged.length)] = gen.int(256);
        checkValid(damaged);
      }
    });
  });

  it('cuts frames at maxFrameBytes between records, in order', () => {
    forEachSeed((gen, seed) => {
      const records = Array.from({ length: 300 }, () => gen.record());
      // Every record fits a frame alone (a raft message with many entries can be large).
      const largestRecordFrameBytes = Math.max(...records.map((r) => encode([r])[0]!.length));
      const maxFrameBytes = Math.max(250_000, largestRecordFrameBytes) + gen.int(100_000);
      const frames = encode(records, maxFrameBytes);
      expect(frames.length, `seed ${seed}`).to.be.greaterThan(1);
      for (const frame of frames) expect(frame.length).to.be.at.most(maxFrameBytes);
      expect(decodeAll(frames)).to.deep.equal(records);
    });
  });

  it('restarts the from/to references in every frame it cuts', () => {
    const message = newMessage({ groupId: 1, type: MessageType.Heartbeat, from: 'a', to: 'b' });
    const records: WireRecord[] = Array.from({ length: 50 }, () => ({ kind: 'raft', message }));
    const frames = encode(records, 40);
    expect(frames.length).to.be.greaterThan(5);
    for (const frame of frames) expect(decodeFrame(frame).ok).to.equal(true);
    expect(decodeAll(frames)).to.deep.equal(records);
  });

  it('refuses a record that cannot fit a frame alone, and stays usable', () => {
    const builder = new FrameBuilder(100);
    const small: WireRecord = { kind: 'notMember', group: 3, configIndex: 9, replica: 'n1@2' };
    builder.add(small);
    const big: WireRecord = {
      kind: 'snapshotChunk',
      group: 1,
      streamRequestId: 2,
      seq: 0,
      final: true,
      data: new Uint8Array(200),
    };
    expect(() => builder.add(big)).to.throw(RangeError, /does not fit a frame of 100 bytes/);
    builder.add(small);
    const message = newMessage({ groupId: 1, type: MessageType.Heartbeat, from: 'a', to: 'b' });
    builder.addRaft(message);
    expect(() => builder.add(big)).to.throw(RangeError, /does not fit/);
    builder.addRaft(message);
    expect(builder.recordCount).to.equal(4);
    expect(decodeAll(builder.takeFrames())).to.deep.equal([
      small,
      small,
      { kind: 'raft', message },
      { kind: 'raft', message },
    ]);
    expect(builder.takeFrames()).to.deep.equal([]);
  });

  it('gives back a large buffer after the frames are taken', () => {
    const builder = new FrameBuilder(DEFAULT_FRAME_BYTES);
    const chunk: WireRecord = {
      kind: 'snapshotChunk',
      group: 1,
      streamRequestId: 2,
      seq: 0,
      final: false,
      data: new Uint8Array(2 * MiB),
    };
    builder.add(chunk);
    expect(builder.capacityBytes).to.be.greaterThan(2 * MiB);
    expect(decodeAll(builder.takeFrames())).to.deep.equal([chunk]);
    expect(builder.capacityBytes).to.be.at.most(MiB);
  });

  it('leaves the builder as it was when a field is out of range', () => {
    const builder = new FrameBuilder(DEFAULT_FRAME_BYTES);
    const ok = newMessage({ groupId: 1, type: MessageType.App, from: 'a', to: 'b', term: 2 });
    builder.addRaft(ok);
    const bad = [
      newMessage({ groupId: 2 ** 32, type: MessageType.App, from: 'a', to: 'b' }),
      newMessage({ groupId: 1, type: MessageType.Hup, from: 'a', to: 'b' }),
      newMessage({ groupId: 1, type: MessageType.App, from: 'x'.repeat(65), to: 'b' }),
      newMessage({ groupId: 1, type: MessageType.App, from: '', to: 'b' }),
      newMessage({ groupId: 1, type: MessageType.App, from: 'a\ud800', to: 'b' }),
      newMessage({ groupId: 1, type: MessageType.App, from: 'a', to: 'b', index: -1 }),
      newMessage({ groupId: 1, type: MessageType.App, from: 'a', to: 'b', commit: 1.5 }),
      newMessage({ groupId: 1, type: MessageType.App, from: 'c', to: 'd', term: 2 ** 53 }),
    ];
    for (const m of bad) expect(() => builder.addRaft(m)).to.throw(RangeError);
    // The last refused message wrote 'c' and 'd' before its term: they were rolled back,
    // so a record from 'c' to 'd' spells them out instead of naming the previous record's.
    const fromC = newMessage({ groupId: 1, type: MessageType.App, from: 'c', to: 'd', term: 2 });
    builder.addRaft(fromC);
    builder.addRaft(ok);
    expect(decodeAll(builder.takeFrames())).to.deep.equal([
      { kind: 'raft', message: ok },
      { kind: 'raft', message: fromC },
      { kind: 'raft', message: ok },
    ]);
  });

  it('encodes the heartbeats of 64 groups to one peer in 617 bytes (README)', () => {
    const from = 'node-0123456789abcdef'.slice(0, 20);
    const to = 'node-fedcba987654321'.slice(0, 20);
    expect(from.length).to.equal(20);
    expect(to.length).to.equal(20);
    const builder = new FrameBuilder(DEFAULT_FRAME_BYTES);
    for (let group = 0; group < 64; group++) {
      builder.addRaft(
        newMessage({
          groupId: group,
          type: MessageType.Heartbeat,
          from,
          to,
          term: 5,
          commit: 1000,
        }),
      );
    }
    const frames = builder.takeFrames();
    expect(frames).to.have.length(1);
    // 1 version + 49 for the first (kind, group, type, bitmap, 2 × (1 + 20) ids, term,
    // 2-byte commit) + 63 × 9 (the ids as "same as before").
    expect(frames[0]!.length).to.equal(1 + 49 + 63 * 9);
  });

  it('bounds every record by maxRecordBytes, which fits the default 16 MiB frame', () => {
    expect(maxRecordBytes + 1).to.be.at.most(DEFAULT_FRAME_BYTES);
    // The largest RAFT record the limits allow: entries at their limits, and a snapshot.
    const id = 'n'.repeat(wireLimits.maxNodeIdBytes);
    const ids = Array.from({ length: wireLimits.maxConfMembers }, () => id);
    const big = 2 ** 53 - 1;
    const dataBytes = Math.floor(wireLimits.maxEntriesDataBytes / wireLimits.maxEntriesPerMessage);
    const shared = new Uint8Array(dataBytes);
    const entries: Entry[] = Array.from({ length: wireLimits.maxEntriesPerMessage }, () => ({
      term: big,
      index: big,
      type: EntryType.Normal,
      data: shared,
    }));
    const chunkBytes = wireLimits.maxRaftSnapshotChunkBytes;
    const message: Message = {
      groupId: 2 ** 32 - 1,
      type: MessageType.Snap,
      from: id,
      to: `${id.slice(1)}m`,
      term: big,
      logTerm: big,
      index: big,
      entries,
      commit: big,
      reject: true,
      rejectHint: big,
      context: new Uint8Array(wireLimits.maxContextBytes),
      snapshot: {
        metadata: {
          index: big,
          term: big,
          confState: {
            voters: ids,
            learners: ids,
            votersOutgoing: ids,
            learnersNext: ids,
            autoLeave: true,
          },
        },
        offsetBytes: 0,
        totalBytes: chunkBytes,
        data: new Uint8Array(chunkBytes),
      },
    };
    const [frame] = encode([{ kind: 'raft', message }]);
    expect(frame!.length - 1).to.be.at.most(maxRecordBytes);
    expect(frame!.length - 1).to.be.greaterThan(maxRecordBytes - 256 * 1024);
    const chunk: WireRecord = {
      kind: 'snapshotChunk',
      group: 2 ** 32 - 1,
      streamRequestId: 2 ** 32 - 1,
      seq: big,
      final: true,
      data: new Uint8Array(wireLimits.maxSnapshotChunkBytes),
    };
    expect(encode([chunk])[0]!.length - 1).to.be.at.most(maxRecordBytes);
  });

  describe('refuses each field out of range', () => {
    it('frame: empty, wrong version, no records, unknown kind, trailing bytes', () => {
      expectRefused(new Uint8Array(0), /empty/);
      expectRefused(new Uint8Array([2, ...heartbeat]), /version 2/);
      expectRefused(frameOf(), /without records/);
      expectRefused(frameOf(99), /unknown record kind 99/);
      expectRefused(frameOf(heartbeat, [0xff]), /unknown record kind 255/);
      expect(decodeFrame(frameOf(heartbeat)).ok).to.equal(true);
    });

    it('varints: truncated, overlong, beyond 2^53, longer than 8 bytes', () => {
      expectRefused(frameOf([RAFT, 0x80]), /truncated at groupId/);
      expectRefused(frameOf([RAFT, 0x81, 0x00]), /overlong/);
      const twoTo53 = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
      expectRefused(frameOf([RAFT, 0, HB, TERM], str('a'), str('b'), twoTo53), /≥ 2\^53/);
      const nineBytes = [0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
      expectRefused(frameOf([RAFT, 0, HB, TERM], str('a'), str('b'), nineBytes), /more than 8/);
      // 2^53 − 1 is the largest accepted.
      const result = decodeFrame(frameOf([RAFT, 0, HB, TERM], str('a'), str('b'), 2 ** 53 - 1));
      expect(result.ok && result.records[0]).to.deep.include({ kind: 'raft' });
    });

    it('raft: group, type, local type, unknown fields', () => {
      expectRefused(frameOf(RAFT, 2 ** 32, [HB, 0], str('a'), str('b')), /groupId .* not a u32/);
      expectRefused(frameOf([RAFT, 0, 21, 0], str('a'), str('b')), /unknown message type 21/);
      expectRefused(frameOf([RAFT, 0, MessageType.Hup, 0], str('a'), str('b')), /local/);
      expectRefused(frameOf([RAFT, 0, HB], 512, str('a'), str('b')), /unknown fields 0x200/);
    });

    it('raft: node ids empty without an earlier record, too long, not UTF-8', () => {
      expectRefused(frameOf([RAFT, 0, HB, 0, 0], str('b')), /from refers to no earlier/);
      expectRefused(frameOf([RAFT, 0, HB, 0], str('a'), [0]), /to refers to no earlier/);
      expectRefused(frameOf([RAFT, 0, HB, 0], str('x'.repeat(65)), str('b')), /from of 65 bytes/);
      expectRefused(frameOf([RAFT, 0, HB, 0, 2, 0xc3, 0x28], str('b')), /not well-formed UTF-8/);
      // Later records may refer to the earlier one's ids.
      const ok = decodeFrame(frameOf([RAFT, 0, HB, 0], str('a'), str('b'), [RAFT, 1, HB, 0, 0, 0]));
      expect(ok.ok && ok.records[1]).to.deep.include({ kind: 'raft' });
      if (ok.ok && ok.records[1]!.kind === 'raft') {
        expect(ok.records[1]!.message.from).to.equal('a');
        expect(ok.records[1]!.message.to).to.equal('b');
      }
    });

    it('raft: context, entries (count, type, data, total), snapshot fields', () => {
      const head = (fields: number) =>
        frameOf([RAFT, 0, MessageType.App], fields, str('a'), str('b'));
      const withFields = (fields: number, ...rest: Part[]) =>
        frameOf(head(fields).subarray(1), ...rest);
      expectRefused(withFields(CONTEXT, 4097), /context of 4097 bytes/);
      expectRefused(withFields(ENTRIES, 65_537), /65537 entries/);
      expectRefused(withFields(ENTRIES, [1, 1, 1, 2, 0]), /entry type 2/);
      // A count is checked against the bytes left before anything is allocated for it.
      expectRefused(withFields(ENTRIES, 65_536, [1, 1, 0, 0]), /65536 entries cannot fit the 4/);
      expectRefused(withFields(SNAPSHOT, [1, 1], 1024, [1, 97]), /1024 voters cannot fit the 2/);
      expectRefused(withFields(ENTRIES, [1, 1, 1, 0], 2 * MiB + 1), /entry data of 2097153/);
      // Five entries of 2 MiB: 10 MiB of entries in one message (max 8 MiB).
      const entry = frameOf([1, 1, 0], 2 * MiB, new Uint8Array(2 * MiB)).subarray(1);
      expectRefused(
        withFields(ENTRIES, 5, entry, entry, entry, entry, entry),
        /entries of 10485760/,
      );
      const members = [0, 0, 0, 0];
      expectRefused(withFields(SNAPSHOT, [0, 1], members, [0, 0, 0, 0]), /snapshot index 0/);
      expectRefused(withFields(SNAPSHOT, [1, 1], 1025), /1025 voters/);
      expectRefused(withFields(SNAPSHOT, [1, 1, 1, 0], members), /voters is empty/);
      expectRefused(withFields(SNAPSHOT, [1, 1], members, [2, 0, 0, 0]), /autoLeave is 2/);
      expectRefused(withFields(SNAPSHOT, [1, 1], members, [0, 0], 16 * MiB + 1), /snapshot of/);
      expectRefused(
        withFields(SNAPSHOT, [1, 1], members, [0, 5, 7, 3, 1, 2, 3]),
        /beyond its total/,
      );
      expectRefused(
        withFields(SNAPSHOT, [1, 1], members, [0, 0], 8 * MiB, 4 * MiB + 1),
        /chunk data/,
      );
      const ok = withFields(SNAPSHOT, [1, 1], members, [0, 4, 7, 3, 1, 2, 3]);
      expect(decodeFrame(ok).ok).to.equal(true);
    });

    it('request: op, ids, key, clientId, seq order, value', () => {
      const put = (key: string, clientId: string, seq: number, lowest: number, value: number) =>
        frameOf(requestHead(1), str(key), str(clientId), seq, lowest, value);
      expect(decodeFrame(put('k', 'c', 5, 5, 0)).ok).to.equal(true);
      expectRefused(frameOf([REQUEST, 7, 7]), /unknown request op 7/);
      expectRefused(frameOf(REQUEST, 2 ** 32, [1]), /requestId .* not a u32/);
      expectRefused(frameOf([REQUEST, 7, 1], 2 ** 32), /partition .* not a u32/);
      expectRefused(frameOf([REQUEST, 7, 1, 0], 2 ** 32), /deadlineRemainingMs .* not a u32/);
      expectRefused(put('', 'c', 5, 5, 0), /put with key ''/);
      expectRefused(put('k'.repeat(1025), 'c', 5, 5, 0), /key of 1025 bytes/);
      expectRefused(frameOf(requestHead(1), [1, 0xff]), /key is not well-formed UTF-8/);
      expectRefused(put('k', 'c'.repeat(257), 5, 5, 0), /clientId of 257 bytes/);
      expectRefused(put('k', 'c', 5, 6, 0), /lowestUnanswered 6 > seq 5/);
      expectRefused(put('k', 'c', 5, 5, MiB + 1), /value of 1048577 bytes/);
      const query = (key: string) => frameOf(requestHead(5), str(key), str(''), 0, 0, 9);
      expect(decodeFrame(query('')).ok).to.equal(true);
      expectRefused(query('k'), /appliedQuery with key 'k'/);
      // The op byte's top bit asks for a relay: for the ops that go to a leader only.
      const relayedGet = frameOf(requestHead(0x80 | 3), str('k'), str('c'), 0, 0);
      const decoded = decodeFrame(relayedGet);
      expect(decoded.ok && decoded.records[0]).to.include({ op: 'get', relay: true });
      const relayedQuery = frameOf(requestHead(0x80 | 5), str(''), str(''), 0, 0, 9);
      expectRefused(relayedQuery, /a relayed appliedQuery/);
      expectRefused(frameOf([REQUEST, 7, 0x80 | 4]), /a relayed localGet/);
    });

    it('response: carries every MeshKvError code and NOT_LEADER', () => {
      const codes: string[] = [...Object.values(ErrorCode), 'NOT_LEADER'];
      expect([...wireErrorCodes].sort()).to.deep.equal(codes.sort());
    });

    it('response: outcome, error code, message, leader hint', () => {
      const error = (code: number, message: string, hint: number[]) =>
        frameOf([RESPONSE, 7, 6, code], str(message), hint);
      expect(decodeFrame(error(9, 'no', [0])).ok).to.equal(true);
      expectRefused(frameOf([RESPONSE, 7, 7]), /unknown response outcome 7/);
      expectRefused(frameOf([RESPONSE, 7, 0]), /unknown response outcome 0/);
      expectRefused(error(0, 'no', [0]), /unknown error code 0/);
      const pastLast = wireErrorCodes.length + 1;
      expectRefused(error(pastLast, 'no', [0]), new RegExp(`unknown error code ${pastLast}`));
      expectRefused(error(1, 'm'.repeat(4097), [0]), /error message of 4097 bytes/);
      expectRefused(error(1, 'no', str('h'.repeat(65))), /leaderHint of 65 bytes/);
      expectRefused(error(1, 'no', []), /truncated at leaderHint/);
      expectRefused(frameOf([RESPONSE, 7, 4], MiB + 1), /value of 1048577 bytes/);
    });

    it('snapshot streams: index 0, final flag, chunk size, reason', () => {
      expectRefused(frameOf([PULL, 1, 0, 2, 0]), /snapshotIndex 0/);
      expect(decodeFrame(frameOf([PULL, 1, 1, 2, 0])).ok).to.equal(true);
      expectRefused(frameOf([CHUNK, 1, 2, 0, 2, 0]), /final is 2/);
      expectRefused(frameOf([CHUNK, 1, 2, 0, 1], 8 * MiB + 1), /snapshot chunk of 8388609 bytes/);
      expectRefused(frameOf([ABORT, 1, 2], str('r'.repeat(257))), /abort reason of 257 bytes/);
      expect(decodeFrame(frameOf([ABORT, 1, 2], str('gone'))).ok).to.equal(true);
    });
  });
});
