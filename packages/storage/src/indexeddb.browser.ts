/**
 * The IndexedDB backend for browsers, through idb-keyval with a store function of our own:
 * idb-keyval opens transactions without a durability option and Chrome (since 121)
 * defaults to 'relaxed', which may lose a committed transaction on power loss. Every
 * transaction here is opened with {durability: 'strict'}, so a write resolves only once
 * the browser has flushed it. One database per cluster and node, one object store of
 * binary keys (compared bytewise, as the engine contract needs); a batch is one
 * transaction, hence atomic.
 *
 * Every batch is first appended to a journal in OPFS (journal.browser.ts) and resolves
 * once the journal has it; the database follows behind (write-behind.ts), a few batches
 * per transaction: Chromium can lose the whole database when killed mid-write (README,
 * "Limits"), and then the open rebuilds it from the journal. Each transaction stores the
 * number of its last batch beside the records, so an open can tell which copy a crash
 * left behind and bring it up to the other: the database replays the journal's extra
 * batches (the usual case), or the journal is rewritten from the database.
 */
import { get, promisifyRequest, type UseStore } from 'idb-keyval';
import {
  DecodeError,
  decodeJournalBasePage,
  decodeJournalWrite,
  type JournalOp,
  JournalTag,
} from './codec.ts';
import type { Engine, EngineOp } from './engine.ts';
import { StorageError } from './errors.ts';
import { idbKey, ScanViews } from './indexeddb-scan.browser.ts';
import { deleteJournal, Journal } from './journal.browser.ts';
import type { JournalExtent, JournalFrame } from './journal-protocol.ts';
import type { NodeStorage } from './storage.ts';
import { openEngineStorage } from './store.ts';
import { tryWebLock } from './web-lock.browser.ts';
import { DatabaseBehind } from './write-behind.ts';

export { tryWebLock };

const objectStoreName = 'records';
/**
 * Beside the records: `seq` (the number of the last batch, u53), and while set, `lost`
 * (why the database is refused) or `rebuilding` (why it is being rebuilt from the journal).
 */
const metaStoreName = 'meta';
const seqKey = 'seq';
const lostKey = 'lost';
const rebuildingKey = 'rebuilding';
/** The IndexedDB schema version (the two object stores); the record format has its own version. */
const schemaVersion = 2;
/** The journal is rewritten once its writes exceed this and twice its base. */
const defaultJournalRewriteBytes = 64 * 1024 * 1024;
/** Journal bytes read per request (and, rebuilding, written per transaction) at open. */
const repairStepBytes = 4 * 1024 * 1024;

/** The database a node uses: one per cluster and node id. */
export function indexedDbName(clusterId: string, nodeId: string): string {
  return `meshkv/${clusterId}/${nodeId}`;
}

/** Progress of an open that rebuilds one copy of a node's data from the other. */
export interface IndexedDbRepair {
  /** The IndexedDB database name. */
  readonly database: string;
  /** The copy being rebuilt: the database (from the journal) or the journal (from it). */
  readonly rebuilding: 'database' | 'journal';
  /** Why, e.g. "the database is missing (the browser lost it)". */
  readonly reason: string;
  /** Work done of the total: journal bytes read, or database records copied. */
  readonly done: number;
  readonly total: number;
  readonly unit: 'bytes' | 'records';
  readonly finished: boolean;
}

export interface IndexedDbOptions {
  readonly clusterId: string;
  readonly nodeId: string;
  /** Called as an open rebuilds a copy (rare: after the browser lost data in a crash). */
  readonly onRepair?: (progress: IndexedDbRepair) => void;
  /** The journal is rewritten from the database once its writes exceed this (default 64 MiB) and twice its base. */
  readonly journalRewriteBytes?: number;
}

