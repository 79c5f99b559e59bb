import { expect } from 'chai';
import { promisifyRequest } from 'idb-keyval';
import {
  deleteIndexedDbStorage,
  type IndexedDbRepair,
  indexedDbName,
  openIndexedDbEngine,
  openIndexedDbStorage,
} from '../src/indexeddb.browser.ts';
import { deleteJournal, Journal, journalPath } from '../src/journal.browser.ts';
import { frameHeaderBytes } from '../src/journal-protocol.ts';
import { expectCode, prng, storageContract } from './contract.ts';

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
    await foreignDatabase(indexedDbName('test', nodeId), 3, ['records', 'meta']);
    await expectCode(
      openIndexedDbStorage({ clusterId: 'test', nodeId }),
      'unsupported_version',
      indexedDbName('test', nodeId),
    );
  });

  it('refuses a foreign database without our object store with corrupt', async () => {
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

  /** What Chromium does to a backing store it cannot open: deletes it behind our back. */
  function deleteDatabaseBehindOurBack(nodeId: string): Promise<unknown> {
    return promisifyRequest(indexedDB.deleteDatabase(indexedDbName('test', nodeId)));
  }

  /** Opens a node's database directly, as the browser keeps it. */
  function rawDatabase(nodeId: string): Promise<IDBDatabase> {
    return promisifyRequest(indexedDB.open(indexedDbName('test', nodeId)));
  }

  /** The OPFS directory of a node's journal. */
  async function journalDirectory(nodeId: string): Promise<FileSystemDirectoryHandle> {
    let dir = await navigator.storage.getDirectory();
    for (const part of journalPath(indexedDbName('test', nodeId))) {
      dir = await dir.getDirectoryHandle(part);
    }
    return dir;
  }

  /** The journal's generation files, by name. */
  async function journalFiles(nodeId: string): Promise<string[]> {
    const dir = await journalDirectory(nodeId);
    const names: string[] = [];
    for await (const name of (dir as unknown as { keys(): AsyncIterable<string> }).keys()) {
      names.push(name);
    }
    return names.sort();
  }

  /** A node with one group holding hard state and two KV pairs, closed. */
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
    await storage.write({ groups: [{ group: 1, kv: [{ key: 'k2', value: Uint8Array.of(8) }] }] });
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
    expect(await storage.get(1, 'k2')).to.deep.equal(Uint8Array.of(8));
    await storage.close();
    return repairs;
  }

  it('rebuilds a database the browser lost from its journal, reporting progress', async () => {
    const nodeId = `lost-database-${run}`;
    await nodeWithData(nodeId);
    await deleteDatabaseBehindOurBack(nodeId);
    const repairs = await expectData(nodeId);
    expect(repairs.length).to.be.at.least(2);
    for (const repair of repairs) {
      expect(repair).to.include({
        database: indexedDbName('test', nodeId),
        rebuilding: 'database',
      });
      expect(repair.reason).to.include('missing');
    }
    expect(repairs.at(-1)).to.include({ finished: true, unit: 'bytes' });
    expect(repairs.at(-1)!.done).to.equal(repairs.at(-1)!.total).and.be.greaterThan(0);
    expect(await expectData(nodeId), 'nothing left to repair').to.deep.equal([]);
    // And again: the rebuilt database carries on with the same journal.
    await deleteDatabaseBehindOurBack(nodeId);
    expect(await expectData(nodeId)).to.have.length.greaterThan(0);
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('rewrites a missing journal from the database, reporting progress', async () => {
    const nodeId = `lost-journal-${run}`;
    await nodeWithData(nodeId);
    await deleteJournal(indexedDbName('test', nodeId));
    const repairs = await expectData(nodeId);
    expect(repairs.at(-1)).to.include({ rebuilding: 'journal', finished: true, unit: 'records' });
    expect(repairs.at(-1)!.reason).to.include('journal is missing');
    expect(repairs.at(-1)!.total).to.be.greaterThan(2);
    // The rewritten journal alone restores everything.
    await deleteDatabaseBehindOurBack(nodeId);
    await expectData(nodeId);
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('rewrites a journal that is a batch behind the database (killed between the two)', async () => {
    const nodeId = `journal-behind-${run}`;
    await nodeWithData(nodeId);
    const db = await rawDatabase(nodeId);
    const tx = db.transaction(['records', 'meta'], 'readwrite');
    const seq = await promisifyRequest(tx.objectStore('meta').get('seq'));
    tx.objectStore('meta').put(seq + 1, 'seq');
    tx.objectStore('records').put(Uint8Array.of(1), Uint8Array.of(0x7f));
    await promisifyRequest(tx);
    db.close();
    const repairs = await expectData(nodeId);
    expect(repairs.at(-1)).to.include({ rebuilding: 'journal', finished: true });
    expect(repairs.at(-1)!.reason).to.include(`batches 0..${seq}, the database ${seq + 1}`);
    await deleteDatabaseBehindOurBack(nodeId);
    await expectData(nodeId);
    const engine = await openIndexedDbEngine(indexedDbName('test', nodeId));
    expect(await engine.get(Uint8Array.of(0x7f))).to.deep.equal(Uint8Array.of(1));
    await engine.close();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('replays into the database a batch only the journal has (killed between the two)', async () => {
    const nodeId = `journal-ahead-${run}`;
    const dbName = indexedDbName('test', nodeId);
    await nodeWithData(nodeId);
    const { journal, extent } = await Journal.open(dbName, 'test journal');
    await journal.append(extent!.lastSeq + 1, [
      { type: 'put', key: Uint8Array.of(0x7f), value: Uint8Array.of(1) },
      { type: 'delRange', key: Uint8Array.of(0x7e), end: Uint8Array.of(0x7e, 0xff) },
    ]);
    await journal.close();
    const planted = await rawDatabase(nodeId);
    const tx = planted.transaction('records', 'readwrite');
    tx.objectStore('records').put(Uint8Array.of(2), Uint8Array.of(0x7e, 1));
    await promisifyRequest(tx);
    planted.close();
    expect(await expectData(nodeId), 'a replay is no repair').to.deep.equal([]);
    const check = async () => {
      const engine = await openIndexedDbEngine(dbName);
      expect(await engine.get(Uint8Array.of(0x7f))).to.deep.equal(Uint8Array.of(1));
      expect(await engine.get(Uint8Array.of(0x7e, 1))).to.equal(undefined);
      await engine.close();
    };
    await check();
    // Both copies agree now: the database rebuilt from the journal alone says the same.
    await deleteDatabaseBehindOurBack(nodeId);
    await expectData(nodeId);
    await check();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('rebuilds a database that fell behind the start of the journal from the journal', async () => {
    const nodeId = `database-behind-${run}`;
    await nodeWithData(nodeId);
    // A journal rewritten from the database: its base is the database's last batch.
    await deleteJournal(indexedDbName('test', nodeId));
    await expectData(nodeId);
    const db = await rawDatabase(nodeId);
    const tx = db.transaction(['records', 'meta'], 'readwrite');
    const seq = await promisifyRequest(tx.objectStore('meta').get('seq'));
    tx.objectStore('meta').put(seq - 1, 'seq');
    // A record the journal does not have: the rebuild must replace, not merge.
    tx.objectStore('records').put(Uint8Array.of(1), Uint8Array.of(0x7f));
    await promisifyRequest(tx);
    db.close();
    const repairs = await expectData(nodeId);
    expect(repairs.at(-1)).to.include({ rebuilding: 'database', finished: true });
    expect(repairs.at(-1)!.reason).to.include(`up to ${seq - 1}, the journal ${seq}..${seq}`);
    expect(await expectData(nodeId)).to.deep.equal([]);
    const engine = await openIndexedDbEngine(indexedDbName('test', nodeId));
    expect(await engine.get(Uint8Array.of(0x7f))).to.equal(undefined);
    await engine.close();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('cuts a torn tail off the journal', async () => {
    const nodeId = `journal-torn-${run}`;
    await nodeWithData(nodeId);
    const opened = await Journal.open(indexedDbName('test', nodeId), 'test journal');
    await opened.journal.close();
    const framesEnd = opened.extent!.bytes;
    const [file] = await journalFiles(nodeId);
    const handle = await (await journalDirectory(nodeId)).getFileHandle(file!);
    expect((await handle.getFile()).size).to.equal(framesEnd);
    const writable = await handle.createWritable({ keepExistingData: true });
    // Half a frame: a header promising 1000 bytes, and 10 of them.
    const torn = new Uint8Array(26);
    new DataView(torn.buffer).setUint32(0, 1000);
    await writable.write({ type: 'write', position: framesEnd, data: torn });
    await writable.close();
    expect(await expectData(nodeId)).to.deep.equal([]);
    // Cut (an open that finds nothing to repair writes nothing).
    expect((await handle.getFile()).size).to.equal(framesEnd);
    await deleteDatabaseBehindOurBack(nodeId);
    await expectData(nodeId);
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('refuses a journal damaged in the middle, with intact frames after the damage', async () => {
    const nodeId = `journal-damaged-${run}`;
    await nodeWithData(nodeId);
    const opened = await Journal.open(indexedDbName('test', nodeId), 'test journal');
    await opened.journal.close();
    const extent = opened.extent!;
    expect(extent.lastSeq - extent.baseSeq, 'writes after the base').to.be.greaterThan(1);
    const [file] = await journalFiles(nodeId);
    const handle = await (await journalDirectory(nodeId)).getFileHandle(file!);
    const original = new Uint8Array(await (await handle.getFile()).arrayBuffer());
    // The first write after the base: a payload byte (its CRC fails), then its length field
    // (nothing says where the next frame starts any more).
    for (const at of [extent.baseBytes + frameHeaderBytes + 3, extent.baseBytes + 1]) {
      const damaged = original.slice();
      damaged[at]! ^= 0x40;
      const writable = await handle.createWritable();
      await writable.write(damaged);
      await writable.close();
      const error = await expectCode(
        openIndexedDbStorage({ clusterId: 'test', nodeId }),
        'corrupt',
        nodeId,
      );
      expect(error.message, `byte ${at}`).to.include('intact frames follow it');
    }
    const writable = await handle.createWritable();
    await writable.write(original);
    await writable.close();
    expect(await expectData(nodeId)).to.deep.equal([]);
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('redoes a rebuild of the database that was cut short', async () => {
    const nodeId = `rebuild-cut-${run}`;
    await nodeWithData(nodeId);
    const db = await rawDatabase(nodeId);
    const tx = db.transaction(['records', 'meta'], 'readwrite');
    tx.objectStore('meta').put('rebuilding from the journal', 'rebuilding');
    tx.objectStore('records').delete(IDBKeyRange.lowerBound(Uint8Array.of(0x01)));
    await promisifyRequest(tx);
    db.close();
    const repairs = await expectData(nodeId);
    expect(repairs.at(-1)).to.include({ rebuilding: 'database', finished: true });
    expect(await expectData(nodeId)).to.deep.equal([]);
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('rebuilds a database that lost its records but kept its journal', async () => {
    const nodeId = `emptied-${run}`;
    await nodeWithData(nodeId);
    const db = await rawDatabase(nodeId);
    await promisifyRequest(db.transaction('records', 'readwrite').objectStore('records').clear());
    db.close();
    const repairs = await expectData(nodeId);
    expect(repairs.at(-1)!.reason).to.include('empty');
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('rewrites the journal as it grows, and any generation restores everything', async () => {
    const nodeId = `rewrite-${run}`;
    const options = { clusterId: 'test', nodeId, journalRewriteBytes: 2048 };
    const storage = await openIndexedDbStorage(options);
    await storage.write({ groups: [{ group: 1, create: true }] });
    const generations = new Set<string>();
    for (let i = 0; i < 60; i++) {
      await storage.write({
        groups: [{ group: 1, kv: [{ key: `k${i % 7}`, value: new Uint8Array(100).fill(i) }] }],
      });
      generations.add((await journalFiles(nodeId)).join());
    }
    await storage.close();
    expect(generations.size, 'rewrites seen').to.be.greaterThan(3);
    expect(await journalFiles(nodeId)).to.have.length(1);
    await deleteDatabaseBehindOurBack(nodeId);
    const reopened = await openIndexedDbStorage(options);
    for (let k = 0; k < 7; k++) {
      const last = 59 - ((59 - k) % 7);
      expect(await reopened.get(1, `k${k}`)).to.deep.equal(new Uint8Array(100).fill(last));
    }
    await reopened.close();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('opens a schema version 1 database (records only), adding its journal', async () => {
    const nodeId = `version1-${run}`;
    const dbName = indexedDbName('test', nodeId);
    await foreignDatabase(dbName, 1, ['records']);
    const db = await rawDatabase(nodeId);
    const tx = db.transaction('records', 'readwrite');
    tx.objectStore('records').put(Uint8Array.of(1), Uint8Array.of(0x7f));
    await promisifyRequest(tx);
    db.close();
    const repairs: IndexedDbRepair[] = [];
    const engine = await openIndexedDbEngine(dbName, { onRepair: (r) => repairs.push(r) });
    await engine.close();
    expect(repairs.at(-1)).to.include({ rebuilding: 'journal', finished: true, total: 1 });
    await deleteDatabaseBehindOurBack(nodeId);
    const rebuilt = await openIndexedDbEngine(dbName);
    expect(await rebuilt.get(Uint8Array.of(0x7f))).to.deep.equal(Uint8Array.of(1));
    await rebuilt.close();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('waits for a journal file that a page going away still holds, then opens', async () => {
    const nodeId = `held-${run}`;
    await nodeWithData(nodeId);
    const { journal } = await Journal.open(indexedDbName('test', nodeId), 'the old page');
    const opening = expectData(nodeId);
    // Released while the open waits (or, on a slow machine, before it looks: same outcome).
    setTimeout(() => journal.close(), 1000);
    expect(await opening).to.deep.equal([]);
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('fails the open with io, naming the database, while its journal stays held', async () => {
    const nodeId = `held-forever-${run}`;
    await nodeWithData(nodeId);
    const { journal } = await Journal.open(indexedDbName('test', nodeId), 'another page');
    try {
      const error = await expectCode(
        openIndexedDbStorage({ clusterId: 'test', nodeId }),
        'io',
        indexedDbName('test', nodeId),
      );
      expect(error.message).to.include('journal');
    } finally {
      await journal.close();
    }
    await expectData(nodeId);
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('refuses a database whose batch number is not a count with corrupt', async () => {
    const nodeId = `bad-seq-${run}`;
    await nodeWithData(nodeId);
    const db = await rawDatabase(nodeId);
    await promisifyRequest(db.transaction('meta', 'readwrite').objectStore('meta').put(-1, 'seq'));
    db.close();
    const error = await expectCode(
      openIndexedDbStorage({ clusterId: 'test', nodeId }),
      'corrupt',
      indexedDbName('test', nodeId),
    );
    expect(error.message).to.include('batch number');
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('fails the open with io, saying why, where the origin private file system is missing', async () => {
    const nodeId = `no-opfs-${run}`;
    const original = Object.getOwnPropertyDescriptor(StorageManager.prototype, 'getDirectory')!;
    Object.defineProperty(StorageManager.prototype, 'getDirectory', {
      value: undefined,
      configurable: true,
    });
    try {
      const error = await expectCode(
        openIndexedDbStorage({ clusterId: 'test', nodeId }),
        'io',
        indexedDbName('test', nodeId),
      );
      expect(error.message).to.include('origin private file system');
    } finally {
      Object.defineProperty(StorageManager.prototype, 'getDirectory', original);
    }
    // The failed open freed its lock at once and created nothing: now it opens, as a new node.
    const storage = await openIndexedDbStorage({ clusterId: 'test', nodeId });
    expect((await storage.load()).groups.size).to.equal(0);
    await storage.close();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('refuses to start empty when the database and its journal are both lost, and keeps refusing', async () => {
    const nodeId = `vanished-${run}`;
    const name = indexedDbName('test', nodeId);
    await nodeWithData(nodeId);
    await deleteJournal(name);
    await deleteDatabaseBehindOurBack(nodeId);
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

  it('refuses to start empty when a database it initialized lost its records, journal too', async () => {
    const nodeId = `emptied-both-${run}`;
    const name = indexedDbName('test', nodeId);
    await (await openIndexedDbStorage({ clusterId: 'test', nodeId })).close();
    // Through the engine, so the journal records the emptying as well.
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

  it('keeps each open scan at the view of its call across pages, writes and range deletes', async () => {
    const nodeId = `scans-${run}`;
    const engine = await openIndexedDbEngine(indexedDbName('test', nodeId));
    const random = prng(7);
    const key = (i: number) => Uint8Array.of(0x40, i);
    const state = new Map<number, number>();
    // 60 values of 100 KiB: a scan of everything reads about six pages.
    const put = async (i: number, fill: number) => {
      await engine.write([
        { type: 'put', key: key(i), value: new Uint8Array(100 * 1024).fill(fill) },
      ]);
      state.set(i, fill);
    };
    for (let i = 0; i < 60; i += 1) await put(i, i);
    const snapshot = (lo: number, hi: number) =>
      [...state].filter(([i]) => i >= lo && i < hi).sort(([a], [b]) => a - b);
    const scans = [
      { lo: 0, hi: 60, expected: snapshot(0, 60), seen: [] as Array<[number, number]> },
      { lo: 10, hi: 45, expected: snapshot(10, 45), seen: [] as Array<[number, number]> },
    ].map((scan) => ({
      ...scan,
      pages: engine.scan(key(scan.lo), key(scan.hi))[Symbol.asyncIterator](),
    }));
    const finished = new Set<number>();
    while (finished.size < scans.length) {
      for (const [n, scan] of scans.entries()) {
        if (finished.has(n)) continue;
        const next = await scan.pages.next();
        if (next.done) finished.add(n);
        else for (const [k, v] of next.value) scan.seen.push([k[1]!, v[0]!]);
      }
      // Writes everywhere, and now and then a range delete.
      for (let n = 0; n < 3; n++) await put(Math.floor(random() * 70), 100 + n);
      if (random() < 0.3) {
        const lo = Math.floor(random() * 60);
        await engine.clearRange(key(lo), key(lo + 5));
        for (let i = lo; i < lo + 5; i++) state.delete(i);
      }
    }
    for (const scan of scans)
      expect(scan.seen, `scan ${scan.lo}..${scan.hi}`).to.deep.equal(scan.expected);
    await engine.close();
    await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
  });

  it('names one database per cluster and node', () => {
    expect(indexedDbName('c1', 'n1')).to.not.equal(indexedDbName('c1', 'n2'));
    expect(indexedDbName('c1', 'n1')).to.not.equal(indexedDbName('c2', 'n1'));
  });
});
