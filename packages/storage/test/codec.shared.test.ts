import { expect } from 'chai';
import {
  crc32,
  DecodeError,
  decodeChunk,
  decodeGroup,
  decodeNode,
  decodeSegment,
  decodeSnapshot,
  encodeChunk,
  encodeGroup,
  encodeNode,
  encodeSegment,
  encodeSnapshot,
  FORMAT_VERSION,
  seal,
  streamIdBytes,
  unseal,
} from '../src/codec.ts';
import { bytes, entryRange } from './contract.ts';

const confState = {
  voters: ['a', 'b'],
  learners: ['c'],
  votersOutgoing: ['a', 'd'],
  learnersNext: ['d'],
  autoLeave: true,
};
const applied = { index: 2 ** 53 - 1, term: 7, confState };

/** Every record kind: its bytes and a decoder. */
const records: Array<{ kind: string; encoded: Uint8Array; decode: (b: Uint8Array) => unknown }> = [
  {
    kind: 'node',
    encoded: encodeNode({ nextSpace: 9, garbage: [3, 4] }),
    decode: (b) => decodeNode(b, 'node'),
  },
  {
    kind: 'group',
    encoded: encodeGroup({
      group: 5,
      logSpace: 1,
      stateSpace: 2,
      hardState: { term: 3, vote: 'ü-node', commit: 2 },
      compacted: { index: 1, term: 1 },
      snapshotIndex: 1,
      appliedState: applied,
    }),
    decode: (b) => decodeGroup(b, 'group'),
  },
  {
    kind: 'segment',
    encoded: encodeSegment(entryRange(10, 13, 4)),
    decode: (b) => decodeSegment(b, 'segment'),
  },
  {
    kind: 'snapshot',
    encoded: encodeSnapshot({ metadata: { index: 4, term: 2, confState }, data: bytes('data') }),
    decode: (b) => decodeSnapshot(b, 'snapshot'),
  },
  {
    kind: 'chunk',
    encoded: encodeChunk({
      streamId: new Uint8Array(streamIdBytes).fill(77),
      seq: 0,
      final: true,
      appliedState: applied,
      records: [
        { part: 'session', name: 'client', value: bytes('s') },
        { part: 'kv', name: 'key', value: bytes('value') },
      ],
    }),
    decode: (b) => decodeChunk(b, 'chunk'),
  },
];

function decodeError(decode: () => unknown): DecodeError {
  try {
    decode();
  } catch (error) {
    expect(error).to.be.instanceOf(DecodeError);
    return error as DecodeError;
  }
  throw new Error('decoded without an error');
}

describe('storage codec', () => {
  for (const { kind, encoded, decode } of records) {
    it(`${kind}: round-trips, and every truncation or extension is corrupt`, () => {
      expect(() => decode(encoded)).to.not.throw();
      for (let length = 0; length < encoded.length; length++) {
        expect(decodeError(() => decode(encoded.subarray(0, length))).code).to.equal('corrupt');
      }
      const longer = new Uint8Array(encoded.length + 1);
      longer.set(encoded);
      expect(decodeError(() => decode(longer)).code).to.equal('corrupt');
    });

    it(`${kind}: another format version is unsupported_version, another tag corrupt`, () => {
      const newer = encoded.slice();
      newer[1] = FORMAT_VERSION + 1;
      expect(decodeError(() => decode(newer)).code).to.equal('unsupported_version');
      const otherTag = encoded.slice();
      otherTag[0] = 99;
      expect(decodeError(() => decode(otherTag)).code).to.equal('corrupt');
    });
  }

  it('decodes what it encoded', () => {
    const group = decodeGroup(records[1]!.encoded, 'group');
    expect(group.hardState).to.deep.equal({ term: 3, vote: 'ü-node', commit: 2 });
    expect(group.appliedState).to.deep.equal(applied);
    const entries = decodeSegment(records[2]!.encoded, 'segment');
    expect(entries.map((e) => [e.index, e.term, new TextDecoder().decode(e.data)])).to.deep.equal(
      entryRange(10, 13, 4).map((e) => [e.index, e.term, new TextDecoder().decode(e.data)]),
    );
    const chunk = decodeChunk(records[4]!.encoded, 'chunk');
    expect(chunk.appliedState).to.deep.equal(applied);
    expect(chunk.records.map((r) => [r.part, r.name])).to.deep.equal([
      ['session', 'client'],
      ['kv', 'key'],
    ]);
  });

  it('refuses flag bytes other than 0 and 1 as corrupt', () => {
    // The group record ends with its applied ConfState's autoLeave flag.
    const group = records[1]!.encoded.slice();
    expect(group.at(-1)).to.equal(1);
    group[group.length - 1] = 2;
    expect(decodeError(() => decodeGroup(group, 'group')).message).to.include('flag byte 2');
    // A chunk's final flag follows its tag, version, stream id and seq.
    const chunk = records[4]!.encoded.slice();
    const finalAt = 2 + streamIdBytes + 4;
    expect(chunk[finalAt]).to.equal(1);
    chunk[finalAt] = 0xff;
    expect(decodeError(() => decodeChunk(chunk, 'chunk')).code).to.equal('corrupt');
  });

  it('computes CRC-32 (IEEE), in one go or continued, at every length and alignment', () => {
    expect(crc32(bytes('123456789'))).to.equal(0xcbf43926);
    const data = Uint8Array.from({ length: 100 }, (_, i) => (i * 37 + 11) & 0xff);
    const bytewise = (input: Uint8Array) => {
      let crc = 0xffffffff;
      for (const byte of input) {
        crc ^= byte;
        for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
      }
      return (crc ^ 0xffffffff) >>> 0;
    };
    for (let from = 0; from < 9; from++) {
      for (let to = from; to <= data.length; to += 7) {
        const part = data.subarray(from, to);
        expect(crc32(part), `[${from}, ${to})`).to.equal(bytewise(part));
        const cut = from + Math.floor((to - from) / 3);
        expect(crc32(data.subarray(cut, to), crc32(data.subarray(from, cut)))).to.equal(
          bytewise(part),
        );
      }
    }
  });

  it('seals a record with the checksum of its key and value; any flipped bit is corrupt', () => {
    const key = bytes('key');
    const value = bytes('a value');
    const sealed = seal(key, value);
    expect([...unseal(key, sealed, 'record')]).to.deep.equal([...value]);
    for (let bit = 0; bit < sealed.length * 8; bit++) {
      const damaged = sealed.slice();
      damaged[bit >> 3]! ^= 1 << (bit & 7);
      expect(decodeError(() => unseal(key, damaged, 'record')).code, `bit ${bit}`).to.equal(
        'corrupt',
      );
    }
    expect(decodeError(() => unseal(bytes('kez'), sealed, 'record')).message).to.include(
      'fails its checksum',
    );
    expect(decodeError(() => unseal(key, sealed.subarray(0, 3), 'record')).code).to.equal(
      'corrupt',
    );
  });
});