export async function openIndexedDbStorage(options: IndexedDbOptions): Promise<NodeStorage> {
  const dbName = indexedDbName(options.clusterId, options.nodeId);
  const storage = await openEngineStorage(await openIndexedDbEngine(dbName, options));
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

/**
 * Holds a Web Lock named after the database for as long as the store is open, so that a
 * second store on the same database (another tab, a duplicated tab) fails with 'locked'
 * instead of interleaving its writes. The browser releases it when the page goes away.
 */
async function lockDatabase(dbName: string, name: string): Promise<() => Promise<void>> {
  const unlock = await tryWebLock(`meshkv-storage:${dbName}`);
  if (unlock === null) {
    throw new StorageError('locked', `${name}: already open in this or another tab`);
  }
  return unlock;
}

/** The raw key space of database `dbName` (store.ts uses it; tests plant bad records in it). */
export async function openIndexedDbEngine(
  dbName: string,
  options: Pick<IndexedDbOptions, 'onRepair' | 'journalRewriteBytes'> = {},
): Promise<Engine> {
  const name = `IndexedDB ${JSON.stringify(dbName)}`;
  const unlock = await lockDatabase(dbName, name);
  try {
    return await openUnlocked(dbName, name, unlock, options);
  } catch (error) {
    await unlock();
    throw error;
  }
}

/**
 * Remembers, outside IndexedDB, that this profile initialized the database. Chromium was
 * seen to lose a whole database when SIGKILLed mid-write (README, "Limits"): gone, or
 * present but empty. Re-creating or re-initializing it would make the node silently forget
 * its Raft state (its votes), so while the note exists either is rebuilt from the journal
 * or, without one, refused. localStorage is
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
 * Deletes a node's database, its journal and the marker that it existed, for a node that
 * leaves the cluster for good or starts over after a 'corrupt' refusal. Fails with
 * 'locked' while a store has it open. The journal goes first: a crash midway leaves the
 * database, which the next open keeps (call this again), never a journal that would bring
 * a deleted database back.
 */
export async function deleteIndexedDbStorage(options: {
  readonly clusterId: string;
  readonly nodeId: string;
}): Promise<void> {
  const dbName = indexedDbName(options.clusterId, options.nodeId);
  const name = `IndexedDB ${JSON.stringify(dbName)}`;
  const unlock = await lockDatabase(dbName, name);
  try {
    await deleteJournal(dbName);
    await promisifyRequest(indexedDB.deleteDatabase(dbName));
    pageStorage()?.removeItem(markerKey(dbName));
  } catch (error) {
    throw new StorageError('io', `${name}: cannot delete: ${String(error)}`, { cause: error });
  } finally {
    await unlock();
  }
}

/** What the meta store says about the database as opened. */
interface Meta {
  readonly seq: number;
  readonly lost: string | undefined;
  readonly rebuilding: string | undefined;
}

function strictTransaction(db: IDBDatabase, stores: string[]): IDBTransaction {
  return db.transaction(stores, 'readwrite', { durability: 'strict' });
}

function range(lo: Uint8Array, hi: Uint8Array | null): IDBKeyRange {
  return hi === null
    ? IDBKeyRange.lowerBound(idbKey(lo))
    : IDBKeyRange.bound(idbKey(lo), idbKey(hi), false, true);
}

function applyOps(records: IDBObjectStore, ops: readonly JournalOp[]): void {
  for (const op of ops) {
    if (op.type === 'put') records.put(exact(op.value), idbKey(op.key));
    else if (op.type === 'del') records.delete(idbKey(op.key));
    // An empty range deletes nothing (and IDBKeyRange refuses to express it).
    else if (indexedDB.cmp(idbKey(op.key), idbKey(op.end)) < 0) {
      records.delete(range(op.key, op.end));
    }
  }
}

async function openUnlocked(
  dbName: string,
  name: string,
  unlock: () => Promise<void>,
  options: Pick<IndexedDbOptions, 'onRepair' | 'journalRewriteBytes'>,
): Promise<Engine> {
  const opened = await Journal.open(dbName, name);
  const journal = opened.journal;
  let db: IDBDatabase | null = null;
  try {
    db = await openDatabase(dbName, name, opened.extent !== null);
    const engine = await reconcile(db, journal, opened.extent, dbName, name, unlock, options);
    return engine;
  } catch (error) {
    db?.close();
    await journal.close().catch(() => {});
    throw error;
  }
}

/**
 * Opens (creating or upgrading) the database. A database created where this profile had
 * one before, or where the browser reports a loss, is marked in the same upgrade
 * transaction, so the mark survives a crash right after: `rebuilding` if the journal can
 * restore it, `lost` (refused for good) if not.
 */
async function openDatabase(
  dbName: string,
  name: string,
  hasJournal: boolean,
): Promise<IDBDatabase> {
  try {
    const request = indexedDB.open(dbName, schemaVersion);
    request.onupgradeneeded = (event) => {
      const upgrading = request.result;
      if (event.oldVersion === 0) upgrading.createObjectStore(objectStoreName);
      // Version 1 had only the records; its missing journal is written on this open.
      if (event.oldVersion <= 1) upgrading.createObjectStore(metaStoreName);
      if (event.oldVersion !== 0) return;
      const meta = request.transaction!.objectStore(metaStoreName);
      const loss = lossOnCreate(event, dbName);
      if (hasJournal) {
        meta.put(`the database is missing${loss === null ? '' : `: ${loss}`}`, rebuildingKey);
      } else if (loss !== null) {
        meta.put(loss, lostKey);
      }
    };
    return await promisifyRequest(request);
  } catch (error) {
    const found = error instanceof DOMException ? error.name : '';
    throw new StorageError(
      found === 'VersionError' ? 'unsupported_version' : 'io',
      `${name}: cannot open (schema version ${schemaVersion}): ${String(error)}`,
      { cause: error },
    );
  }
}

/** The meta store's entries; a database that has had no batch yet has no `seq`. */
async function readMeta(db: IDBDatabase, name: string): Promise<Meta> {
  const meta = db.transaction(metaStoreName, 'readonly').objectStore(metaStoreName);
  const [seq = 0, lost, rebuilding] = await Promise.all(
    [seqKey, lostKey, rebuildingKey].map((key) => promisifyRequest(meta.get(key))),
  );
  if (!Number.isSafeInteger(seq) || seq < 0) {
    throw new StorageError(
      'corrupt',
      `${name}: its batch number (meta "${seqKey}") is ${String(seq)}, not a count`,
    );
  }
  return { seq, lost, rebuilding };
}

async function reconcile(
  db: IDBDatabase,
  journal: Journal,
  found: JournalExtent | null,
  dbName: string,
  name: string,
  unlock: () => Promise<void>,
  options: Pick<IndexedDbOptions, 'onRepair' | 'journalRewriteBytes'>,
): Promise<Engine> {
  for (const store of [objectStoreName, metaStoreName]) {
    if (!db.objectStoreNames.contains(store)) {
      throw new StorageError(
        'corrupt',
        `${name}: has no "${store}" object store: not a meshkv store, refusing to open it`,
      );
    }
  }
  const meta = await readMeta(db, name);
  if (meta.lost !== undefined) throw vanished(name, String(meta.lost));
  const initialized = pageStorage()?.getItem(markerKey(dbName)) != null;
  const isEmpty = async () =>
    (await promisifyRequest(
      db.transaction(objectStoreName, 'readonly').objectStore(objectStoreName).count(),
    )) === 0;
  const emptied =
    'this browser profile initialized it before, but it is empty (the browser lost its records, e.g. in a crash)';
  let rebuilding = meta.rebuilding === undefined ? null : String(meta.rebuilding);
  if (rebuilding === null && initialized && (await isEmpty())) rebuilding = emptied;
  const report = (
    rebuilt: IndexedDbRepair['rebuilding'],
    reason: string,
  ): ((done: number, total: number, finished: boolean) => void) => {
    return (done, total, finished) =>
      options.onRepair?.({
        database: dbName,
        rebuilding: rebuilt,
        reason,
        done,
        total,
        unit: rebuilt === 'database' ? 'bytes' : 'records',
        finished,
      });
  };

  const views = new ScanViews(db, objectStoreName);
  let seq = meta.seq;
  let extent: JournalExtent;
  if (rebuilding !== null) {
    if (found === null) {
      const why = `${rebuilding}, and its journal is gone too`;
      const tx = strictTransaction(db, [metaStoreName]);
      tx.objectStore(metaStoreName).put(why, lostKey);
      await promisifyRequest(tx);
      throw vanished(name, why);
    }
    await rebuildDatabase(db, journal, found, report('database', rebuilding));
    if (initialized && (await isEmpty())) {
      throw vanished(name, `${emptied}, and so is its journal`);
    }
    seq = found.lastSeq;
    extent = found;
  } else if (found !== null && found.lastSeq === seq) {
    extent = found;
  } else if (found !== null && found.lastSeq > seq) {
    // Every frame and every transaction holds whole batches, so the longer copy wins (an
    // unacknowledged batch may stay). Normally: killed after the journal had a batch and
    // before the database committed it, and the database replays that batch.
    if (found.baseSeq <= seq) {
      await rollForward(db, journal, seq, found.lastSeq);
    } else {
      const why = `the database holds batches up to ${seq}, the journal ${found.baseSeq}..${found.lastSeq}`;
      await rebuildDatabase(db, journal, found, report('database', why));
    }
    seq = found.lastSeq;
    extent = found;
  } else {
    const why =
      found === null
        ? 'the journal is missing'
        : `the journal holds batches ${found.baseSeq}..${found.lastSeq}, the database ${seq}`;
    extent = await rewriteJournal(db, views, journal, seq, report('journal', why));
  }

  // Another tab upgrading or deleting the database: let it, and fail our later calls.
  db.onversionchange = () => db.close();
  const rewriteBytes = options.journalRewriteBytes ?? defaultJournalRewriteBytes;

  const strict: UseStore = (mode, callback) =>
    Promise.resolve().then(() =>
      callback(
        db
          .transaction(objectStoreName, mode, { durability: 'strict' })
          .objectStore(objectStoreName),
      ),
    );

  /** One transaction of `ops` and the batch number `batchSeq`, strict. */
  const writeDatabase = (ops: readonly JournalOp[], batchSeq: number): Promise<void> => {
    const tx = strictTransaction(db, [objectStoreName, metaStoreName]);
    applyOps(tx.objectStore(objectStoreName), ops);
    tx.objectStore(metaStoreName).put(batchSeq, seqKey);
    return promisifyRequest(tx);
  };
  const behind = new DatabaseBehind(name, views, writeDatabase);

  /** A batch is acknowledged once the journal has it; the database follows behind. */
  async function commit(ops: readonly EngineOp[]): Promise<void> {
    behind.check();
    while (behind.full) await behind.settle();
    const next = seq + 1;
    extent = await journal.append(next, ops);
    seq = next;
    behind.add(next, ops);
    await rewriteJournalIfLong();
  }

  /** A range deletion goes into both copies at once, once the database caught up. */
  async function commitRange(op: JournalOp): Promise<void> {
    await behind.drain();
    const next = seq + 1;
    await views.preserve([op]);
    const [, appended] = await Promise.all([writeDatabase([op], next), journal.append(next, [op])]);
    seq = next;
    extent = appended;
    await rewriteJournalIfLong();
  }

  /** A new generation from the database (caught up first: it must hold batch `seq`). */
  async function rewriteJournalIfLong(): Promise<void> {
    const written = extent.bytes - extent.baseBytes;
    if (written <= Math.max(rewriteBytes, 2 * extent.baseBytes)) return;
    await behind.drain();
    extent = await journal.rewrite(seq, views.scan(new Uint8Array(0), null));
  }

  return {
    name,
    async get(key) {
      behind.check();
      const pending = behind.lookup(key);
      if (pending !== undefined) return pending === null ? undefined : pending.slice();
      return get<Uint8Array>(idbKey(key), strict);
    },
    scan: (lo, hi) => views.scan(lo, hi, behind.pendingIn(lo, hi)),
    write: (ops: readonly EngineOp[]) => commit(ops),
    clearRange: (lo, hi) => commitRange({ type: 'delRange', key: lo, end: hi }),
    async close() {
      // Not needed for safety (the journal has every batch), but the next open has
      // nothing to replay.
      await behind.drain().catch(() => {});
      db.close();
      try {
        await journal.close();
      } finally {
        await unlock();
      }
    },
  };
}

/**
 * Rebuilds the database from the journal: marks it `rebuilding` and empties it, replays
 * the journal in steps, and clears the mark with the last seq in the final transaction. A
 * crash midway leaves the mark, so the next open starts over.
 */
async function rebuildDatabase(
  db: IDBDatabase,
  journal: Journal,
  extent: JournalExtent,
  progress: (done: number, total: number, finished: boolean) => void,
): Promise<void> {
  const start = strictTransaction(db, [objectStoreName, metaStoreName]);
  start.objectStore(objectStoreName).clear();
  start.objectStore(metaStoreName).put('rebuilding from the journal', rebuildingKey);
  await promisifyRequest(start);
  let done = 0;
  progress(done, extent.bytes, false);
  for await (const frames of journal.frames(repairStepBytes)) {
    const tx = strictTransaction(db, [objectStoreName]);
    const records = tx.objectStore(objectStoreName);
    for (const frame of frames) {
      if (frame.kind === JournalTag.BasePage) {
        for (const [key, value] of decodeFrame(journal, frame, decodeJournalBasePage)) {
          records.put(exact(value), idbKey(key));
        }
      } else if (frame.kind === JournalTag.Write) {
        applyOps(records, decodeFrame(journal, frame, decodeJournalWrite));
      }
      done += frame.payload.length;
    }
    await promisifyRequest(tx);
    progress(done, extent.bytes, false);
  }
  const end = strictTransaction(db, [metaStoreName]);
  end.objectStore(metaStoreName).put(extent.lastSeq, seqKey);
  end.objectStore(metaStoreName).delete(rebuildingKey);
  await promisifyRequest(end);
  progress(extent.bytes, extent.bytes, true);
}

/** Applies the journal's batches after `seq` to the database, in one transaction. */
async function rollForward(
  db: IDBDatabase,
  journal: Journal,
  seq: number,
  lastSeq: number,
): Promise<void> {
  const tail: JournalOp[][] = [];
  for await (const frames of journal.frames(repairStepBytes)) {
    for (const frame of frames) {
      if (frame.kind === JournalTag.Write && frame.seq > seq) {
        tail.push(decodeFrame(journal, frame, decodeJournalWrite));
      }
    }
  }
  const tx = strictTransaction(db, [objectStoreName, metaStoreName]);
  for (const ops of tail) applyOps(tx.objectStore(objectStoreName), ops);
  tx.objectStore(metaStoreName).put(lastSeq, seqKey);
  await promisifyRequest(tx);
}

/** A frame's payload decoded, or a 'corrupt' StorageError naming the database and batch. */
function decodeFrame<T>(
  journal: Journal,
  frame: JournalFrame,
  decode: (bytes: Uint8Array, what: string) => T,
): T {
  try {
    return decode(frame.payload, `${journal.name}: journal frame of batch ${frame.seq}`);
  } catch (error) {
    if (error instanceof DecodeError) throw new StorageError(error.code, error.message);
    throw error;
  }
}

/** Rewrites the journal from the database as of batch `seq`, reporting records copied. */
async function rewriteJournal(
  db: IDBDatabase,
  views: ScanViews,
  journal: Journal,
  seq: number,
  progress: (done: number, total: number, finished: boolean) => void,
): Promise<JournalExtent> {
  const records = db.transaction(objectStoreName, 'readonly').objectStore(objectStoreName);
  const total = await promisifyRequest(records.count());
  let done = 0;
  progress(done, total, false);
  const extent = await journal.rewrite(
    seq,
    (async function* counted() {
      for await (const page of views.scan(new Uint8Array(0), null)) {
        yield page;
        done += page.length;
        progress(done, total, false);
      }
    })(),
  );
  progress(total, total, true);
  return extent;
}
