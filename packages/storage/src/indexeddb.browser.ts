/**
 * The IndexedDB backend for browsers, through idb-keyval with a store function of our own:
 * idb-keyval opens transactions without a durability option and Chrome (since 121)
 * defaults to 'relaxed', which may lose a committed transaction on power loss. Every
 * transaction here is opened with {durability: 'strict'}, so a write resolves only once
 * the browser has flushed it. One database per cluster and node, one object store of
 * binary keys (compared bytewise, as the engine contract needs); a batch is one
 * transaction, hence atomic.
 */
import { get, promisifyRequest, type UseStore } from 'idb-keyval';
import type { Engine, EngineOp, EnginePage } from './engine.ts';
import { StorageError } from './errors.ts';
import type { NodeStorage } from './storage.ts';
import { openEngineStorage } from './store.ts';

const objectStoreName = 'records';
/** The IndexedDB schema version (one object store); the record format has its own version. */
const schemaVersion = 1;

/** The database a node uses: one per cluster and node id. */
export function indexedDbName(clusterId: string, nodeId: string): string {
  return `meshkv/${clusterId}/${nodeId}`;
}

export async function openIndexedDbStorage(options: {
  readonly clusterId: string;
  readonly nodeId: string;
}): Promise<NodeStorage> {
  const dbName = indexedDbName(options.clusterId, options.nodeId);
  const storage = await openEngineStorage(await openIndexedDbEngine(dbName));
  // Only now is the node record durable: from here on an absent or empty database is a loss.
  pageStorage()?.setItem(markerKey(dbName), 'initialized');
  return storage;
}

/** A structured clone copies a view's whole buffer: store exactly the viewed bytes. */
function exact(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? bytes
    : bytes.slice();
}

/** Our keys are always fresh arrays, never views of a SharedArrayBuffer. */
function idbKey(key: Uint8Array): IDBValidKey {
  return key as Uint8Array<ArrayBuffer>;
}

/**
 * Holds a Web Lock named after the database for as long as the store is open, so that a
 * second store on the same database (another tab, a duplicated tab) fails with 'locked'
 * instead of interleaving its writes. The browser releases it when the page goes away.
 */
function lockDatabase(dbName: string, name: string): Promise<() => void> {
  return new Promise((resolve, reject) => {
    navigator.locks
      .request(`meshkv-storage:${dbName}`, { ifAvailable: true }, (lock) => {
        if (lock === null) {
          reject(new StorageError('locked', `${name}: already open in this or another tab`));
          return;
        }
        return new Promise<void>((release) => resolve(release));
      })
      .catch(reject);
  });
}

/** The raw key space of database `dbName` (store.ts uses it; tests plant bad records in it). */
export async function openIndexedDbEngine(dbName: string): Promise<Engine> {
  const name = `IndexedDB ${JSON.stringify(dbName)}`;
  const unlock = await lockDatabase(dbName, name);
  try {
    return await openUnlocked(dbName, name, unlock);
  } catch (error) {
    unlock();
    throw error;
  }
}

/**
 * Remembers, outside IndexedDB, that this profile initialized the database. Chromium was
 * seen to lose a whole database when SIGKILLed mid-write (README, "Limits"): gone, or
 * present but empty. Re-creating or re-initializing it would make the node silently forget
 * its Raft state (its votes), so while the note exists either is refused. localStorage is
 * per origin like IndexedDB, so clearing site data clears both; where it is missing
 * (workers) only the browser's data-loss report guards (lossOnCreate). Chromium writes
 * localStorage to disk lazily, so a kill soon after the first open can lose the note too.
 */
function markerKey(dbName: string): string {
  return `meshkv-storage-created:${dbName}`;
}

function pageStorage(): Storage | null {
  return typeof localStorage === 'undefined' ? null : localStorage;
}

/**
 * Object store that exists only in a database created in place of a lost one; its record
 * says why, and every open refuses it until deleteIndexedDbStorage().
 */
const lostStoreName = 'lost';
const lostKey = 'reason';

/** The refusal of a database the browser lost, saying why and how to start over. */
function vanished(name: string, why: string): StorageError {
  return new StorageError(
    'corrupt',
    `${name}: vanished: ${why}; refusing to start empty. deleteIndexedDbStorage() starts over.`,
  );
}

/**
 * Why a database that an open is about to create is really a lost one, or null for a first
 * start: the browser reports that it replaced a damaged backing store (Chromium, once, on
 * the open that found it: `dataLoss: 'total'`, e.g. "checksum mismatch"), or this profile
 * noted that it initialized the database before.
 */
function lossOnCreate(event: IDBVersionChangeEvent, dbName: string): string | null {
  const report = event as IDBVersionChangeEvent & { dataLoss?: string; dataLossMessage?: string };
  if (report.dataLoss !== undefined && report.dataLoss !== 'none') {
    return `the browser reported data loss '${report.dataLoss}' (${report.dataLossMessage ?? 'no message'}) and replaced it with an empty one`;
  }
  if (pageStorage()?.getItem(markerKey(dbName)) != null) {
    return 'this browser profile initialized it before, but it is gone (the browser lost it, e.g. in a crash)';
  }
  return null;
}

