/**
 * The contract suite every backend passes (memory: storage.shared.test.ts, LevelDB:
 * disk.test.ts, IndexedDB: indexeddb.browser.test.ts). Isomorphic: no Node, no DOM.
 */
import type { Entry, Snapshot } from '@meshkv/raft';
import { expect } from 'chai';
import {
  batchKey,
  decodeChunk,
  encodeNode,
  FORMAT_VERSION,
  groupKey,
  nodeKey,
  seal,
  segmentKey,
  Table,
  tableRange,
  unseal,
} from '../src/codec.ts';
import type { Engine } from '../src/engine.ts';
import {
  type AppliedState,
  type GroupState,
  type GroupWrite,
  limits,
  type NodeStorage,
  StorageError,
} from '../src/index.ts';

export interface TestDatabase {
  /** What error messages about this database must mention. */
  readonly name: string;
  open(): Promise<NodeStorage>;
  /** The raw key space, while no store is open on it. */
  openEngine(): Promise<Engine>;
  destroy(): Promise<void>;
}

export interface Backend {
  readonly name: string;
  /** A new, empty database. */
  fresh(): Promise<TestDatabase>;
}

const encoder = new TextEncoder();
export const bytes = (text: string): Uint8Array => encoder.encode(text);

export function entry(index: number, term: number, text = `e${index}t${term}`): Entry {
  return { index, term, type: 0, data: bytes(text) };
}
export function entryRange(from: number, to: number, term: number): Entry[] {
  const list: Entry[] = [];
  for (let i = from; i <= to; i++) list.push(entry(i, term));
  return list;
}

const conf = (...voters: string[]) => ({
  voters,
  learners: [],
  votersOutgoing: [],
  learnersNext: [],
  autoLeave: false,
});
const snapshotAt = (index: number, term: number, data = 'snap'): Snapshot => ({
  metadata: { index, term, confState: conf('a', 'b', 'c') },
  data: bytes(data),
});

/** Rejects with a StorageError of `code` whose message names the database. */
export async function expectCode(
  promise: Promise<unknown>,
  code: string,
  dbName?: string,
): Promise<StorageError> {
  try {
    await promise;
  } catch (error) {
    expect(error, String(error)).to.be.instanceOf(StorageError);
    const storageError = error as StorageError;
    expect(storageError.code, storageError.message).to.equal(code);
    if (dbName !== undefined) expect(storageError.message).to.include(dbName);
    return storageError;
  }
  throw new Error(`expected a StorageError '${code}', but the call succeeded`);
}

