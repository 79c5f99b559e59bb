// Runs in Node (mocha) and in Chromium (web-test-runner): the ring must give byte-identical
// results in both, so the golden digests below are checked in each environment.
import { expect } from 'chai';
import {
  DEFAULT_SETTINGS,
  diff,
  encodePlacement,
  MAX_MEMBERS,
  type Placement,
  placementDigest,
  positionOf,
  Ring,
  RingError,
  type RingErrorCode,
  type RingSettings,
} from '../src/index.ts';
import { memberSet, referencePartitionOf, referencePlacement } from './reference.ts';

const GREEK = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'ünïcødé-节点'];

function expectRingError(run: () => unknown, code: RingErrorCode, mentions: string): void {
  let thrown: unknown;
  try {
    run();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, 'expected a RingError').to.be.instanceOf(RingError);
  expect((thrown as RingError).code).to.equal(code);
  expect((thrown as RingError).message).to.include(mentions);
}

function table(placement: Placement): string[][] {
  return Array.from({ length: placement.settings.partitions }, (_, p) => [
    ...placement.replicasOf(p),
  ]);
}

describe('ring: determinism (Node and Chromium)', () => {
  it('positions are the first 8 bytes of sha256(utf-8), big endian (known vectors)', () => {
    // Vectors computed independently with Python's hashlib.
    expect(positionOf('abc')).to.deep.equal([0xba7816bf, 0x8f01cfea]);
    expect(positionOf('')).to.deep.equal([0xe3b0c442, 0x98fc1c14]);
    expect(positionOf('é')).to.deep.equal([0x4a99557e, 0x4033c353]);
    expect(positionOf('ünïcødé-节点')).to.deep.equal([0x7cb6fd03, 0x3354ff09]);
  });

  it('a key’s partition is the top log2(Q) bits of its position (known vectors)', () => {
    const cases: [string, number, number][] = [
      ['abc', 1, 0],
      ['abc', 64, 46],
      ['abc', 4096, 2983],
      ['abc', 65536, 47736],
      ['', 64, 56],
      ['é', 4096, 1193],
      ['ünïcødé-节点', 65536, 31926],
      ['user:42', 64, 58],
    ];
    for (const [key, partitions, expected] of cases) {
      const ring = new Ring({ ...DEFAULT_SETTINGS, partitions });
      expect(ring.partitionOf(key), `${key} with Q=${partitions}`).to.equal(expected);
    }
  });

  it('the same members give a byte-identical placement (golden digests)', () => {
    const small = new Ring({ partitions: 64, replicationFactor: 3, tokensPerNode: 128 });
    expect(placementDigest(small.placement(GREEK))).to.equal(GOLDEN_GREEK);
    const large = new Ring({ partitions: 4096, replicationFactor: 5, tokensPerNode: 128 });
    expect(placementDigest(large.placement(memberSet(0, 100)))).to.equal(GOLDEN_LARGE);
  });

  it('encodes a placement canonically (layout documented in encode.ts)', () => {
    const ring = new Ring({ partitions: 2, replicationFactor: 2, tokensPerNode: 4 });
    const placement = ring.placement(['b', 'a', 'é']);
    const bytes = encodePlacement(placement);
    const replicas = [0, 1].flatMap((p) =>
      placement.replicasOf(p).flatMap((id) => [0, placement.members.indexOf(id)]),
    );
    expect([...bytes]).to.deep.equal([
      1, // version
      0,
      0,
      0,
      2, // Q
      2, // N
      0,
      0,
      0,
      4, // V
      0,
      0,
      0,
      3, // M
      1,
      0x61,
      1,
      0x62,
      2,
      0xc3,
      0xa9, // ids, sorted, UTF-8
      ...replicas,
    ]);
  });
});

