/**
 * The IndexedDB backend for browsers, through idb-keyval with a store function of our own:
 * idb-keyval opens transactions without a durability option and Chrome (since 121)
 * defaults to 'relaxed', which may lose a committed transaction on power loss. Every
 * transaction here is opened with {durability: 'strict'}, so a write resolves only once
 * the browser has flushed it. One database per cluster and node, one object store of
 * binary keys (compared bytewise, as the engine contract needs); a batch is one
 * transaction, hence atomic.
 *
 * Every database is kept twice, because Chromium loses a whole IndexedDB backing store now
 * and then after being killed mid-write (README, "Limits"): the primary copy in the
 * origin's default storage, the mirror in the storage bucket `meshkv-mirror` (its own
 * LevelDB in Chromium). A batch goes to the primary, then to the mirror, never to both at
 * once: a kill can tear at most one copy's log, and the torn copy is the one Chromium may
 * later lose. Each copy counts the batches it holds; an open that finds one copy missing,
 * unfinished or behind rebuilds it from the other before the store is used.
 */
import { get, promisifyRequest, type UseStore } from 'idb-keyval';
import type { Engine, EngineOp, EnginePage } from './engine.ts';
import { StorageError } from './errors.ts';
import type { NodeStorage } from './storage.ts';
import { openEngineStorage } from './store.ts';

const recordsStore = 'records';
/** One record, `state`: how many batches the copy holds (CopyState). */
const copyStore = 'copy';
const copyStateKey = 'state';
/** The IndexedDB schema version (object stores); the record format has its own version. */
const schemaVersion = 2;
/** The storage bucket holding the mirror copies where the Storage Buckets API exists. */
const mirrorBucketName = 'meshkv-mirror';
/** Records and bytes per transaction when a copy is rebuilt. */
const repairPageRecords = 1000;
const repairPageBytes = 8 * 1024 * 1024;

/**
 * A copy's `state` record. `writes` counts the batches (engine writes) the copy holds; a
 * copy without it is being rebuilt (or was never finished). `lost` marks a database whose
 * two copies were both gone: it stays refused until deleteIndexedDbStorage().
 */
type CopyState =
  | { readonly version: 1; readonly writes: number }
  | { readonly version: 1; readonly lost: string };

/** The database a node uses: one per cluster and node id. */
export function indexedDbName(clusterId: string, nodeId: string): string {
  return `meshkv/${clusterId}/${nodeId}`;
}

/** Progress of rebuilding one copy of a database from the other (see the module comment). */
export interface IndexedDbRepair {
  readonly database: string;
  /** The copy being rebuilt. */
  readonly copy: 'primary' | 'mirror';
  /** Why: missing (with the browser's data-loss report, if any), unfinished, or behind. */
  readonly reason: string;
  /** Records (and their key + value bytes) copied so far. */
  readonly records: number;
  readonly bytes: number;
  /** True once, on the last report: the copy is whole again. */
  readonly done: boolean;
}

export interface IndexedDbStorageOptions {
  readonly clusterId: string;
  readonly nodeId: string;
  /** Called while an open rebuilds a copy (after each page, and once when done). */
  readonly onRepair?: (progress: IndexedDbRepair) => void;
}