/** A small seeded PRNG (mulberry32): randomized tests print their seed and replay it. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function plain(entries: readonly Entry[]) {
  return entries.map((e) => ({ index: e.index, term: e.term, type: e.type, data: [...e.data] }));
}

async function groupOf(storage: NodeStorage, group: number): Promise<GroupState> {
  const state = (await storage.load()).groups.get(group);
  if (state === undefined) throw new Error(`group ${group} is missing`);
  return state;
}

async function countTable(db: TestDatabase, table: number): Promise<number> {
  const engine = await db.openEngine();
  let count = 0;
  for await (const page of engine.scan(...tableRange(table))) count += page.length;
  await engine.close();
  return count;
}

export function storageContract(backend: Backend): void {
  describe(`storage contract: ${backend.name}`, () => {
    let db: TestDatabase;
    let storage: NodeStorage;
    const reopen = async () => {
      await storage.close();
      storage = await db.open();
    };
    /** A one-part batch refused as invalid_argument, saying `why`. */
    const refused = async (part: GroupWrite, why: string) => {
      const error = await expectCode(
        storage.write({ groups: [part] }),
        'invalid_argument',
        db.name,
      );
      expect(error.message).to.include(why);
    };

    beforeEach(async () => {
      db = await backend.fresh();
      storage = await db.open();
    });
    afterEach(async () => {
      await storage.close();
      await db.destroy();
    });

    it('a new database loads with no groups and reopens', async () => {
      expect((await storage.load()).groups.size).to.equal(0);
      await reopen();
      expect((await storage.load()).groups.size).to.equal(0);
    });

    it('a created group starts empty', async () => {
      await storage.write({ groups: [{ group: 7, create: true }] });
      await reopen();
      const g = await groupOf(storage, 7);
      expect(g.hardState).to.deep.equal({ term: 0, vote: null, commit: 0 });
      expect(g.compacted).to.deep.equal({ index: 0, term: 0 });
      expect(g.entries).to.deep.equal([]);
      expect(g.snapshot).to.equal(null);
      expect(g.appliedState).to.deep.equal({ index: 0, term: 0, confState: conf() });
      expect(g.sessions.size).to.equal(0);
    });

    it('persists hard state and entries of many groups in one batch', async () => {
      const groups: GroupWrite[] = [];
      for (let group = 0; group < 64; group++) {
        groups.push({
          group,
          create: true,
          entries: entryRange(1, 3, 1),
          hardState: { term: 1, vote: `n${group}`, commit: 2 },
        });
      }
      await storage.write({ groups });
      await reopen();
      const { groups: loaded } = await storage.load();
      expect(loaded.size).to.equal(64);
      for (let group = 0; group < 64; group++) {
        const g = loaded.get(group)!;
        expect(g.hardState).to.deep.equal({ term: 1, vote: `n${group}`, commit: 2 });
        expect(plain(g.entries)).to.deep.equal(plain(entryRange(1, 3, 1)));
      }
    });

    it('appending at an index replaces the conflicting suffix, across segments', async () => {
      await storage.write({ groups: [{ group: 1, create: true, entries: entryRange(1, 4, 1) }] });
      await storage.write({ groups: [{ group: 1, entries: entryRange(5, 8, 1) }] });
      await storage.write({ groups: [{ group: 1, entries: entryRange(9, 10, 2) }] });
      // Lands inside the first segment: masks the rest of it and drops the later ones.
      await storage.write({ groups: [{ group: 1, entries: entryRange(3, 4, 3) }] });
      await reopen();
      const expected = [...entryRange(1, 2, 1), ...entryRange(3, 4, 3)];
      expect(plain((await groupOf(storage, 1)).entries)).to.deep.equal(plain(expected));
      // Appending after the masked part must not resurrect the old entries 5..8.
      await storage.write({ groups: [{ group: 1, entries: entryRange(5, 5, 3) }] });
      await reopen();
      expect(plain((await groupOf(storage, 1)).entries)).to.deep.equal(
        plain([...expected, entry(5, 3)]),
      );
      expect(await rawCount(Table.Segment)).to.equal(3);
    });

    /** Counts a table's raw records (after every queued call, e.g. garbage clearing). */
    async function rawCount(table: number): Promise<number> {
      await storage.close();
      const count = await countTable(db, table);
      storage = await db.open();
      return count;
    }

    it('splits a large append into several segments and truncates inside them', async () => {
      const big = (index: number, term: number) => ({
        index,
        term,
        type: 0 as const,
        data: new Uint8Array(limits.maxEntryDataBytes).fill(index),
      });
      const appended = [1, 2, 3, 4, 5, 6].map((i) => big(i, 1));
      await storage.write({ groups: [{ group: 1, create: true, entries: appended }] });
      expect(await rawCount(Table.Segment), 'segments of at most 8 MiB').to.equal(2);
      await storage.write({ groups: [{ group: 1, entries: [big(3, 2)] }] });
      await reopen();
      const g = await groupOf(storage, 1);
      expect(g.entries.map((e) => [e.index, e.term, e.data.length, e.data[0]])).to.deep.equal([
        [1, 1, limits.maxEntryDataBytes, 1],
        [2, 1, limits.maxEntryDataBytes, 2],
        [3, 2, limits.maxEntryDataBytes, 3],
      ]);
    });

    it('rejects entries that leave a gap, go backwards in term or skip an index', async () => {
      await storage.write({ groups: [{ group: 1, create: true, entries: entryRange(1, 3, 2) }] });
      const name = db.name;
      await expectCode(
        storage.write({ groups: [{ group: 1, entries: [entry(5, 2)] }] }),
        'invalid_argument',
        name,
      );
      await expectCode(
        storage.write({ groups: [{ group: 1, entries: [entry(4, 1)] }] }),
        'invalid_argument',
        name,
      );
      await expectCode(
        storage.write({ groups: [{ group: 1, entries: [entry(4, 2), entry(6, 2)] }] }),
        'invalid_argument',
        name,
      );
      await expectCode(
        storage.write({ groups: [{ group: 1, entries: [] }] }),
        'invalid_argument',
        name,
      );
      // Index 0 is the compaction point of a new log: ignored, like any compacted entry.
      await storage.write({ groups: [{ group: 1, entries: [entry(0, 2)] }] });
      expect(plain((await groupOf(storage, 1)).entries)).to.deep.equal(plain(entryRange(1, 3, 2)));
    });

    it('compacts a prefix covered by a snapshot, idempotently, never beyond it or the log', async () => {
      await storage.write({ groups: [{ group: 1, create: true, entries: entryRange(1, 3, 1) }] });
      await storage.write({ groups: [{ group: 1, entries: entryRange(4, 6, 2) }] });
      await expectCode(
        storage.write({ groups: [{ group: 1, compactTo: 4 }] }),
        'invalid_argument',
        db.name,
      );
      await storage.write({
        groups: [{ group: 1, savedSnapshot: snapshotAt(4, 2), compactTo: 4 }],
      });
      await storage.write({ groups: [{ group: 1, compactTo: 2 }] });
      await expectCode(
        storage.write({ groups: [{ group: 1, compactTo: 7 }] }),
        'invalid_argument',
        db.name,
      );
      await reopen();
      const g = await groupOf(storage, 1);
      expect(g.compacted).to.deep.equal({ index: 4, term: 2 });
      expect(plain(g.entries)).to.deep.equal(plain(entryRange(5, 6, 2)));
      // Entries at or below the compaction point are ignored, as raft's MemoryStorage does.
      await storage.write({ groups: [{ group: 1, entries: [entry(3, 1), entry(4, 2)] }] });
      expect(plain((await groupOf(storage, 1)).entries)).to.deep.equal(plain(entryRange(5, 6, 2)));
      await storage.write({ groups: [{ group: 1, entries: [entry(4, 2), entry(5, 3)] }] });
      expect(plain((await groupOf(storage, 1)).entries)).to.deep.equal(plain([entry(5, 3)]));
      await storage.write({
        groups: [{ group: 1, savedSnapshot: snapshotAt(5, 3), compactTo: 5 }],
      });
      await storage.write({ groups: [{ group: 1, entries: [entry(6, 3)] }] });
      await reopen();
      const after = await groupOf(storage, 1);
      expect(after.compacted).to.deep.equal({ index: 5, term: 3 });
      expect(plain(after.entries)).to.deep.equal(plain([entry(6, 3)]));
    });

    it('installs a snapshot: the log restarts after it, older snapshots are refused', async () => {
      await storage.write({ groups: [{ group: 2, create: true, entries: entryRange(1, 5, 1) }] });
      await storage.write({
        groups: [
          {
            group: 2,
            snapshot: snapshotAt(10, 3),
            appliedState: { index: 10, term: 3, confState: conf('a', 'b', 'c') },
            entries: [entry(11, 3)],
          },
        ],
      });
      await reopen();
      const g = await groupOf(storage, 2);
      expect(g.snapshot?.metadata).to.deep.equal(snapshotAt(10, 3).metadata);
      expect([...g.snapshot!.data]).to.deep.equal([...bytes('snap')]);
      expect(g.compacted).to.deep.equal({ index: 10, term: 3 });
      expect(plain(g.entries)).to.deep.equal(plain([entry(11, 3)]));
      await expectCode(
        storage.write({ groups: [{ group: 2, snapshot: snapshotAt(9, 3) }] }),
        'snapshot_out_of_date',
        db.name,
      );
    });

    it('saves a local snapshot without touching the log', async () => {
      await storage.write({ groups: [{ group: 2, create: true, entries: entryRange(1, 5, 2) }] });
      await expectCode(
        storage.write({ groups: [{ group: 2, savedSnapshot: snapshotAt(3, 1) }] }),
        'invalid_argument',
      );
      await expectCode(
        storage.write({ groups: [{ group: 2, savedSnapshot: snapshotAt(6, 2) }] }),
        'invalid_argument',
      );
      await storage.write({
        groups: [{ group: 2, savedSnapshot: snapshotAt(3, 2), compactTo: 3 }],
      });
      await expectCode(
        storage.write({ groups: [{ group: 2, savedSnapshot: snapshotAt(3, 2) }] }),
        'snapshot_out_of_date',
      );
      await reopen();
      const g = await groupOf(storage, 2);
      expect(g.snapshot?.metadata.index).to.equal(3);
      expect(plain(g.entries)).to.deep.equal(plain(entryRange(4, 5, 2)));
    });

    it('persists large configurations (records that outgrow their first buffer)', async () => {
      const ids = (prefix: string) =>
        Array.from({ length: 64 }, (_, i) => `${prefix}${i}`.padEnd(limits.maxNodeIdBytes, 'x'));
      const confState = {
        voters: ids('v'),
        learners: ids('l'),
        votersOutgoing: ids('o'),
        learnersNext: ids('n'),
        autoLeave: true,
      };
      await storage.write({
        groups: [
          {
            group: 1,
            create: true,
            entries: entryRange(1, 2, 1),
            savedSnapshot: { metadata: { index: 2, term: 1, confState }, data: bytes('') },
            appliedState: { index: 2, term: 1, confState },
          },
        ],
      });
      await reopen();
      const g = await groupOf(storage, 1);
      expect(g.appliedState.confState).to.deep.equal(confState);
      expect(g.snapshot?.metadata.confState).to.deep.equal(confState);
    });

    it('keeps hard state monotonic', async () => {
      await storage.write({
        groups: [
          {
            group: 1,
            create: true,
            entries: entryRange(1, 3, 5),
            hardState: { term: 5, vote: 'a', commit: 3 },
          },
        ],
      });
      await expectCode(
        storage.write({ groups: [{ group: 1, hardState: { term: 4, vote: null, commit: 3 } }] }),
        'invalid_argument',
      );
      await expectCode(
        storage.write({ groups: [{ group: 1, hardState: { term: 5, vote: 'a', commit: 2 } }] }),
        'invalid_argument',
      );
      await storage.write({
        groups: [{ group: 1, hardState: { term: 6, vote: null, commit: 3 } }],
      });
      await reopen();
      expect((await groupOf(storage, 1)).hardState).to.deep.equal({
        term: 6,
        vote: null,
        commit: 3,
      });
    });

    it('persists the state machine: KV data, applied state and sessions', async () => {
      const applied: AppliedState = { index: 3, term: 1, confState: conf('a') };
      await storage.write({
        groups: [
          {
            group: 4,
            create: true,
            appliedState: applied,
            kv: [
              { key: 'x', value: bytes('1') },
              { key: 'y', value: bytes('2') },
              { key: 'x', value: bytes('3') },
              { key: 'y', value: null },
              { key: 'ü/😀', value: bytes('unicode') },
            ],
            sessions: [
              { clientId: 'c1', record: bytes('seq=1') },
              { clientId: 'c2', record: bytes('seq=9') },
            ],
          },
        ],
      });
      await storage.write({ groups: [{ group: 4, sessions: [{ clientId: 'c2', record: null }] }] });
      await reopen();
      expect([...(await storage.get(4, 'x'))!]).to.deep.equal([...bytes('3')]);
      expect(await storage.get(4, 'y')).to.equal(null);
      expect([...(await storage.get(4, 'ü/😀'))!]).to.deep.equal([...bytes('unicode')]);
      expect(await storage.get(4, 'absent')).to.equal(null);
      const g = await groupOf(storage, 4);
      expect(g.appliedState).to.deep.equal(applied);
      expect([...g.sessions.keys()]).to.deep.equal(['c1']);
      await expectCode(
        storage.write({ groups: [{ group: 4, appliedState: { ...applied, index: 2 } }] }),
        'invalid_argument',
      );
      await expectCode(storage.get(5, 'x'), 'unknown_group', db.name);
    });

    it('names the group and the field (with its position) a refused part trips over', async () => {
      await storage.write({
        groups: [
          { group: 1, create: true },
          { group: 2, create: true },
        ],
      });
      const v = bytes('v');
      const refusals: Array<[GroupWrite, string, string]> = [
        [
          {
            group: 2,
            kv: [
              { key: 'k', value: v },
              { key: '', value: v },
            ],
          },
          'invalid_argument',
          'group 2: kv[1].key must be',
        ],
        [
          { group: 2, kv: [{ key: 'k', value: 'v' as unknown as Uint8Array }] },
          'invalid_argument',
          'group 2: kv[0].value must be',
        ],
        [
          { group: 2, entries: [entry(1, 1), { ...entry(2, 1), term: -1 }] },
          'invalid_argument',
          'group 2: entries[1].term must be',
        ],
        [
          {
            group: 2,
            entries: [
              entry(1, 1),
              entry(2, 1),
              { ...entry(3, 1), data: new Uint8Array(limits.maxEntryDataBytes + 1) },
            ],
          },
          'too_large',
          'group 2: entries[2].data is',
        ],
        [
          {
            group: 2,
            sessions: [{ clientId: 'c', record: new Uint8Array(limits.maxSessionRecordBytes + 1) }],
          },
          'too_large',
          'group 2: sessions[0].record is',
        ],
        [
          {
            group: 2,
            sessions: [
              { clientId: 'c', record: v },
              { clientId: 'x'.repeat(limits.maxClientIdBytes + 1), record: v },
            ],
          },
          'too_large',
          'group 2: sessions[1].clientId is',
        ],
        [
          {
            group: 2,
            appliedState: { index: 0, term: 0, confState: { ...conf('a'), learners: ['b', ''] } },
          },
          'invalid_argument',
          'group 2: appliedState.confState.learners member must be',
        ],
        [
          {
            group: 2,
            hardState: { term: 1, vote: 'n'.repeat(limits.maxNodeIdBytes + 1), commit: 0 },
          },
          'too_large',
          'group 2: hardState.vote is',
        ],
      ];
      for (const [part, code, why] of refusals) {
        const error = await expectCode(
          storage.write({ groups: [{ group: 1, kv: [{ key: 'fine', value: v }] }, part] }),
          code,
          db.name,
        );
        expect(error.message, why).to.include(why);
      }
      expect(await storage.get(1, 'fine')).to.equal(null);
    });

    it('enforces limits on keys, values, client ids and entries with typed errors', async () => {
      await storage.write({ groups: [{ group: 1, create: true }] });
      const write = (gw: Omit<GroupWrite, 'group'>) =>
        storage.write({ groups: [{ group: 1, ...gw }] });
      const maxKey = 'k'.repeat(limits.maxKeyBytes);
      await write({ kv: [{ key: maxKey, value: new Uint8Array(limits.maxValueBytes) }] });
      expect((await storage.get(1, maxKey))!.length).to.equal(limits.maxValueBytes);
      await expectCode(
        write({ kv: [{ key: `${maxKey}k`, value: bytes('v') }] }),
        'too_large',
        db.name,
      );
      await expectCode(
        write({ kv: [{ key: 'é'.repeat(limits.maxKeyBytes / 2 + 1), value: bytes('v') }] }),
        'too_large',
      );
      await expectCode(
        write({ kv: [{ key: 'k', value: new Uint8Array(limits.maxValueBytes + 1) }] }),
        'too_large',
      );
      await expectCode(write({ kv: [{ key: '', value: bytes('v') }] }), 'invalid_argument');
      await expectCode(write({ kv: [{ key: '\ud800', value: bytes('v') }] }), 'invalid_argument');
      await expectCode(
        write({ kv: [{ key: 'k', value: 'v' as unknown as Uint8Array }] }),
        'invalid_argument',
      );
      await expectCode(storage.get(1, `${maxKey}k`), 'too_large');
      await expectCode(
        write({
          sessions: [{ clientId: 'c'.repeat(limits.maxClientIdBytes + 1), record: bytes('r') }],
        }),
        'too_large',
      );
      await expectCode(
        write({
          entries: [
            { index: 1, term: 1, type: 0, data: new Uint8Array(limits.maxEntryDataBytes + 1) },
          ],
        }),
        'too_large',
      );
      await expectCode(
        write({ entries: [{ index: 1, term: 1, type: 7 as 0, data: bytes('') }] }),
        'invalid_argument',
      );
      await expectCode(
        write({ hardState: { term: 1, vote: 'v'.repeat(65), commit: 0 } }),
        'too_large',
      );
      await expectCode(
        write({ hardState: { term: -1, vote: null, commit: 0 } }),
        'invalid_argument',
      );
      await expectCode(
        write({ hardState: { term: 2 ** 53, vote: null, commit: 0 } }),
        'invalid_argument',
      );
      // Nothing of the rejected batches landed.
      expect(await storage.get(1, 'k')).to.equal(null);
    });

    it('rejects a whole batch when any group part is invalid', async () => {
      await storage.write({
        groups: [
          { group: 1, create: true },
          { group: 2, create: true },
        ],
      });
      const error = await expectCode(
        storage.write({
          groups: [
            { group: 1, kv: [{ key: 'a', value: bytes('1') }], entries: [entry(1, 1)] },
            { group: 2, entries: [entry(2, 1)] },
          ],
        }),
        'invalid_argument',
        db.name,
      );
      expect(error.message).to.include('group 2');
      expect(await storage.get(1, 'a')).to.equal(null);
      expect((await groupOf(storage, 1)).entries).to.deep.equal([]);
      await expectCode(storage.write({ groups: [{ group: 1 }, { group: 1 }] }), 'invalid_argument');
      await expectCode(storage.write({ groups: [{ group: 3 }] }), 'unknown_group', db.name);
      await expectCode(
        storage.write({ groups: [{ group: 1, create: true }] }),
        'group_exists',
        db.name,
      );
      await expectCode(
        storage.write({ groups: [{ group: 1, remove: true, compactTo: 0 }] }),
        'invalid_argument',
      );
      await expectCode(
        storage.write({ groups: [{ group: -1, create: true }] }),
        'invalid_argument',
      );
      await expectCode(
        storage.write({ groups: [{ group: 1.5, create: true }] }),
        'invalid_argument',
      );
      const misspelt = { group: 1, hardstate: { term: 9, vote: null, commit: 0 } } as GroupWrite;
      const unknownField = await expectCode(
        storage.write({ groups: [misspelt] }),
        'invalid_argument',
      );
      expect(unknownField.message).to.include('hardstate');
      const malformed = { group: 1, snapshot: null } as unknown as GroupWrite;
      await expectCode(storage.write({ groups: [malformed] }), 'invalid_argument');
      const notAnArray = { group: 1, kv: { key: 'k', value: null } } as unknown as GroupWrite;
      await expectCode(storage.write({ groups: [notAnArray] }), 'invalid_argument');
      const throwing = {
        group: 1,
        get kv(): never {
          throw new TypeError('boom');
        },
      } as GroupWrite;
      const thrown = await expectCode(storage.write({ groups: [throwing] }), 'invalid_argument');
      expect(thrown.message).to.include('boom');
      // None of that stopped the store.
      await storage.write({ groups: [{ group: 1, kv: [{ key: 'ok', value: bytes('1') }] }] });
    });

    it('removes a group and all of its data; the id can be created again empty', async () => {
      await storage.write({
        groups: [
          {
            group: 3,
            create: true,
            entries: entryRange(1, 3, 1),
            savedSnapshot: snapshotAt(2, 1),
            kv: [{ key: 'k', value: bytes('v') }],
            sessions: [{ clientId: 'c', record: bytes('r') }],
          },
          { group: 4, create: true, kv: [{ key: 'k', value: bytes('kept') }] },
        ],
      });
      await storage.write({ groups: [{ group: 3, remove: true }] });
      expect((await storage.load()).groups.has(3)).to.equal(false);
      await expectCode(storage.get(3, 'k'), 'unknown_group');
      await storage.write({ groups: [{ group: 3, create: true }] });
      expect(await storage.get(3, 'k')).to.equal(null);
      expect((await groupOf(storage, 3)).entries).to.deep.equal([]);
      expect([...(await storage.get(4, 'k'))!]).to.deep.equal([...bytes('kept')]);
      // The removed group's records are physically gone: only group 4's KV pair is left.
      expect(await rawCount(Table.StateMachine)).to.equal(1);
      expect(await rawCount(Table.Segment)).to.equal(0);
      expect(await rawCount(Table.Snapshot)).to.equal(0);
    });

    it('streams a state machine as chunks and installs it on another node atomically', async () => {
      const applied: AppliedState = { index: 40, term: 3, confState: conf('a', 'b') };
      const kv = Array.from({ length: 50 }, (_, i) => ({
        key: `key${i}`,
        value: new Uint8Array(100).fill(i),
      }));
      await storage.write({
        groups: [
          {
            group: 9,
            create: true,
            appliedState: applied,
            kv,
            sessions: [{ clientId: 'c', record: bytes('r') }],
          },
        ],
      });
      const stream = storage.snapshotChunks(9, { targetChunkBytes: 1000 });
      // Writes after the call are not part of the stream.
      await storage.write({
        groups: [
          {
            group: 9,
            kv: [
              { key: 'late', value: bytes('x') },
              { key: 'key0', value: null },
            ],
          },
        ],
      });
      const chunks: Uint8Array[] = [];
      for await (const chunk of stream) chunks.push(chunk);
      expect(chunks.length).to.be.greaterThan(3);

      const target = await backend.fresh();
      const other = await target.open();
      try {
        await other.write({
          groups: [{ group: 9, create: true, kv: [{ key: 'stale', value: bytes('s') }] }],
        });
        const restore = await other.beginRestore(9);
        await expectCode(restore.add(chunks[1]!), 'invalid_argument', target.name);
        for (const chunk of chunks.slice(0, -1)) await restore.add(chunk);
        expect(restore.complete).to.equal(false);
        await expectCode(other.write({ groups: [{ group: 9, restore }] }), 'invalid_argument');
        await restore.add(chunks.at(-1)!);
        expect(restore.complete).to.equal(true);
        await expectCode(restore.add(chunks[0]!), 'invalid_argument');
        await other.write({
          groups: [{ group: 9, restore, snapshot: { metadata: applied, data: bytes('snap') } }],
        });
        await expectCode(other.write({ groups: [{ group: 9, restore }] }), 'invalid_argument');
        await other.close();
        const reopened = await target.open();
        try {
          const g = await groupOf(reopened, 9);
          expect(g.appliedState).to.deep.equal(applied);
          expect([...g.sessions.keys()]).to.deep.equal(['c']);
          expect(await reopened.get(9, 'stale')).to.equal(null);
          expect(await reopened.get(9, 'late')).to.equal(null);
          for (const { key, value } of kv)
            expect([...(await reopened.get(9, key))!]).to.deep.equal([...value]);
        } finally {
          await reopened.close();
        }
        expect(await countTable(target, Table.StateMachine)).to.equal(51);
      } finally {
        await other.close();
        await target.destroy();
      }
    });

    it('streams the state machine as of the call while writes land between its chunks', async () => {
      // ~3 MiB, so that IndexedDB reads it in several pages between the writes.
      const name = (i: number) => `k${String(i).padStart(2, '0')}`;
      const kv = Array.from({ length: 48 }, (_, i) => ({
        key: name(i),
        value: new Uint8Array(64 * 1024).fill(i),
      }));
      await storage.write({ groups: [{ group: 4, create: true, kv }] });
      const stream = storage.snapshotChunks(4, { targetChunkBytes: 100 * 1024 });
      const streamed = new Map<string, number[]>();
      let round = 0;
      for await (const chunk of stream) {
        for (const record of decodeChunk(chunk, 'streamed chunk').records) {
          streamed.set(record.name, [...record.value.subarray(0, 4)]);
        }
        round++;
        // Overwrite, delete and insert keys all over the range, read and unread.
        await storage.write({
          groups: [
            {
              group: 4,
              kv: [
                { key: name((round * 7) % 48), value: new Uint8Array(10).fill(200) },
                { key: name((round * 11 + 3) % 48), value: null },
                { key: `${name(round % 48)}+`, value: new Uint8Array(10).fill(201) },
              ],
            },
          ],
        });
      }
      expect(round, 'chunks').to.be.greaterThan(20);
      expect([...streamed.keys()]).to.deep.equal(kv.map(({ key }) => key));
      for (const { key, value } of kv) {
        expect(streamed.get(key), key).to.deep.equal([...value.subarray(0, 4)]);
      }
    });

    it('makes chunks a restore accepts at the largest target, however large the records (limits)', async () => {
      // Worst case: the largest target, the first chunk carrying a configuration of the
      // most members with the longest ids, and values and keys of the largest size.
      const ids = (prefix: string) =>
        Array.from({ length: limits.maxConfMembers }, (_, i) =>
          `${prefix}${i}`.padEnd(limits.maxNodeIdBytes, 'x'),
        );
      const applied: AppliedState = {
        index: 3,
        term: 1,
        confState: { ...conf(...ids('v')), learners: ids('l') },
      };
      const key = (i: number) => `${i}`.padEnd(limits.maxKeyBytes, 'k');
      const kv = Array.from({ length: 8 }, (_, i) => ({
        key: key(i),
        value: new Uint8Array(limits.maxValueBytes).fill(i),
      }));
      await storage.write({ groups: [{ group: 3, create: true, appliedState: applied, kv }] });
      await expectCode(
        (async () => {
          for await (const _ of storage.snapshotChunks(3, {
            targetChunkBytes: limits.maxTargetChunkBytes + 1,
          }));
        })(),
        'invalid_argument',
      );
      const chunks: Uint8Array[] = [];
      for await (const chunk of storage.snapshotChunks(3, {
        targetChunkBytes: limits.maxTargetChunkBytes,
      })) {
        expect(chunk.length, 'chunk bytes').to.be.at.most(limits.maxChunkBytes);
        chunks.push(chunk);
      }
      expect(chunks.length).to.equal(2);
      const target = await backend.fresh();
      const other = await target.open();
      try {
        await other.write({ groups: [{ group: 3, create: true }] });
        const restore = await other.beginRestore(3);
        for (const chunk of chunks) await restore.add(chunk);
        expect(restore.complete).to.equal(true);
      } finally {
        await other.close();
        await target.destroy();
      }
    });

    it('restores into a group created by the same batch; unknown groups are refused', async () => {
      const applied: AppliedState = { index: 7, term: 2, confState: conf('a') };
      await storage.write({
        groups: [
          { group: 1, create: true, appliedState: applied, kv: [{ key: 'k', value: bytes('v') }] },
        ],
      });
      const chunks: Uint8Array[] = [];
      for await (const chunk of storage.snapshotChunks(1)) chunks.push(chunk);
      expect(chunks.length).to.equal(1);
      const restore = await storage.beginRestore(2);
      await restore.add(chunks[0]!);
      await storage.write({
        groups: [
          { group: 2, create: true, restore, snapshot: { metadata: applied, data: bytes('snap') } },
        ],
      });
      expect((await groupOf(storage, 2)).appliedState).to.deep.equal(applied);
      expect([...(await storage.get(2, 'k'))!]).to.deep.equal([...bytes('v')]);
      const consume = async (group: number, targetChunkBytes?: number) => {
        for await (const _ of storage.snapshotChunks(group, { targetChunkBytes })) {
          // draining only
        }
      };
      await expectCode(consume(3), 'unknown_group', db.name);
      await expectCode(consume(1, 0), 'invalid_argument', db.name);
    });

    it('discards an aborted or uncommitted restore', async () => {
      await storage.write({
        groups: [{ group: 1, create: true, kv: [{ key: 'a', value: bytes('1') }] }],
      });
      const chunks: Uint8Array[] = [];
      for await (const chunk of storage.snapshotChunks(1)) chunks.push(chunk);
      const aborted = await storage.beginRestore(1);
      await aborted.add(chunks[0]!);
      await aborted.abort();
      await expectCode(
        storage.write({ groups: [{ group: 1, restore: aborted }] }),
        'invalid_argument',
      );
      const left = await storage.beginRestore(1);
      await left.add(chunks[0]!);
      await storage.close();
      expect(await countTable(db, Table.StateMachine)).to.equal(2);
      storage = await db.open();
      await storage.close();
      expect(await countTable(db, Table.StateMachine)).to.equal(1);
      storage = await db.open();
      expect([...(await storage.get(1, 'a'))!]).to.deep.equal([...bytes('1')]);
    });

    it('refuses to splice snapshot streams of two nodes, or of one node across a restart', async () => {
      const stream = async (store: NodeStorage) => {
        const chunks: Uint8Array[] = [];
        for await (const chunk of store.snapshotChunks(5, { targetChunkBytes: 1 })) {
          chunks.push(chunk);
        }
        expect(chunks.length, 'chunks').to.equal(2);
        return chunks;
      };
      const kvOf = (node: string) => [
        { key: 'k1', value: bytes(`${node}:k1`) },
        { key: 'x2', value: bytes(`${node}:x2`) },
      ];
      const a = await backend.fresh();
      const b = await backend.fresh();
      const storeA = await a.open();
      const storeB = await b.open();
      try {
        await storeA.write({ groups: [{ group: 5, create: true, kv: kvOf('A') }] });
        await storeB.write({ groups: [{ group: 5, create: true, kv: kvOf('B') }] });
        // Each node's first stream of the group, as a receiver may get them from two senders.
        const [fromA, fromB] = [await stream(storeA), await stream(storeB)];
        await storage.write({ groups: [{ group: 5, create: true }] });
        const restore = await storage.beginRestore(5);
        await restore.add(fromA[0]!);
        const error = await expectCode(restore.add(fromB[1]!), 'invalid_argument', db.name);
        expect(error.message).to.include('of stream');
        // A restarted node's first stream is another stream than before the restart.
        await storeA.close();
        const restarted = await a.open();
        try {
          const again = await stream(restarted);
          await expectCode(restore.add(again[1]!), 'invalid_argument');
          await expectCode(restore.add(again[0]!), 'invalid_argument');
        } finally {
          await restarted.close();
        }
        // The restore stays usable: the rest of A's stream completes it.
        for (const chunk of fromA.slice(1)) await restore.add(chunk);
        await storage.write({ groups: [{ group: 5, restore }] });
        expect([...(await storage.get(5, 'x2'))!]).to.deep.equal([...bytes('A:x2')]);
      } finally {
        await storeA.close();
        await storeB.close();
        await a.destroy();
        await b.destroy();
      }
    });

    it('refuses a restore that does not pair with the snapshot committed with it', async () => {
      const applied: AppliedState = { index: 10, term: 2, confState: conf('a', 'b', 'c') };
      await storage.write({
        groups: [
          { group: 1, create: true, appliedState: applied, kv: [{ key: 'k', value: bytes('v') }] },
        ],
      });
      const chunks: Uint8Array[] = [];
      for await (const chunk of storage.snapshotChunks(1)) chunks.push(chunk);
      const restore = await storage.beginRestore(2);
      for (const chunk of chunks) await restore.add(chunk);
      await storage.write({ groups: [{ group: 2, create: true, entries: entryRange(1, 3, 1) }] });
      // Applied 10 under a log compacted at 50: entries 11..50 would be gone for good.
      await refused(
        { group: 2, restore, snapshot: snapshotAt(50, 2) },
        'entries 11..50 would be lost',
      );
      // The same index in another term: another history.
      await refused({ group: 2, restore, snapshot: snapshotAt(10, 3) }, 'the log has term 3 there');
      // The same index and term under another configuration.
      await refused(
        {
          group: 2,
          restore,
          snapshot: {
            metadata: { index: 10, term: 2, confState: conf('a', 'b') },
            data: bytes(''),
          },
        },
        "restore's configuration differs from the snapshot's",
      );
      // Applied 10 beyond a log ending at 3: entries the node never received.
      await refused({ group: 2, restore }, 'beyond the log');
      // A snapshot without a state machine to match it.
      await refused({ group: 2, snapshot: snapshotAt(50, 2) }, 'entries 1..50 would be lost');
      expect((await groupOf(storage, 2)).compacted).to.deep.equal({ index: 0, term: 0 });
      await storage.write({ groups: [{ group: 2, restore, snapshot: snapshotAt(10, 2) }] });
      await reopen();
      const g = await groupOf(storage, 2);
      expect(g.appliedState).to.deep.equal(applied);
      expect(g.compacted).to.deep.equal({ index: 10, term: 2 });
      expect([...(await storage.get(2, 'k'))!]).to.deep.equal([...bytes('v')]);
    });

    it('refuses a commit beyond the log and entries that replace committed ones', async () => {
      await storage.write({
        groups: [
          {
            group: 1,
            create: true,
            entries: entryRange(1, 5, 1),
            hardState: { term: 1, vote: null, commit: 3 },
          },
        ],
      });
      await refused(
        { group: 1, hardState: { term: 1, vote: null, commit: 6 } },
        'commit 6 is beyond the last index 5',
      );
      await refused(
        { group: 1, entries: [entry(6, 2)], hardState: { term: 2, vote: null, commit: 7 } },
        'commit 7 is beyond the last index 6',
      );
      await refused({ group: 1, entries: [entry(3, 2)] }, 'the committed one term 1');
      await refused(
        { group: 1, entries: [entry(2, 1)] },
        'would truncate committed entries up to 3',
      );
      // Restating committed entries is harmless; what follows the commit may be replaced.
      await storage.write({
        groups: [
          {
            group: 1,
            entries: [entry(3, 1), entry(4, 2)],
            hardState: { term: 2, vote: null, commit: 4 },
          },
        ],
      });
      await reopen();
      const g = await groupOf(storage, 1);
      expect(g.entries.map((e) => [e.index, e.term])).to.deep.equal([
        [1, 1],
        [2, 1],
        [3, 1],
        [4, 2],
      ]);
      expect(g.hardState.commit).to.equal(4);
    });

    it('refuses garbage chunks with corrupt', async () => {
      await storage.write({ groups: [{ group: 1, create: true }] });
      const restore = await storage.beginRestore(1);
      await expectCode(restore.add(bytes('not a chunk')), 'corrupt', db.name);
      const chunks: Uint8Array[] = [];
      for await (const chunk of storage.snapshotChunks(1)) chunks.push(chunk);
      await expectCode(restore.add(chunks[0]!.subarray(0, chunks[0]!.length - 1)), 'corrupt');
      await restore.add(chunks[0]!);
      expect(restore.complete).to.equal(true);
    });

    it('fails every call after close with closed', async () => {
      await storage.close();
      await expectCode(storage.write({ groups: [] }), 'closed', db.name);
      await expectCode(storage.load(), 'closed');
      await expectCode(storage.get(1, 'k'), 'closed');
      await storage.close();
      storage = await db.open();
    });

    describe('refuses damaged or foreign data on open, naming the database', () => {
      async function plant(key: Uint8Array, value: Uint8Array): Promise<void> {
        await storage.close();
        const engine = await db.openEngine();
        await engine.write([{ type: 'put', key, value }]);
        await engine.close();
      }

      it('a node record of another format version, sealed or not (format 1 did not seal)', async () => {
        const record = encodeNode({ nextSpace: 1, garbage: [] });
        record[1] = FORMAT_VERSION + 1;
        await plant(nodeKey(), seal(nodeKey(), record));
        await expectCode(db.open(), 'unsupported_version', db.name);
        record[1] = 1;
        const engine = await db.openEngine();
        await engine.write([{ type: 'put', key: nodeKey(), value: record }]);
        await engine.close();
        await expectCode(db.open(), 'unsupported_version', db.name);
      });

      it('a truncated group record', async () => {
        await storage.write({
          groups: [{ group: 1, create: true, hardState: { term: 1, vote: 'a', commit: 0 } }],
        });
        await storage.close();
        const engine = await db.openEngine();
        const value = unseal(groupKey(1), (await engine.get(groupKey(1)))!, 'group record');
        const truncated = value.subarray(0, value.length - 3);
        await engine.write([
          { type: 'put', key: groupKey(1), value: seal(groupKey(1), truncated) },
        ]);
        await engine.close();
        const error = await expectCode(db.open(), 'corrupt', db.name);
        expect(error.message).to.include('truncated');
      });

      it('any record whose bytes changed under the engine: checksums', async () => {
        await storage.write({
          groups: [
            {
              group: 1,
              create: true,
              kv: [{ key: 'k', value: bytes('value') }],
              sessions: [{ clientId: 'c', record: bytes('session') }],
            },
          ],
        });
        await storage.close();
        /** Flips one bit of the stored value of every key of `table` that `pick` names. */
        const flip = async (table: number, pick: (key: Uint8Array) => boolean) => {
          const engine = await db.openEngine();
          let flipped = 0;
          for await (const page of engine.scan(...tableRange(table))) {
            for (const [key, value] of page) {
              if (!pick(key)) continue;
              const damaged = value.slice();
              damaged[damaged.length - 1]! ^= 0x10;
              await engine.write([{ type: 'put', key, value: damaged }]);
              flipped++;
            }
          }
          await engine.close();
          expect(flipped, `records flipped in table ${table}`).to.equal(1);
        };
        const isKv = (key: Uint8Array) => key[5] === 1;
        // A KV value is read by get: the store opens, and get refuses it.
        await flip(Table.StateMachine, isKv);
        storage = await db.open();
        const error = await expectCode(storage.get(1, 'k'), 'corrupt', db.name);
        expect(error.message).to.include('fails its checksum');
        await storage.close();
        await flip(Table.StateMachine, isKv);
        // Sessions and the group record are read by open.
        await flip(Table.StateMachine, (key) => !isKv(key));
        await expectCode(db.open(), 'corrupt', db.name);
        await flip(Table.StateMachine, (key) => !isKv(key));
        await flip(Table.Group, () => true);
        await expectCode(db.open(), 'corrupt', db.name);
        await flip(Table.Group, () => true);
        storage = await db.open();
        expect([...(await storage.get(1, 'k'))!]).to.deep.equal([...bytes('value')]);
      });

      it('a write lost while later ones survived (two batch markers)', async () => {
        await storage.write({ groups: [{ group: 1, create: true }] });
        await storage.write({ groups: [{ group: 1, kv: [{ key: 'k', value: bytes('v') }] }] });
        await storage.close();
        const engine = await db.openEngine();
        const markers: Uint8Array[] = [];
        for await (const page of engine.scan(...tableRange(Table.Batch))) {
          for (const [key] of page) markers.push(key);
        }
        expect(markers.length, 'batch markers').to.equal(1);
        // What an engine that dropped the write moving the marker off batch 1 leaves.
        await engine.write([
          { type: 'put', key: batchKey(1), value: seal(batchKey(1), bytes('')) },
        ]);
        await engine.close();
        const error = await expectCode(db.open(), 'corrupt', db.name);
        expect(error.message).to.include('writes after batch 1 were lost');
      });

      it('a truncated log segment', async () => {
        await storage.write({ groups: [{ group: 1, create: true, entries: entryRange(1, 5, 1) }] });
        await storage.close();
        const engine = await db.openEngine();
        const engineValue = await engine.get(segmentKey(1, 1));
        expect(engineValue, 'segment of log space 1').to.not.equal(undefined);
        await engine.write([
          { type: 'put', key: segmentKey(1, 1), value: engineValue!.subarray(0, 20) },
        ]);
        await engine.close();
        await expectCode(db.open(), 'corrupt', db.name);
      });

      it('foreign records without a node record', async () => {
        await storage.close();
        const fresh = await backend.fresh();
        const engine = await fresh.openEngine();
        await engine.write([{ type: 'put', key: bytes('user:1'), value: bytes('{"name":"x"}') }]);
        await engine.close();
        const error = await expectCode(fresh.open(), 'corrupt', fresh.name);
        expect(error.message).to.include('not a meshkv store');
        await fresh.destroy();
      });
    });

    it('matches a model under seeded random batches and reopens', async () => {
      const seed = Number(
        globalThis.process?.env?.STORAGE_SEED ?? Math.floor(Math.random() * 2 ** 31),
      );
      try {
        await randomRun(seed);
      } catch (error) {
        throw new Error(`seed ${seed} (replay: STORAGE_SEED=${seed}): ${String(error)}`, {
          cause: error,
        });
      }
    });

    async function randomRun(seed: number): Promise<void> {
      const random = prng(seed);
      const pick = (n: number) => Math.floor(random() * n);
      interface ModelGroup {
        hardState: { term: number; vote: string | null; commit: number };
        compacted: { index: number; term: number };
        entries: Entry[];
        snapshotIndex: number | null;
        kv: Map<string, string>;
      }
      const model = new Map<number, ModelGroup>();
      const lastOf = (m: ModelGroup) => m.entries.at(-1)?.index ?? m.compacted.index;
      const termOf = (m: ModelGroup, i: number) =>
        i === m.compacted.index ? m.compacted.term : m.entries[i - m.compacted.index - 1]!.term;
      let serial = 0;

      for (let step = 0; step < 150; step++) {
        const writes: GroupWrite[] = [];
        const next = new Map(model);
        for (const group of new Set([pick(4), pick(4)])) {
          const old = model.get(group);
          if (old === undefined) {
            next.set(group, {
              hardState: { term: 0, vote: null, commit: 0 },
              compacted: { index: 0, term: 0 },
              entries: [],
              snapshotIndex: null,
              kv: new Map(),
            });
            writes.push({ group, create: true });
            continue;
          }
          const m: ModelGroup = { ...old, entries: [...old.entries], kv: new Map(old.kv) };
          const action = pick(10);
          if (action === 0) {
            next.delete(group);
            writes.push({ group, remove: true });
            continue;
          }
          const gw: { -readonly [K in keyof GroupWrite]: GroupWrite[K] } = { group };
          const last = lastOf(m);
          if (action <= 4) {
            // Committed entries are never replaced.
            const after = Math.max(m.compacted.index, m.hardState.commit);
            const from = after + 1 + pick(last - after + 1);
            const term = termOf(m, from - 1) + pick(2);
            const added = Array.from({ length: 1 + pick(4) }, (_, i) =>
              entry(from + i, term, `s${serial++}`),
            );
            m.entries = [...m.entries.slice(0, from - m.compacted.index - 1), ...added];
            gw.entries = added;
          } else if (action === 5) {
            const to = m.compacted.index + pick(last - m.compacted.index + 1);
            if (to > (m.snapshotIndex ?? 0)) {
              gw.savedSnapshot = snapshotAt(to, termOf(m, to));
              m.snapshotIndex = to;
            }
            if (to > m.compacted.index) {
              m.compacted = { index: to, term: termOf(m, to) };
              m.entries = m.entries.slice(to - old.compacted.index);
            }
            gw.compactTo = to;
          } else if (action === 6) {
            const index = Math.max(last, m.snapshotIndex ?? 0) + 1 + pick(3);
            const term = termOf(m, last) + pick(2);
            m.compacted = { index, term };
            m.entries = [];
            m.snapshotIndex = index;
            gw.snapshot = snapshotAt(index, term);
            gw.appliedState = { index, term, confState: conf('a', 'b', 'c') };
          } else if (action === 7) {
            m.hardState = {
              term: m.hardState.term + pick(2),
              vote: pick(2) ? 'a' : null,
              commit: Math.min(last, m.hardState.commit + pick(3)),
            };
            gw.hardState = m.hardState;
          } else {
            gw.kv = Array.from({ length: 1 + pick(3) }, () => {
              const key = `k${pick(6)}`;
              const value = pick(3) === 0 ? null : `v${serial++}`;
              if (value === null) m.kv.delete(key);
              else m.kv.set(key, value);
              return { key, value: value === null ? null : bytes(value) };
            });
          }
          next.set(group, m);
          writes.push(gw);
        }
        if (pick(8) === 0) {
          // An invalid part poisons the whole batch: the model must not move.
          const target = [...model.keys()][0];
          if (target !== undefined && !writes.some((w) => w.group === target)) {
            const bad = lastOf(model.get(target)!) + 2;
            writes.push({ group: target, entries: [entry(bad, 99)] });
            await expectCode(storage.write({ groups: writes }), 'invalid_argument');
            continue;
          }
        }
        await storage.write({ groups: writes });
        model.clear();
        for (const [id, m] of next) model.set(id, m);

        if (pick(10) === 0 || step === 149) {
          await reopen();
          const { groups } = await storage.load();
          expect([...groups.keys()].sort(), `groups at step ${step}`).to.deep.equal(
            [...model.keys()].sort(),
          );
          for (const [id, m] of model) {
            const g = groups.get(id)!;
            expect(g.hardState, `group ${id} hard state at step ${step}`).to.deep.equal(
              m.hardState,
            );
            expect(g.compacted, `group ${id} compacted at step ${step}`).to.deep.equal(m.compacted);
            expect(plain(g.entries), `group ${id} entries at step ${step}`).to.deep.equal(
              plain(m.entries),
            );
            expect(g.snapshot?.metadata.index ?? null).to.equal(m.snapshotIndex);
            for (let k = 0; k < 6; k++) {
              const value = await storage.get(id, `k${k}`);
              const expected = m.kv.get(`k${k}`);
              expect(
                value === null ? undefined : new TextDecoder().decode(value),
                `group ${id} k${k}`,
              ).to.equal(expected);
            }
          }
        }
      }
    }
  });
}
