import { expect } from 'chai';
import { promisifyRequest } from 'idb-keyval';
import {
  deleteIndexedDbStorage,
  type IndexedDbRepair,
  indexedDbCopies,
  indexedDbName,
  openIndexedDbEngine,
  openIndexedDbStorage,
} from '../src/indexeddb.browser.ts';
import { expectCode, storageContract } from './contract.ts';

let databases = 0;
const run = `${Date.now()}-${Math.random()}`;

storageContract({
  name: 'IndexedDB',
  async fresh() {
    const nodeId = `node-${run}-${++databases}`;
    const name = indexedDbName('test', nodeId);
    return {
      name,
      open: () => openIndexedDbStorage({ clusterId: 'test', nodeId }),
      openEngine: () => openIndexedDbEngine(name),
      destroy: () => deleteIndexedDbStorage({ clusterId: 'test', nodeId }),
    };
  },
});

describe('storage: IndexedDB specifics', () => {
  it('refuses a second open of the same database with locked, until the first closes', async () => {
    const nodeId = `lock-${run}`;
    const first = await openIndexedDbStorage({ clusterId: 'test', nodeId });
    await expectCode(
      openIndexedDbStorage({ clusterId: 'test', nodeId }),
      'locked',
      indexedDbName('test', nodeId),
    );
    await first.close();
    const second = await openIndexedDbStorage({ clusterId: 'test', nodeId });
    expect((await second.load()).groups.size).to.equal(0);
    await second.close();
  });

  /** Creates database `name` at `version`, with the object stores listed, as another app would. */
  function foreignDatabase(name: string, version: number, stores: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(name, version);
      request.onupgradeneeded = () => {
        for (const store of stores) request.result.createObjectStore(store);
      };
      request.onsuccess = () => {
        request.result.close();
        resolve();
      };
      request.onerror = () => reject(request.error);
    });
  }

  it('refuses a database of a newer schema version with unsupported_version', async () => {
    const nodeId = `newer-${run}`;
    await foreignDatabase(indexedDbName('test', nodeId), 3, ['records', 'copy']);
    await expectCode(
      openIndexedDbStorage({ clusterId: 'test', nodeId }),
      'unsupported_version',
      indexedDbName('test', nodeId),
    );
  });

  it('refuses a schema version 1 database (before the mirror) with unsupported_version', async () => {
    const nodeId = `older-${run}`;
    await foreignDatabase(indexedDbName('test', nodeId), 1, ['records']);
    const error = await expectCode(
      openIndexedDbStorage({ clusterId: 'test', nodeId }),
      'unsupported_version',
      indexedDbName('test', nodeId),
    );
    expect(error.message).to.include('schema version 1');
  });

  it('refuses a foreign database without our object stores with corrupt', async () => {
    const nodeId = `foreign-${run}`;
    await foreignDatabase(indexedDbName('test', nodeId), 2, ['somethingElse']);
    const error = await expectCode(
      openIndexedDbStorage({ clusterId: 'test', nodeId }),
      'corrupt',
      indexedDbName('test', nodeId),
    );
    expect(error.message).to.include('not a meshkv store');
  });

  it("opens every readwrite transaction with durability 'strict'", async () => {
    const seen: Array<{ mode: string | undefined; durability: string | undefined }> = [];
    const original = IDBDatabase.prototype.transaction;
    IDBDatabase.prototype.transaction = function (
      this: IDBDatabase,
      ...args: Parameters<IDBDatabase['transaction']>
    ) {
      seen.push({ mode: args[1], durability: args[2]?.durability });
      return original.apply(this, args);
    };
    try {
      const storage = await openIndexedDbStorage({ clusterId: 'test', nodeId: `strict-${run}` });
      await storage.write({
        groups: [{ group: 1, create: true, kv: [{ key: 'k', value: new Uint8Array(1) }] }],
      });
      await storage.write({ groups: [{ group: 1, remove: true }] });
      await storage.close();
    } finally {
      IDBDatabase.prototype.transaction = original;
    }
    const writes = seen.filter((t) => t.mode === 'readwrite');
    expect(writes.length).to.be.greaterThan(2);
    expect(
      writes.every((t) => t.durability === 'strict'),
      JSON.stringify(writes),
    ).to.equal(true);
  });

  /** Opens one copy of a node's database directly, as the browser keeps it. */
  async function rawCopy(nodeId: string, label: 'primary' | 'mirror'): Promise<IDBDatabase> {
    const place = (await indexedDbCopies(indexedDbName('test', nodeId))).find(
      (p) => p.label === label,
    )!;
    return promisifyRequest(place.factory.open(place.dbName));
  }

  /** What Chromium does to a backing store it cannot open: delete it behind our back. */
  async function deleteCopy(nodeId: string, label: 'primary' | 'mirror'): Promise<void> {
    const place = (await indexedDbCopies(indexedDbName('test', nodeId))).find(
      (p) => p.label === label,
    )!;
    await promisifyRequest(place.factory.deleteDatabase(place.dbName));
  }

  /** A node with one group holding hard state and one KV pair, closed. */
  async function nodeWithData(nodeId: string): Promise<void> {
    const storage = await openIndexedDbStorage({ clusterId: 'test', nodeId });
    await storage.write({
      groups: [
        {
          group: 1,
          create: true,
          hardState: { term: 3, vote: 'a', commit: 0 },
          kv: [{ key: 'k', value: Uint8Array.of(7) }],
        },
      ],
    });
    await storage.close();
  }

  /** Opens the node, recording repairs, and checks that nodeWithData's state is all there. */
  async function expectData(nodeId: string): Promise<IndexedDbRepair[]> {
    const repairs: IndexedDbRepair[] = [];
    const storage = await openIndexedDbStorage({
      clusterId: 'test',
      nodeId,
      onRepair: (progress) => repairs.push(progress),
    });
    const { groups } = await storage.load();
    expect(groups.get(1)?.hardState).to.deep.equal({ term: 3, vote: 'a', commit: 0 });
    expect(await storage.get(1, 'k')).to.deep.equal(Uint8Array.of(7));
    await storage.close();
    return repairs;
  }

  for (const label of ['primary', 'mirror'] as const) {
    it(`rebuilds a missing ${label} copy from the other one, reporting progress`, async () => {
      const nodeId = `lost-${label}-${run}`;
      await nodeWithData(nodeId);
      await deleteCopy(nodeId, label);
      const repairs = await expectData(nodeId);
      expect(repairs.length).to.be.at.least(2);
      expect(repairs.every((r) => r.copy === label && r.reason.includes('missing'))).to.equal(true);
      const last = repairs.at(-1)!;
      expect(last.done).to.equal(true);
      expect(last.records).to.be.greaterThan(2);
      expect(last.database).to.equal(indexedDbName('test', nodeId));
      // Whole again: the other copy can go now.
      await deleteCopy(nodeId, label === 'primary' ? 'mirror' : 'primary');
      expect(await expectData(nodeId)).to.have.length.greaterThan(0);
      expect(await expectData(nodeId)).to.deep.equal([]);
      await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
    });
  }

  it('brings a mirror that is one batch behind (killed between the copies) up to date', async () => {
    const nodeId = `behind-${run}`;
    await nodeWithData(nodeId);
    // The primary got one more batch than the mirror: a record and its count.
    const primary = await rawCopy(nodeId, 'primary');
    const tx = primary.transaction(['records', 'copy'], 'readwrite');
    const state = await promisifyRequest(tx.objectStore('copy').get('state'));
    tx.objectStore('copy').put({ version: 1, writes: state.writes + 1 }, 'state');
    tx.objectStore('records').put(Uint8Array.of(1), Uint8Array.of(0x7f));
    await promisifyRequest(tx);
    primary.close();
    const repairs = await expectData(nodeId);
    expect(repairs.at(-1)).to.include({ copy: 'mirror', done: true });
    expect(repairs.at(-1)!.reason).to.include(`holds ${state.writes} batches`);
    await deleteCopy(nodeId, 'primary');
    await expectData(nodeId);
    const engine = await openIndexedDbEngine(indexedDbName('test', nodeId));
    expect(await engine.get(Uint8Array.of(0x7f))).to.deep.equal(Uint8Array.of(1));
    await engine.close();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('redoes a rebuild that was cut short', async () => {
    const nodeId = `unfinished-${run}`;
    await nodeWithData(nodeId);
    // A rebuild deletes the state first and writes it last: cut short, the copy has none.
    const mirror = await rawCopy(nodeId, 'mirror');
    const tx = mirror.transaction(['records', 'copy'], 'readwrite');
    tx.objectStore('copy').delete('state');
    tx.objectStore('records').delete(IDBKeyRange.lowerBound(Uint8Array.of(0x01)));
    await promisifyRequest(tx);
    mirror.close();
    const repairs = await expectData(nodeId);
    expect(repairs.at(-1)).to.include({ copy: 'mirror', done: true });
    expect(repairs.at(-1)!.reason).to.include('unfinished');
    await deleteCopy(nodeId, 'primary');
    await expectData(nodeId);
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('refuses to start empty when both copies have vanished, and keeps refusing', async () => {
    const nodeId = `vanished-${run}`;
    const name = indexedDbName('test', nodeId);
    await nodeWithData(nodeId);
    await deleteCopy(nodeId, 'primary');
    await deleteCopy(nodeId, 'mirror');
    const error = await expectCode(
      openIndexedDbStorage({ clusterId: 'test', nodeId }),
      'corrupt',
      name,
    );
    expect(error.message).to.include('gone');
    // Still refused, even with the localStorage note gone: the refusal is in the database.
    localStorage.removeItem(`meshkv-storage-created:${name}`);
    await expectCode(openIndexedDbStorage({ clusterId: 'test', nodeId }), 'corrupt', name);
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
    const fresh = await openIndexedDbStorage({ clusterId: 'test', nodeId });
    expect((await fresh.load()).groups.size).to.equal(0);
    await fresh.close();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('keeps the mirror in its own storage bucket (its own backing store in Chromium)', async () => {
    const copies = await indexedDbCopies(indexedDbName('test', 'any'));
    expect(copies.map((c) => c.label)).to.deep.equal(['primary', 'mirror']);
    expect(copies[1]!.factory).to.not.equal(indexedDB);
  });

  it('refuses to start empty when a database it initialized lost its records', async () => {
    const nodeId = `emptied-${run}`;
    const name = indexedDbName('test', nodeId);
    await (await openIndexedDbStorage({ clusterId: 'test', nodeId })).close();
    const engine = await openIndexedDbEngine(name);
    await engine.clearRange(new Uint8Array(0), Uint8Array.of(0xff));
    await engine.close();
    const error = await expectCode(
      openIndexedDbStorage({ clusterId: 'test', nodeId }),
      'corrupt',
      name,
    );
    expect(error.message).to.include('empty');
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
    await (await openIndexedDbStorage({ clusterId: 'test', nodeId })).close();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('names one database per cluster and node', () => {
    expect(indexedDbName('c1', 'n1')).to.not.equal(indexedDbName('c1', 'n2'));
    expect(indexedDbName('c1', 'n1')).to.not.equal(indexedDbName('c2', 'n1'));
  });
});
