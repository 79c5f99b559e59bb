import { mulberry32 } from '@meshkv/raft';
import { limits } from '@meshkv/storage';
import { expect } from 'chai';
import {
  COMMAND_HEADER_BYTES,
  type Command,
  decodeCommand,
  decodeSessionRecord,
  encodeCommand,
  encodeSessionRecord,
  maxResultsPerSessionRecord,
  type SessionRecord,
} from '../src/command.ts';

const put: Command = {
  kind: 'put',
  clientId: 'node-a#3',
  seq: 42,
  lowestUnanswered: 40,
  proposedAtMs: 1_700_000_000_123,
  key: '\uFEFFclé 😀',
  value: new Uint8Array([1, 2, 3]),
};

function invalidReason(data: Uint8Array): string {
  const decoded = decodeCommand(data);
  expect(decoded.kind, 'decodes as invalid').to.equal('invalid');
  return (decoded as { reason: string }).reason;
}

describe('node command: entry data encoding', () => {
  it('round-trips a put and a delete, multi-byte and BOM-led keys included', () => {
    const decodedPut = decodeCommand(encodeCommand(put));
    expect(decodedPut).to.deep.equal(put);
    const del: Command = {
      kind: 'delete',
      clientId: 'é',
      seq: Number.MAX_SAFE_INTEGER,
      lowestUnanswered: 0,
      proposedAtMs: 0,
      key: 'k',
      value: null,
    };
    expect(decodeCommand(encodeCommand(del))).to.deep.equal(del);
    const empty = { ...put, value: new Uint8Array(0) };
    expect(decodeCommand(encodeCommand(empty))).to.deep.equal(empty);
  });

  it('writes the documented layout (big-endian header), byte for byte', () => {
    // The layout of the header comment, built with a DataView as the reference.
    for (const command of [put, { ...put, key: 'plain-ascii-key', clientId: 'node-b' }]) {
      const clientId = new TextEncoder().encode(command.clientId);
      const key = new TextEncoder().encode(command.key);
      const expected = new Uint8Array(COMMAND_HEADER_BYTES + clientId.length + key.length + 3);
      const view = new DataView(expected.buffer);
      view.setUint8(0, 1);
      view.setUint8(1, 1);
      view.setUint16(2, clientId.length);
      view.setUint16(4, key.length);
      view.setFloat64(6, command.seq);
      view.setFloat64(14, command.lowestUnanswered);
      view.setFloat64(22, command.proposedAtMs);
      expected.set(clientId, COMMAND_HEADER_BYTES);
      expected.set(key, COMMAND_HEADER_BYTES + clientId.length);
      expected.set(command.value!, COMMAND_HEADER_BYTES + clientId.length + key.length);
      expect([...encodeCommand(command)]).to.deep.equal([...expected]);
      expect(decodeCommand(expected)).to.deep.equal(command);
    }
  });

  it('decodes the client id of each command, clients interleaved (more than it keeps decoded)', () => {
    const clients = Array.from({ length: 20 }, (_, i) => `client-${i}`.slice(0, 7 + (i % 3)));
    for (let round = 0; round < 3; round++) {
      for (const [i, clientId] of clients.entries()) {
        const command = { ...put, clientId, seq: 100 + round * 100 + i };
        expect(decodeCommand(encodeCommand(command))).to.deep.equal(command);
      }
    }
  });

  it('decodes a value as a view of the entry data (no copy)', () => {
    const data = encodeCommand(put);
    const decoded = decodeCommand(data) as Command;
    expect(decoded.value!.buffer).to.equal(data.buffer);
  });

  it('refuses to encode what no replica could decode', () => {
    const bad: Partial<Command>[] = [
      { clientId: '' },
      { clientId: 'x'.repeat(limits.maxClientIdBytes + 1) },
      { clientId: 'a\uD800' },
      { key: '' },
      { seq: -1 },
      { seq: 2 ** 53 },
      { lowestUnanswered: 43 },
      { proposedAtMs: 1.5 },
      { value: null },
      { kind: 'delete' },
    ];
    for (const change of bad) {
      expect(() => encodeCommand({ ...put, ...change }), JSON.stringify(change)).to.throw(
        /command:/,
      );
    }
    expect(encodeCommand({ ...put, clientId: 'x'.repeat(limits.maxClientIdBytes) })).to.be.an(
      'Uint8Array',
    );
  });

  it('returns an invalid command, never throws, for each kind of bad data', () => {
    const good = encodeCommand(put);
    const patched = (offset: number, bytes: number[]): Uint8Array => {
      const copy = good.slice();
      copy.set(bytes, offset);
      return copy;
    };
    const view = (data: Uint8Array) => new DataView(data.buffer);
    expect(invalidReason(new Uint8Array(0))).to.match(/too short/);
    expect(invalidReason(patched(0, [2]))).to.match(/version/);
    expect(invalidReason(patched(1, [3]))).to.match(/kind/);
    expect(invalidReason(patched(2, [0, 0]))).to.match(/client id/);
    expect(invalidReason(patched(4, [0xff, 0xff]))).to.match(/key/);
    for (const [offset, value] of [
      [6, Number.NaN],
      [6, -1],
      [6, 2 ** 53],
      [14, 43],
      [22, 0.5],
    ] as const) {
      const data = good.slice();
      view(data).setFloat64(offset, value);
      expect(invalidReason(data), `${offset}: ${value}`).to.match(/seq|lowestUnanswered|proposed/);
    }
    // A UTF-16 surrogate encoded as UTF-8 (CESU) is not UTF-8: never decoded as U+FFFD.
    const surrogate = encodeCommand({ ...put, clientId: 'abc' });
    surrogate.set([0xed, 0xa0, 0x80], COMMAND_HEADER_BYTES);
    expect(invalidReason(surrogate)).to.match(/client id is not UTF-8/);
    const del = encodeCommand({ ...put, kind: 'delete', value: null });
    const trailing = new Uint8Array(del.length + 1);
    trailing.set(del);
    expect(invalidReason(trailing)).to.match(/trailing/);
    expect(invalidReason(good.subarray(0, COMMAND_HEADER_BYTES + 3))).to.match(/overrun/);
  });

  it('never throws on any truncation or random corruption (seeded)', () => {
    const seed = 0x5eed_c0de;
    try {
      const rng = mulberry32(seed);
      const good = encodeCommand(put);
      for (let length = 0; length <= good.length; length++) decodeCommand(good.subarray(0, length));
      for (let round = 0; round < 5000; round++) {
        const data = good.slice();
        const flips = 1 + rng.nextInt(4);
        for (let i = 0; i < flips; i++) data[rng.nextInt(data.length)] = rng.nextInt(256);
        const decoded = decodeCommand(data);
        if (decoded.kind !== 'invalid') {
          // Whatever decodes must encode back to the same bytes: nothing lossy passes.
          expect([...encodeCommand(decoded)]).to.deep.equal([...data]);
        }
      }
    } catch (error) {
      throw new Error(`seed ${seed}: ${(error as Error).message}`);
    }
  });
});