/**
 * Deletes a node's database (and the marker that it existed), for a node that leaves the
 * cluster for good or starts over after a 'corrupt' refusal. Fails with 'locked' while a
 * store has it open.
 */
export async function deleteIndexedDbStorage(options: {
  readonly clusterId: string;
  readonly nodeId: string;
}): Promise<void> {
  const dbName = indexedDbName(options.clusterId, options.nodeId);
  const name = `IndexedDB ${JSON.stringify(dbName)}`;
  const unlock = await lockDatabase(dbName, name);
  try {
    await promisifyRequest(indexedDB.deleteDatabase(dbName));
    pageStorage()?.removeItem(markerKey(dbName));
  } catch (error) {
    throw new StorageError('io', `${name}: cannot delete: ${String(error)}`, { cause: error });
  } finally {
    unlock();
  }
}

async function openUnlocked(dbName: string, name: string, unlock: () => void): Promise<Engine> {
  let db: IDBDatabase;
  try {
    const request = indexedDB.open(dbName, schemaVersion);
    request.onupgradeneeded = (event) => {
      if (event.oldVersion !== 0) return;
      const created = request.result;
      created.createObjectStore(objectStoreName);
      const loss = lossOnCreate(event, dbName);
      if (loss !== null) {
        // Written by this same upgrade transaction: the refusal outlives the browser's one
        // data-loss report and a lazily written (or later cleared) localStorage note.
        created.createObjectStore(lostStoreName).put(loss, lostKey);
      }
    };
    db = await promisifyRequest(request);
  } catch (error) {
    const found = error instanceof DOMException ? error.name : '';
    throw new StorageError(
      found === 'VersionError' ? 'unsupported_version' : 'io',
      `${name}: cannot open (schema version ${schemaVersion}): ${String(error)}`,
      { cause: error },
    );
  }
  if (db.objectStoreNames.contains(lostStoreName)) {
    const store = db.transaction(lostStoreName, 'readonly').objectStore(lostStoreName);
    const loss = await promisifyRequest(store.get(lostKey)).catch(() => undefined);
    db.close();
    throw vanished(name, typeof loss === 'string' ? loss : 'the browser lost it');
  }
  if (!db.objectStoreNames.contains(objectStoreName)) {
    db.close();
    throw new StorageError(
      'corrupt',
      `${name}: has no "${objectStoreName}" object store: not a meshkv store, refusing to open it`,
    );
  }
  if (pageStorage()?.getItem(markerKey(dbName)) != null) {
    const store = db.transaction(objectStoreName, 'readonly').objectStore(objectStoreName);
    if ((await promisifyRequest(store.count())) === 0) {
      db.close();
      throw vanished(
        name,
        'this browser profile initialized it before, but it is empty (the browser lost its records, e.g. in a crash)',
      );
    }
  }
  // Another tab upgrading or deleting the database: let it, and fail our later calls.
  db.onversionchange = () => db.close();

  const strict: UseStore = (mode, callback) =>
    Promise.resolve().then(() =>
      callback(
        db
          .transaction(objectStoreName, mode, { durability: 'strict' })
          .objectStore(objectStoreName),
      ),
    );
  const range = (lo: Uint8Array, hi: Uint8Array | null) =>
    hi === null
      ? IDBKeyRange.lowerBound(idbKey(lo))
      : IDBKeyRange.bound(idbKey(lo), idbKey(hi), false, true);

  return {
    name,
    async get(key) {
      const value = await get<Uint8Array>(idbKey(key), strict);
      return value;
    },
    scan(lo: Uint8Array, hi: Uint8Array | null): AsyncIterable<EnginePage> {
      // Both requests are issued now, in one transaction: the view is fixed at the call.
      const store = db.transaction(objectStoreName, 'readonly').objectStore(objectStoreName);
      const keys = promisifyRequest(store.getAllKeys(range(lo, hi)));
      const values = promisifyRequest(store.getAll(range(lo, hi)));
      return (async function* pages() {
        const [keyList, valueList] = await Promise.all([keys, values]);
        yield keyList.map((key, i) => [new Uint8Array(key as ArrayBuffer), valueList[i]] as const);
      })();
    },
    write: (ops: readonly EngineOp[]) =>
      strict('readwrite', (store) => {
        for (const op of ops) {
          if (op.type === 'put') store.put(exact(op.value), idbKey(op.key));
          else store.delete(idbKey(op.key));
        }
        return promisifyRequest(store.transaction);
      }),
    clearRange: (lo, hi) =>
      strict('readwrite', (store) => {
        store.delete(range(lo, hi));
        return promisifyRequest(store.transaction);
      }),
    async close() {
      db.close();
      unlock();
    },
  };
}