describe('ring: placement contract', () => {
  it('matches the naive bigint model of DESIGN.md for many shapes', () => {
    const shapes: [RingSettings, number][] = [
      [{ partitions: 1, replicationFactor: 3, tokensPerNode: 8 }, 5],
      [{ partitions: 2, replicationFactor: 1, tokensPerNode: 1 }, 3],
      [{ partitions: 64, replicationFactor: 3, tokensPerNode: 1 }, 7],
      [{ partitions: 64, replicationFactor: 3, tokensPerNode: 16 }, 2],
      [{ partitions: 256, replicationFactor: 5, tokensPerNode: 4 }, 9],
      [{ partitions: 1024, replicationFactor: 2, tokensPerNode: 32 }, 20],
    ];
    for (const [settings, memberCount] of shapes) {
      const members = memberSet(7, memberCount);
      const placement = new Ring(settings).placement(members);
      expect(table(placement), JSON.stringify({ settings, memberCount })).to.deep.equal(
        referencePlacement(settings, members),
      );
    }
  });

  it('every partition has exactly min(N, M) distinct replicas, all members', () => {
    for (let replicationFactor = 1; replicationFactor <= 5; replicationFactor++) {
      const ring = new Ring({ partitions: 64, replicationFactor, tokensPerNode: 16 });
      for (const memberCount of [0, 1, 2, 3, 4, 5, 6, 11, 40]) {
        const members = memberSet(replicationFactor, memberCount);
        const placement = ring.placement(members);
        const expected = Math.min(replicationFactor, memberCount);
        expect(placement.replicasPerPartition).to.equal(expected);
        let total = 0;
        for (let p = 0; p < 64; p++) {
          const replicas = placement.replicasOf(p);
          expect(new Set(replicas).size, `N=${replicationFactor} M=${memberCount} p=${p}`).to.equal(
            expected,
          );
          for (const id of replicas) {
            expect(members).to.include(id);
            expect(placement.partitionsOf(id)).to.include(p);
          }
          // With no more members than N, every partition is on all of them.
          if (memberCount <= replicationFactor) {
            expect([...replicas].sort()).to.deep.equal([...members].sort());
          }
          total += replicas.length;
        }
        const listed = members.reduce((sum, id) => sum + placement.partitionsOf(id).length, 0);
        expect(listed).to.equal(total);
      }
    }
  });

  it('depends on the member set only, not on the order or on earlier placements', () => {
    const settings = { partitions: 256, replicationFactor: 3, tokensPerNode: 32 };
    const reused = new Ring(settings);
    let members = memberSet(3, 12);
    // A run of joins and leaves through one Ring (incremental token merge) must match a
    // fresh Ring each time (everything hashed and sorted from scratch).
    for (let step = 0; step < 12; step++) {
      if (step % 3 === 2) members = members.filter((_, i) => i !== step % members.length);
      else members = [...members, `joiner-${step}`, ...(step % 4 === 0 ? [`extra-${step}`] : [])];
      const fresh = new Ring(settings).placement([...members].reverse());
      expect(placementDigest(reused.placement(members)), `step ${step}`).to.equal(
        placementDigest(fresh),
      );
    }
    expect(placementDigest(reused.placement(memberSet(99, 4)))).to.equal(
      placementDigest(new Ring(settings).placement(memberSet(99, 4))),
    );
  });

  it('a key’s partition is the model’s and never depends on membership', () => {
    const ring = new Ring({ partitions: 1024, replicationFactor: 3, tokensPerNode: 8 });
    const keys = Array.from({ length: 500 }, (_, i) => `key-${i}`);
    const before = keys.map((key) => ring.partitionOf(key));
    expect(before).to.deep.equal(keys.map((key) => referencePartitionOf(key, 1024)));
    ring.placement(memberSet(1, 10));
    ring.placement(memberSet(2, 3));
    expect(keys.map((key) => ring.partitionOf(key))).to.deep.equal(before);
  });

  it('partitionsOf is ascending and empty for a non-member; results are frozen', () => {
    const placement = new Ring({ ...DEFAULT_SETTINGS, partitions: 128 }).placement(GREEK);
    for (const id of GREEK) {
      const partitions = placement.partitionsOf(id);
      expect([...partitions]).to.deep.equal([...partitions].sort((a, b) => a - b));
      expect(Object.isFrozen(partitions)).to.equal(true);
    }
    expect(placement.partitionsOf('stranger')).to.deep.equal([]);
    expect(placement.has('stranger')).to.equal(false);
    expect(placement.has('alpha')).to.equal(true);
    expect(Object.isFrozen(placement.replicasOf(0))).to.equal(true);
    expect(placement.members).to.deep.equal([...GREEK].sort());
  });

  it('diff lists exactly the partitions whose replica set changed', () => {
    const ring = new Ring({ partitions: 256, replicationFactor: 3, tokensPerNode: 16 });
    const before = ring.placement(memberSet(4, 6));
    const after = ring.placement([...memberSet(4, 6).slice(1), 'newcomer']);
    const changes = diff(before, after);
    const changed = new Set(changes.map((change) => change.partition));
    expect(changes.map((change) => change.partition)).to.deep.equal(
      [...changed].sort((a, b) => a - b),
    );
    for (let p = 0; p < 256; p++) {
      const was = new Set(before.replicasOf(p));
      const is = new Set(after.replicasOf(p));
      const change = changes.find((c) => c.partition === p);
      expect(change?.added ?? [], `added p=${p}`).to.deep.equal(
        [...is].filter((id) => !was.has(id)),
      );
      expect(change?.removed ?? [], `removed p=${p}`).to.deep.equal(
        [...was].filter((id) => !is.has(id)),
      );
    }
    expect(diff(after, after)).to.deep.equal([]);
    // From nothing (bootstrap) every partition gains all its replicas.
    const empty = ring.placement([]);
    expect(diff(empty, after).map((c) => c.added)).to.deep.equal(table(after));
  });
});

