import { expect } from 'chai';
import {
  batchKey,
  crc32,
  DecodeError,
  decodeChunk,
  decodeGroup,
  decodeNode,
  decodeSegment,
  decodeSnapshot,
  encodeChunk,
  encodeGroup,
  encodeJournalBasePage,
  encodeJournalWrite,
  encodeNode,
  encodeSegment,
  encodeSnapshot,
  FORMAT_VERSION,
  type GroupRecord,
  groupKey,
  hex,
  kvKey,
  maxSlabRecordBytes,
  nodeKey,
  recordSlabBytes,
  seal,
  segmentKey,
  sessionKey,
  sessionRange,
  snapshotKey,
  spaceRange,
  spacesRange,
  streamIdBytes,
  tableRange,
  unseal,
  utf8,
  utf8Length,
} from '../src/codec.ts';
import { bytes, entryRange, prng } from './contract.ts';

const confState = {
  voters: ['a', 'b'],
  learners: ['c'],
  votersOutgoing: ['a', 'd'],
  learnersNext: ['d'],
  autoLeave: true,
};
const applied = { index: 2 ** 53 - 1, term: 7, confState };
const group: GroupRecord = {
  group: 5,
  logSpace: 1,
  stateSpace: 2,
  hardState: { term: 3, vote: 'ü-node', commit: 2 },
  compacted: { index: 1, term: 1 },
  snapshotIndex: null,
  appliedState: applied,
};

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

  // Golden bytes of format version 2 as written by the codec before it was tuned for speed
  // (commit 5f17180: DataView writes, TextEncoder per string): stores written by either
  // read the same. Strings mix ASCII, 2-, 3- and 4-byte UTF-8; integers go past 2^32.
  it('writes format version 2 byte for byte as before: records and keys', () => {
    const conf = {
      voters: ['n0123456789ab@1f', 'ü@2'],
      learners: ['c'],
      votersOutgoing: [],
      learnersNext: ['d😀'],
      autoLeave: true,
    };
    const at = { index: 2 ** 53 - 1, term: 7, confState: conf };
    const empty = {
      voters: [],
      learners: [],
      votersOutgoing: [],
      learnersNext: [],
      autoLeave: false,
    };
    const golden: Array<[string, Uint8Array | Uint8Array[], string]> = [
      [
        'node',
        encodeNode({ nextSpace: 9, garbage: [3, 2 ** 32 - 1] }),
        '01020000000e6d6573686b762d73746f72616765000000090000000200000003ffffffff',
      ],
      [
        'group',
        encodeGroup({
          group: 5,
          logSpace: 1,
          stateSpace: 2 ** 32 - 2,
          hardState: { term: 2 ** 40 + 3, vote: 'ü-node', commit: 2 },
          compacted: { index: 1, term: 1 },
          snapshotIndex: 1,
          appliedState: at,
        }),
        '02020000000500000001fffffffe00000100000000030100000007c3bc2d6e6f6465000000000000000200000000000000010000000000000001010000000000000001001fffffffffffff000000000000000700000002000000106e30313233343536373839616240316600000004c3bc403200000001000000016300000000000000010000000564f09f988001',
      ],
      [
        'group without vote or snapshot',
        encodeGroup({
          group: 6,
          logSpace: 3,
          stateSpace: 4,
          hardState: { term: 0, vote: null, commit: 0 },
          compacted: { index: 0, term: 0 },
          snapshotIndex: null,
          appliedState: { index: 0, term: 0, confState: empty },
        }),
        '0202000000060000000300000004000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',
      ],
      [
        'segment',
        encodeSegment([
          { index: 2 ** 33, term: 3, type: 0, data: Uint8Array.of(1, 2, 3) },
          { index: 2 ** 33 + 1, term: 4, type: 1, data: new Uint8Array(0) },
        ]),
        '03020000000200000000000000020000000000000003000000000301020300000000000000040100000000',
      ],
      [
        'snapshot',
        encodeSnapshot({
          metadata: { index: 4, term: 2, confState: conf },
          data: Uint8Array.of(9, 8),
        }),
        '04020000000000000004000000000000000200000002000000106e30313233343536373839616240316600000004c3bc403200000001000000016300000000000000010000000564f09f988001000000020908',
      ],
      [
        'chunk',
        encodeChunk({
          streamId: new Uint8Array(streamIdBytes).fill(77),
          seq: 0,
          final: true,
          appliedState: at,
          records: [
            { part: 'session', name: 'client-ö', value: Uint8Array.of(5) },
            { part: 'kv', name: 'key', value: Uint8Array.of(6, 7) },
          ],
        }),
        '05024d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d0000000001001fffffffffffff000000000000000700000002000000106e30313233343536373839616240316600000004c3bc403200000001000000016300000000000000010000000564f09f988001000000020000000009636c69656e742dc3b6000000010501000000036b6579000000020607',
      ],
      [
        'journal write',
        encodeJournalWrite([
          { type: 'put', key: Uint8Array.of(1), value: Uint8Array.of(2) },
          { type: 'del', key: Uint8Array.of(3) },
          { type: 'delRange', key: Uint8Array.of(4), end: Uint8Array.of(5) },
        ]),
        '06020000000301000000010100000001020200000001030300000001040000000105',
      ],
      [
        'journal base page',
        encodeJournalBasePage([[Uint8Array.of(1), Uint8Array.of(2, 3)]]),
        '0702000000010000000101000000020203',
      ],
      ['sealed', seal(Uint8Array.of(1, 2), Uint8Array.of(3, 4, 5)), '470b99f4030405'],
      ['node key', nodeKey(), '00'],
      ['group key', groupKey(2 ** 32 - 1), '01ffffffff'],
      ['segment key', segmentKey(0x01020304, 2 ** 40 + 0x0a0b0c0d), '0201020304000001000a0b0c0d'],
      ['snapshot key', snapshotKey(258), '0300000102'],
      ['batch key', batchKey(2 ** 33 + 1), '050000000200000001'],
      ['kv key', kvKey(7, 'ключ-é😀 k'), '040000000701d0bad0bbd18ed1872dc3a9f09f9880206b'],
      ['session key', sessionKey(2 ** 32 - 1, 'client'), '04ffffffff00636c69656e74'],
      ['space range', spaceRange(2, 2 ** 32 - 1), '02ffffffff 03'],
      ['space range', spaceRange(4, 5), '0400000005 0400000006'],
      ['session range', sessionRange(9), '040000000900 040000000901'],
      ['table range', tableRange(3), '03 04'],
      ['spaces range', spacesRange(2, 1, 2 ** 32), '0200000001 03'],
    ];
    for (const [what, encoded, expected] of golden) {
      const found = encoded instanceof Uint8Array ? hex(encoded) : encoded.map(hex).join(' ');
      expect(found, what).to.equal(expected);
    }
  });

  it('encoders given the key hand out the record as seal(key, record) would', () => {
    const key = Uint8Array.of(1, 0, 0, 0, 5);
    const many = Array.from({ length: 2000 }, (_, i) => `member-${i}`); // outgrows the scratch
    const big = { ...confState, voters: many };
    const cases: Array<[string, (sealedUnder?: Uint8Array) => Uint8Array]> = [
      ['node', (k) => encodeNode({ nextSpace: 9, garbage: [3, 4] }, k)],
      ['group', (k) => encodeGroup(group, k)],
      [
        'large group',
        (k) => encodeGroup({ ...group, appliedState: { ...applied, confState: big } }, k),
      ],
      ['segment', (k) => encodeSegment(entryRange(10, 13, 4), k)],
      [
        'snapshot',
        (k) =>
          encodeSnapshot({ metadata: { index: 4, term: 2, confState: big }, data: bytes('d') }, k),
      ],
    ];
    for (const [kind, encode] of cases) {
      const plain = encode();
      expect(hex(encode(key)), kind).to.equal(hex(seal(key, plain)));
      expect(hex(unseal(key, encode(key), kind)), kind).to.equal(hex(plain));
    }
  });

  // An engine may store the whole buffer of the array it is handed (IndexedDB's structured
  // clone of a view clones its buffer, which its engine copies out; the memory engine keeps
  // the array): a record is either exactly its buffer or, if small, a view of a slab of
  // bounded size, and no two records share a byte (a later record never changes an earlier).
  it('hands out every record the store writes in its own bytes: exactly its buffer, or a small one in a bounded slab', () => {
    const key = Uint8Array.of(3, 0, 0, 0, 1);
    const many = Array.from({ length: 40 }, (_, i) => `member-${i}`); // grows a 64 B guess
    const encoders: Array<[string, () => Uint8Array]> = [
      ['node', () => encodeNode({ nextSpace: 9, garbage: [3, 4] }, nodeKey())],
      ['group', () => encodeGroup(group, key)],
      ['segment', () => encodeSegment(entryRange(10, 13, 4), key)],
      ['large segment', () => encodeSegment(entryRange(10, 60, 4), key)],
      [
        'snapshot',
        () => encodeSnapshot({ metadata: { index: 4, term: 2, confState }, data: bytes('d') }, key),
      ],
      [
        'snapshot with a large configuration',
        () =>
          encodeSnapshot(
            {
              metadata: { index: 4, term: 2, confState: { ...confState, voters: many } },
              data: bytes('d'),
            },
            key,
          ),
      ],
      ['sealed value', () => seal(key, bytes('value'))],
      ['large sealed value', () => seal(key, new Uint8Array(maxSlabRecordBytes).fill(7))],
    ];
    // Enough rounds to fill three slabs or more (a round writes over 256 B into slabs).
    const rounds = Math.ceil((3 * recordSlabBytes) / 256);
    const records: Array<[string, Uint8Array, string]> = [];
    for (let round = 0; round < rounds; round++) {
      for (const [kind, encode] of encoders) {
        const record = encode();
        records.push([kind, record, hex(record)]);
      }
    }
    const kinds = new Set<string>();
    const used = new Map<ArrayBufferLike, Array<[number, number]>>();
    for (const [kind, record, written] of records) {
      expect(hex(record), `${kind} changed after later records`).to.equal(written);
      if (record.length > maxSlabRecordBytes) {
        expect([record.byteOffset, record.buffer.byteLength], kind).to.deep.equal([
          0,
          record.length,
        ]);
        kinds.add(`${kind}: own buffer`);
      } else {
        expect(record.buffer.byteLength, kind).to.be.at.most(recordSlabBytes);
        kinds.add(`${kind}: ${record.buffer.byteLength === record.length ? 'own buffer' : 'slab'}`);
      }
      const ranges = used.get(record.buffer) ?? [];
      const end = record.byteOffset + record.length;
      const shared = ranges.filter(([from, to]) => record.byteOffset < to && from < end);
      expect(shared, `${kind} shares bytes with another record`).to.deep.equal([]);
      ranges.push([record.byteOffset, end]);
      used.set(record.buffer, ranges);
    }
    expect([...kinds].sort()).to.deep.equal([
      'group: slab',
      'large sealed value: own buffer',
      'large segment: own buffer',
      'node: slab',
      'sealed value: slab',
      'segment: slab',
      'snapshot with a large configuration: own buffer',
      'snapshot: slab',
    ]);
  });

  it('an encoder that threw midway leaves nothing behind for the next record', () => {
    const expected = hex(encodeGroup(group, Uint8Array.of(1)));
    const learners = null as unknown as string[]; // fails after the fields before it are written
    const broken = {
      ...group,
      appliedState: { ...applied, confState: { ...confState, learners } },
    };
    expect(() => encodeGroup(broken, Uint8Array.of(2))).to.throw();
    expect(hex(encodeGroup(group, Uint8Array.of(1)))).to.equal(expected);
    expect(hex(encodeNode({ nextSpace: 9, garbage: [] }))).to.equal(
      hex(unseal(nodeKey(), encodeNode({ nextSpace: 9, garbage: [] }, nodeKey()), 'node')),
    );
  });

  it('counts UTF-8 bytes as TextEncoder writes them, lone surrogates included', () => {
    const seed = 20261202;
    const random = prng(seed);
    const units = [0x41, 0x7f, 0x80, 0x7ff, 0x800, 0xfffd, 0xd83d, 0xde00, 0xdbff, 0xdc00];
    for (let n = 0; n < 2000; n++) {
      const length = Math.floor(random() * 12);
      const text = String.fromCharCode(
        ...Array.from({ length }, () =>
          random() < 0.5
            ? units[Math.floor(random() * units.length)]!
            : Math.floor(random() * 0x10000),
        ),
      );
      expect(utf8Length(text), `seed ${seed}, string ${n}`).to.equal(utf8(text).length);
      if (!/\p{Cs}/u.test(text)) {
        // well-formed (no lone surrogate): a key
        expect(hex(kvKey(1, text)).slice(12), `seed ${seed}, string ${n}`).to.equal(
          hex(utf8(text)),
        );
      }
    }
  });
});