export async function openIndexedDbStorage(options: IndexedDbStorageOptions): Promise<NodeStorage> {
  const dbName = indexedDbName(options.clusterId, options.nodeId);
  const storage = await openEngineStorage(await openIndexedDbEngine(dbName, options.onRepair));
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

function keyRange(lo: Uint8Array, hi: Uint8Array | null, loOpen = false): IDBKeyRange {
  return hi === null
    ? IDBKeyRange.lowerBound(idbKey(lo), loOpen)
    : IDBKeyRange.bound(idbKey(lo), idbKey(hi), loOpen, true);
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

/**
 * Remembers, outside IndexedDB, that this profile initialized the database: when both
 * copies are found missing, the note tells a loss from a first start. localStorage is
 * per origin like IndexedDB, so clearing site data clears both; where it is missing
 * (workers) the browser's data-loss report is the only such sign.
 */
function markerKey(dbName: string): string {
  return `meshkv-storage-created:${dbName}`;
}

function pageStorage(): Storage | null {
  return typeof localStorage === 'undefined' ? null : localStorage;
}

/** Where the two copies of `dbName` live. */
interface CopyPlace {
  readonly label: 'primary' | 'mirror';
  readonly factory: IDBFactory;
  readonly dbName: string;
}

/**
 * The primary copy in the default storage, the mirror in the `meshkv-mirror` bucket. Without
 * the Storage Buckets API (Firefox, Safari) the mirror is a second database beside the
 * primary: there it guards against losing one database, not a whole backing store.
 */
export async function indexedDbCopies(dbName: string): Promise<readonly CopyPlace[]> {
  const buckets = (
    navigator as {
      storageBuckets?: { open(name: string, options?: object): Promise<{ indexedDB: IDBFactory }> };
    }
  ).storageBuckets;
  const mirror =
    buckets === undefined
      ? { factory: indexedDB, dbName: `${dbName}#mirror` }
      : { factory: (await buckets.open(mirrorBucketName)).indexedDB, dbName };
  return [
    { label: 'primary', factory: indexedDB, dbName },
    { label: 'mirror', ...mirror },
  ];
}

/**
 * Deletes a node's database (both copies, and the marker that it existed), for a node that
 * leaves the cluster for good or starts over after a 'corrupt' refusal. Fails with 'locked'
 * while a store has it open.
 */
export async function deleteIndexedDbStorage(options: {
  readonly clusterId: string;
  readonly nodeId: string;
}): Promise<void> {
  const dbName = indexedDbName(options.clusterId, options.nodeId);
  const name = `IndexedDB ${JSON.stringify(dbName)}`;
  const unlock = await lockDatabase(dbName, name);
  try {
    for (const place of await indexedDbCopies(dbName)) {
      await promisifyRequest(place.factory.deleteDatabase(place.dbName));
    }
    pageStorage()?.removeItem(markerKey(dbName));
  } catch (error) {
    throw new StorageError('io', `${name}: cannot delete: ${String(error)}`, { cause: error });
  } finally {
    unlock();
  }
}

/**
 * The raw key space of database `dbName`, both copies made whole (store.ts uses it; tests
 * plant bad records in it).
 */
export async function openIndexedDbEngine(
  dbName: string,
  onRepair?: (progress: IndexedDbRepair) => void,
): Promise<Engine> {
  const name = `IndexedDB ${JSON.stringify(dbName)}`;
  const unlock = await lockDatabase(dbName, name);
  const opened: Copy[] = [];
  try {
    for (const place of await indexedDbCopies(dbName)) {
      opened.push(await openCopy(place, name));
    }
    const [primary, mirror] = opened as [Copy, Copy];
    const writes = await reconcile(primary, mirror, dbName, name, onRepair);
    return mirroredEngine(name, primary, mirror, writes, unlock);
  } catch (error) {
    for (const copy of opened) copy.db.close();
    unlock();
    throw error;
  }
}

/** One opened copy, as found. */
interface Copy {
  readonly label: 'primary' | 'mirror';
  readonly db: IDBDatabase;
  /** The open created it: it did not exist. */
  readonly created: boolean;
  /** The browser's report that it lost the data of this copy's backing store, if it did. */
  readonly dataLoss: string | null;
  readonly state: CopyState | undefined;
  readonly strict: UseStore;
}

async function openCopy(place: CopyPlace, name: string): Promise<Copy> {
  const where = `${name} (${place.label})`;
  let created = false;
  let olderSchema = 0;
  let dataLoss: string | null = null;
  let db: IDBDatabase;
  try {
    const request = place.factory.open(place.dbName, schemaVersion);
    request.onupgradeneeded = (event) => {
      if (event.oldVersion !== 0) {
        // Only a development build before the mirror wrote schema version 1.
        olderSchema = event.oldVersion;
        request.transaction?.abort();
        return;
      }
      created = true;
      // Chromium's report on the open that found its backing store damaged and replaced it.
      const loss = event as IDBVersionChangeEvent & { dataLoss?: string; dataLossMessage?: string };
      if (loss.dataLoss !== undefined && loss.dataLoss !== 'none') {
        dataLoss = `the browser reported data loss '${loss.dataLoss}': ${loss.dataLossMessage ?? ''}`;
      }
      request.result.createObjectStore(recordsStore);
      request.result.createObjectStore(copyStore);
    };
    db = await promisifyRequest(request);
  } catch (error) {
    if (olderSchema !== 0) {
      throw new StorageError(
        'unsupported_version',
        `${where}: has schema version ${olderSchema}, written by a development build before copies were mirrored (this one needs ${schemaVersion}); deleteIndexedDbStorage() starts over`,
      );
    }
    const found = error instanceof DOMException ? error.name : '';
    throw new StorageError(
      found === 'VersionError' ? 'unsupported_version' : 'io',
      `${where}: cannot open with schema version ${schemaVersion}: ${String(error)}`,
      { cause: error },
    );
  }
  for (const store of [recordsStore, copyStore]) {
    if (!db.objectStoreNames.contains(store)) {
      db.close();
      throw new StorageError(
        'corrupt',
        `${where}: has no "${store}" object store: not a meshkv store, refusing to open it`,
      );
    }
  }
  // Another tab upgrading or deleting the database: let it, and fail our later calls.
  db.onversionchange = () => db.close();
  const strict: UseStore = (mode, callback) =>
    Promise.resolve().then(() =>
      callback(
        db
          .transaction([recordsStore, copyStore], mode, { durability: 'strict' })
          .objectStore(recordsStore),
      ),
    );
  let state: CopyState | undefined;
  try {
    state = decodeCopyState(
      await strict('readonly', (store) =>
        promisifyRequest(store.transaction.objectStore(copyStore).get(copyStateKey)),
      ),
      where,
    );
  } catch (error) {
    db.close();
    throw error;
  }
  return { label: place.label, db, created, dataLoss, state, strict };
}

function decodeCopyState(value: unknown, where: string): CopyState | undefined {
  if (value === undefined) return undefined;
  const record = value as Partial<{ version: unknown; writes: unknown; lost: unknown }>;
  if (typeof value === 'object' && value !== null && record.version === 1) {
    if (Number.isSafeInteger(record.writes) && (record.writes as number) >= 0) {
      return { version: 1, writes: record.writes as number };
    }
    if (typeof record.lost === 'string') return { version: 1, lost: record.lost };
  }
  throw new StorageError(
    'corrupt',
    `${where}: copy state ${JSON.stringify(value)} is not one meshkv writes`,
  );
}

function countRecords(copy: Copy): Promise<number> {
  return copy.strict('readonly', (store) => promisifyRequest(store.count()));
}

function putState(copy: Copy, state: CopyState): Promise<void> {
  return copy.strict('readwrite', (store) => {
    store.transaction.objectStore(copyStore).put(state, copyStateKey);
    return promisifyRequest(store.transaction);
  });
}

/**
 * Makes both copies whole and equal, or refuses. Returns how many batches they hold.
 * - Both hold all their batches: the one behind (a kill between the two writes of a batch)
 *   is rebuilt from the other.
 * - One is missing or unfinished: it is rebuilt from the other.
 * - Neither: a first start if both are empty and nothing says the database existed;
 *   otherwise both were lost, which is marked in both and refused from then on.
 */
async function reconcile(
  primary: Copy,
  mirror: Copy,
  dbName: string,
  name: string,
  onRepair: ((progress: IndexedDbRepair) => void) | undefined,
): Promise<number> {
  for (const copy of [primary, mirror]) {
    if (copy.state !== undefined && 'lost' in copy.state) {
      throw new StorageError('corrupt', `${name}: ${copy.state.lost}`);
    }
  }
  const writesOf = (copy: Copy) =>
    copy.state !== undefined && 'writes' in copy.state ? copy.state.writes : null;
  const primaryWrites = writesOf(primary);
  const mirrorWrites = writesOf(mirror);
  const whyBroken = (copy: Copy) =>
    copy.created
      ? `it was missing${copy.dataLoss === null ? '' : ` (${copy.dataLoss})`}`
      : 'it was left unfinished';

  let writes: number;
  if (primaryWrites !== null && mirrorWrites !== null) {
    if (primaryWrites === mirrorWrites) {
      writes = primaryWrites;
    } else {
      const [source, target] = primaryWrites > mirrorWrites ? [primary, mirror] : [mirror, primary];
      writes = Math.max(primaryWrites, mirrorWrites);
      const reason = `it holds ${Math.min(primaryWrites, mirrorWrites)} batches, the ${source.label} ${writes}`;
      await rebuild(target, source, writes, dbName, reason, onRepair);
    }
  } else if (primaryWrites !== null || mirrorWrites !== null) {
    const [source, target] = primaryWrites !== null ? [primary, mirror] : [mirror, primary];
    writes = (primaryWrites ?? mirrorWrites) as number;
    await rebuild(target, source, writes, dbName, whyBroken(target), onRepair);
  } else {
    const empty = (await countRecords(primary)) === 0 && (await countRecords(mirror)) === 0;
    const lossReported = primary.dataLoss ?? mirror.dataLoss;
    const initializedBefore = pageStorage()?.getItem(markerKey(dbName)) != null;
    const signs = [
      ...(initializedBefore ? ['this browser profile initialized it before'] : []),
      ...(lossReported === null ? [] : [lossReported]),
      ...(empty ? [] : ['records without a batch count are left']),
    ];
    if (signs.length > 0) {
      const lost = `vanished: both of its copies are gone or unfinished (${signs.join('; ')}): the browser lost them, e.g. in a crash; refusing to start empty. deleteIndexedDbStorage() starts over.`;
      // Remembered in both, so that later opens refuse too instead of starting empty.
      for (const copy of [primary, mirror]) await putState(copy, { version: 1, lost });
      throw new StorageError('corrupt', `${name}: ${lost}`);
    }
    writes = 0;
    for (const copy of [primary, mirror]) await putState(copy, { version: 1, writes });
  }
  if (writes > 0 && (await countRecords(primary)) === 0) {
    throw new StorageError(
      'corrupt',
      `${name}: vanished: it is empty, though it holds ${writes} batches (its records were deleted behind its back); refusing to start empty. deleteIndexedDbStorage() starts over.`,
    );
  }
  return writes;
}

/**
 * Rebuilds `target` as a copy of `source` (which is not written meanwhile). Its state is
 * deleted first and written last, so a rebuild cut short is found unfinished and redone.
 */
async function rebuild(
  target: Copy,
  source: Copy,
  writes: number,
  dbName: string,
  reason: string,
  onRepair: ((progress: IndexedDbRepair) => void) | undefined,
): Promise<void> {
  await target.strict('readwrite', (store) => {
    store.transaction.objectStore(copyStore).delete(copyStateKey);
    store.clear();
    return promisifyRequest(store.transaction);
  });
  let records = 0;
  let bytes = 0;
  const report = (done: boolean) =>
    onRepair?.({ database: dbName, copy: target.label, reason, records, bytes, done });
  let after: Uint8Array | null = null;
  for (;;) {
    const range: IDBKeyRange | undefined = after === null ? undefined : keyRange(after, null, true);
    const [keys, values]: [IDBValidKey[], Uint8Array[]] = await source.strict('readonly', (store) =>
      Promise.all([
        promisifyRequest(store.getAllKeys(range, repairPageRecords)),
        promisifyRequest(store.getAll(range, repairPageRecords)) as Promise<Uint8Array[]>,
      ]),
    );
    if (keys.length === 0) break;
    // Pages up to repairPageRecords records; a transaction stops at repairPageBytes.
    let start = 0;
    while (start < keys.length) {
      let end = start;
      let pageBytes = 0;
      while (end < keys.length && (end === start || pageBytes < repairPageBytes)) {
        pageBytes += (keys[end] as ArrayBuffer).byteLength + values[end]!.byteLength;
        end++;
      }
      await target.strict('readwrite', (store) => {
        for (let i = start; i < end; i++) store.put(values[i], keys[i]);
        return promisifyRequest(store.transaction);
      });
      records += end - start;
      bytes += pageBytes;
      start = end;
    }
    after = new Uint8Array(keys[keys.length - 1] as ArrayBuffer);
    report(false);
  }
  await putState(target, { version: 1, writes });
  report(true);
}

function mirroredEngine(
  name: string,
  primary: Copy,
  mirror: Copy,
  writesAtOpen: number,
  unlock: () => void,
): Engine {
  let writes = writesAtOpen;
  const writeCopy = (copy: Copy, ops: readonly EngineOp[], state: CopyState) =>
    copy.strict('readwrite', (store) => {
      for (const op of ops) {
        if (op.type === 'put') store.put(exact(op.value), idbKey(op.key));
        else store.delete(idbKey(op.key));
      }
      store.transaction.objectStore(copyStore).put(state, copyStateKey);
      return promisifyRequest(store.transaction);
    });
  const clearCopy = (copy: Copy, lo: Uint8Array, hi: Uint8Array) =>
    copy.strict('readwrite', (store) => {
      store.delete(keyRange(lo, hi));
      return promisifyRequest(store.transaction);
    });
  return {
    name,
    get: (key) => get<Uint8Array>(idbKey(key), primary.strict),
    scan(lo: Uint8Array, hi: Uint8Array | null): AsyncIterable<EnginePage> {
      // Both requests are issued now, in one transaction: the view is fixed at the call.
      const store = primary.db.transaction(recordsStore, 'readonly').objectStore(recordsStore);
      const keys = promisifyRequest(store.getAllKeys(keyRange(lo, hi)));
      const values = promisifyRequest(store.getAll(keyRange(lo, hi)));
      return (async function* pages() {
        const [keyList, valueList] = await Promise.all([keys, values]);
        yield keyList.map((key, i) => [new Uint8Array(key as ArrayBuffer), valueList[i]] as const);
      })();
    },
    async write(ops) {
      // One copy after the other (module comment): a kill tears at most one of them.
      const state: CopyState = { version: 1, writes: writes + 1 };
      await writeCopy(primary, ops, state);
      await writeCopy(mirror, ops, state);
      writes++;
    },
    async clearRange(lo, hi) {
      await clearCopy(primary, lo, hi);
      await clearCopy(mirror, lo, hi);
    },
    async close() {
      primary.db.close();
      mirror.db.close();
      unlock();
    },
  };
}
