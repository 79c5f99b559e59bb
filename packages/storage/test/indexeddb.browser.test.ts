import { expect } from 'chai';
import {
  deleteIndexedDbStorage,
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
    await foreignDatabase(indexedDbName('test', nodeId), 2, ['records']);
    await expectCode(
      openIndexedDbStorage({ clusterId: 'test', nodeId }),
      'unsupported_version',
      indexedDbName('test', nodeId),
    );
  });

  it('refuses a foreign database without our object store with corrupt', async () => {
    const nodeId = `foreign-${run}`;
    await foreignDatabase(indexedDbName('test', nodeId), 1, ['somethingElse']);
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

  it('refuses to start empty when a database it created has vanished', async () => {
    const nodeId = `vanished-${run}`;
    const name = indexedDbName('test', nodeId);
    const storage = await openIndexedDbStorage({ clusterId: 'test', nodeId });
    await storage.write({
      groups: [{ group: 1, create: true, hardState: { term: 3, vote: 'a', commit: 0 } }],
    });
    await storage.close();
    // What Chromium does to a backing store it cannot open: delete it behind our back.
    await new Promise((resolve, reject) => {
      const request = indexedDB.deleteDatabase(name);
      request.onsuccess = resolve;
      request.onerror = () => reject(request.error);
    });
    const error = await expectCode(
      openIndexedDbStorage({ clusterId: 'test', nodeId }),
      'corrupt',
      name,
    );
    expect(error.message).to.include('gone');
    // Still refused, even once the localStorage note is gone (Chromium writes it lazily, so
    // a crash can lose it): the refusal is written into the database that replaced it.
    const note = `meshkv-storage-created:${name}`;
    expect(localStorage.getItem(note), 'the note this test removes').to.not.equal(null);
    localStorage.removeItem(note);
    await expectCode(openIndexedDbStorage({ clusterId: 'test', nodeId }), 'corrupt', name);
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
    const fresh = await openIndexedDbStorage({ clusterId: 'test', nodeId });
    expect((await fresh.load()).groups.size).to.equal(0);
    await fresh.close();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
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