describe('ring: input validation', () => {
  it('rejects bad settings with invalid_settings', () => {
    const bad: [Partial<Record<keyof RingSettings, unknown>>, string][] = [
      [{ partitions: 0 }, 'partitions'],
      [{ partitions: 48 }, 'partitions'],
      [{ partitions: 131072 }, 'partitions'],
      [{ partitions: 1.5 }, 'partitions'],
      [{ partitions: '64' }, 'partitions'],
      [{ partitions: Number.NaN }, 'partitions'],
      [{ replicationFactor: 0 }, 'replicationFactor'],
      [{ replicationFactor: 6 }, 'replicationFactor'],
      [{ replicationFactor: 2.5 }, 'replicationFactor'],
      [{ tokensPerNode: 0 }, 'tokensPerNode'],
      [{ tokensPerNode: 1025 }, 'tokensPerNode'],
    ];
    for (const [override, field] of bad) {
      const settings = { ...DEFAULT_SETTINGS, ...override } as RingSettings;
      expectRingError(() => new Ring(settings), 'invalid_settings', field);
    }
    expectRingError(() => new Ring(null as unknown as RingSettings), 'invalid_settings', 'object');
  });

  it('rejects bad member lists with invalid_member', () => {
    const ring = new Ring({ ...DEFAULT_SETTINGS, tokensPerNode: 2 });
    expectRingError(() => ring.placement(['a', '']), 'invalid_member', 'non-empty');
    expectRingError(
      () => ring.placement(['a', 7 as unknown as string]),
      'invalid_member',
      'number',
    );
    expectRingError(
      () => ring.placement(['a', 'b', 'a']),
      'invalid_member',
      'duplicate node id "a"',
    );
    expectRingError(() => ring.placement(['x'.repeat(65)]), 'invalid_member', '64 UTF-8 bytes');
    // 22 characters but 66 UTF-8 bytes.
    expectRingError(() => ring.placement(['节'.repeat(22)]), 'invalid_member', '64 UTF-8 bytes');
    expectRingError(() => ring.placement(['a\uD800b']), 'invalid_member', 'well-formed');
    expectRingError(() => ring.placement('abc' as unknown as string[]), 'invalid_member', 'array');
    expectRingError(
      () => ring.placement(memberSet(0, MAX_MEMBERS + 1)),
      'invalid_member',
      `at most ${MAX_MEMBERS}`,
    );
    // Boundaries that are fine: 64 bytes exactly, a surrogate pair.
    expect(ring.placement(['x'.repeat(64), '😀']).members).to.have.length(2);
  });

  it('rejects out-of-range partitions and non-string keys', () => {
    const ring = new Ring({ ...DEFAULT_SETTINGS, partitions: 64 });
    const placement = ring.placement(GREEK);
    for (const partition of [-1, 64, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expectRingError(() => placement.replicasOf(partition), 'invalid_partition', '0..63');
    }
    expectRingError(
      () => ring.partitionOf(undefined as unknown as string),
      'invalid_key',
      'undefined',
    );
    expectRingError(() => ring.partitionOf(null as unknown as string), 'invalid_key', 'null');
  });

  it('refuses to diff placements made with different settings', () => {
    const a = new Ring({ partitions: 64, replicationFactor: 3, tokensPerNode: 8 }).placement(GREEK);
    const b = new Ring({ partitions: 64, replicationFactor: 2, tokensPerNode: 8 }).placement(GREEK);
    expectRingError(() => diff(a, b), 'settings_mismatch', 'different settings');
  });
});

// Golden digests, computed independently by a Python reimplementation of DESIGN.md
// (hashlib.sha256, bisect) and of the encoding layout. If one changes, every existing
// cluster's placement changes: that is a breaking change, not a test to update.
const GOLDEN_GREEK = '922a99d5ba6c40e49c4ada1b8dbe96221135cf7006e5f903b752e3a5d61f8d86';
const GOLDEN_LARGE = 'fce77e5dfc93ca63c4af5712ce841a0b89a3c7acf11ac25610d496f9daf141e1';