describe('node command: session records', () => {
  const record: SessionRecord = {
    lastTouchedMs: 600_000,
    lastTouchedIndex: 77,
    lowestUnanswered: 5,
    results: new Map([
      [7, true],
      [5, false],
    ]),
  };

  it('writes the documented layout (big-endian header, 9 bytes per result)', () => {
    const expected = new Uint8Array(27 + 2 * 9);
    const view = new DataView(expected.buffer);
    view.setUint8(0, 1);
    view.setUint16(1, 2);
    view.setFloat64(3, record.lastTouchedMs);
    view.setFloat64(11, record.lastTouchedIndex);
    view.setFloat64(19, record.lowestUnanswered);
    view.setFloat64(27, 7);
    view.setUint8(35, 1);
    view.setFloat64(36, 5);
    view.setUint8(44, 0);
    expect([...encodeSessionRecord(record)]).to.deep.equal([...expected]);
  });

  it('round-trips, results in their order', () => {
    const decoded = decodeSessionRecord(encodeSessionRecord(record)) as SessionRecord;
    expect(decoded).to.deep.equal(record);
    expect([...decoded.results.keys()]).to.deep.equal([7, 5]);
  });

  it('holds the most results that fit limits.maxSessionRecordBytes, and refuses one more', () => {
    const results = new Map<number, boolean>();
    for (let seq = 0; seq < maxResultsPerSessionRecord; seq++) results.set(seq, seq % 2 === 0);
    const full = encodeSessionRecord({ ...record, lowestUnanswered: 0, results });
    expect(full.length).to.be.at.most(limits.maxSessionRecordBytes);
    expect(full.length + 9).to.be.greaterThan(limits.maxSessionRecordBytes);
    expect((decodeSessionRecord(full) as SessionRecord).results.size).to.equal(
      maxResultsPerSessionRecord,
    );
    results.set(maxResultsPerSessionRecord, true);
    expect(() => encodeSessionRecord({ ...record, lowestUnanswered: 0, results })).to.throw(
      /do not fit/,
    );
  });

  it('refuses a result below lowestUnanswered, a seq twice, and bad lengths or bytes', () => {
    expect(() => encodeSessionRecord({ ...record, results: new Map([[4, true]]) })).to.throw(
      /result seq 4/,
    );
    const good = encodeSessionRecord(record);
    const reasons = [
      good.subarray(0, 26),
      good.subarray(0, good.length - 1),
      (() => {
        const copy = good.slice();
        copy[0] = 9;
        return copy;
      })(),
      (() => {
        const copy = good.slice();
        copy[good.length - 1] = 2;
        return copy;
      })(),
      (() => {
        const copy = good.slice();
        new DataView(copy.buffer).setFloat64(27 + 9, 7);
        return copy;
      })(),
    ].map((data) => (decodeSessionRecord(data) as { invalid?: string }).invalid);
    expect(reasons).to.have.length(5);
    for (const reason of reasons) expect(reason).to.be.a('string');
    expect(reasons[4]).to.match(/twice/);
  });
});
