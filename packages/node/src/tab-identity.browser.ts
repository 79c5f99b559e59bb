/**
 * Which node a tab runs: its identity (node id + member secret, identity.ts), claimed
 * under a Web Lock so that no two tabs ever run one node.
 *
 * - Identities are kept durably in this origin's IndexedDB database `meshkv-identities`
 *   (written in a strict-durability transaction, before the node writes anything under
 *   the id), one record per cluster and node.
 * - The tab's node id is in sessionStorage: a reload finds it and rejoins with its
 *   IndexedDB data. A duplicated tab copies sessionStorage, but the original holds the
 *   id's lock (`meshkv-node:<cluster>/<id>`), so the duplicate claims another.
 * - A tab without a usable sessionStorage id (a new tab, a duplicate, a browser restarted
 *   after a crash: sessionStorage is gone with the session) adopts an identity of this
 *   cluster whose lock is free: a node whose tab died without leaving, which rejoins with
 *   its data instead of staying down until the cluster replaces it. With none free it
 *   joins as a new member.
 * - The browser releases a lock when its page goes away, so a crashed tab's node is free
 *   to claim at once; the registry's probe (signaling README) refuses a second live
 *   connection for an id anyway.
 */
import { tryWebLock } from '@meshkv/storage/browser';
import { type Identity, parseIdentity } from './identity.ts';

const DATABASE = 'meshkv-identities';
const STORE = 'identities';
const SCHEMA_VERSION = 1;
/** Identities looked at when adopting one: more means something is leaking them. */
const MAX_ADOPTION_CANDIDATES = 256;
/**
 * How long a tab waits for its own sessionStorage id's lock: a reload starts while the
 * page it replaces may still hold it (as the journal waits for its file, storage README).
 * A duplicated tab waits this long too, then takes another id.
 */
const OWN_LOCK_WAIT_MS = 10_000;

/** A stored identity; `refused` once the registry refused it (kept for inspection). */
interface IdentityRecord extends Identity {
  readonly refused?: string;
}

function recordKey(clusterId: string, nodeId: string): string {
  return `${clusterId}/${nodeId}`;
}

function sessionKey(clusterId: string): string {
  return `meshkv-node:${clusterId}`;
}

function lockName(clusterId: string, nodeId: string): string {
  return `meshkv-node:${clusterId}/${nodeId}`;
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function openDatabase(): Promise<IDBDatabase> {
  const open = indexedDB.open(DATABASE, SCHEMA_VERSION);
  open.onupgradeneeded = () => open.result.createObjectStore(STORE);
  return request(open);
}

/** Runs `work` in one transaction on the identity store; resolves once it committed. */
async function transact<T>(
  mode: IDBTransactionMode,
  work: (store: IDBObjectStore) => IDBRequest<T>,
): Promise<T> {
  const db = await openDatabase();
  try {
    const tx = db.transaction(STORE, mode, { durability: 'strict' });
    const result = request(work(tx.objectStore(STORE)));
    // A failed request also fails the transaction, which is what is awaited first.
    result.catch(() => {});
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error('identity transaction aborted'));
    });
    return await result;
  } finally {
    db.close();
  }
}

/** A node id's Web Lock, held until `release` (or until the page goes away). */
export interface HeldIdentity {
  readonly identity: Identity;
  release(): Promise<void>;
}

/**
 * Takes `nodeId`'s lock if it is free (or within `waitMs`): its release, or null while
 * another tab holds it.
 */
function tryLock(
  clusterId: string,
  nodeId: string,
  waitMs = 0,
): Promise<(() => Promise<void>) | null> {
  return tryWebLock(lockName(clusterId, nodeId), waitMs);
}

async function storedIdentities(clusterId: string): Promise<IdentityRecord[]> {
  const range = IDBKeyRange.bound(`${clusterId}/`, `${clusterId}/\uffff`);
  const values = await transact('readonly', (store) =>
    store.getAll(range, MAX_ADOPTION_CANDIDATES),
  );
  const records: IdentityRecord[] = [];
  for (const value of values) {
    const identity = parseIdentity(value);
    if (identity === null || identity.clusterId !== clusterId) continue;
    const refused = (value as { refused?: unknown }).refused;
    records.push(typeof refused === 'string' ? { ...identity, refused } : identity);
  }
  return records;
}

/**
 * The identity this tab runs, locked: its sessionStorage one if free, else one a dead tab
 * left; null if there is none (join as a new member, then `claimNewIdentity`).
 */
export async function claimStoredIdentity(clusterId: string): Promise<HeldIdentity | null> {
  const own = sessionStorage.getItem(sessionKey(clusterId));
  const candidates = (await storedIdentities(clusterId)).filter((r) => r.refused === undefined);
  // This tab's own id first: a reload keeps its node.
  candidates.sort((a, b) => Number(b.nodeId === own) - Number(a.nodeId === own));
  for (const candidate of candidates) {
    const waitMs = candidate.nodeId === own ? OWN_LOCK_WAIT_MS : 0;
    const release = await tryLock(clusterId, candidate.nodeId, waitMs);
    if (release === null) continue;
    sessionStorage.setItem(sessionKey(clusterId), candidate.nodeId);
    const identity: Identity = {
      clusterId: candidate.clusterId,
      nodeId: candidate.nodeId,
      memberSecret: candidate.memberSecret,
    };
    return { identity, release };
  }
  return null;
}

/**
 * Locks and durably stores the identity the registry just issued, before anything is
 * written under it; the tab's sessionStorage names it from now on.
 */
export async function claimNewIdentity(identity: Identity): Promise<HeldIdentity> {
  const release = await tryLock(identity.clusterId, identity.nodeId);
  if (release === null) {
    throw new Error(`node id ${identity.nodeId} was just issued, yet another tab holds its lock`);
  }
  try {
    await transact('readwrite', (store) =>
      store.put(identity, recordKey(identity.clusterId, identity.nodeId)),
    );
  } catch (error) {
    await release();
    throw error;
  }
  sessionStorage.setItem(sessionKey(identity.clusterId), identity.nodeId);
  return { identity, release };
}

/** Forgets an identity for good (the node left, or its storage was set aside). */
export async function forgetIdentity(identity: Identity): Promise<void> {
  await transact('readwrite', (store) =>
    store.delete(recordKey(identity.clusterId, identity.nodeId)),
  );
  if (sessionStorage.getItem(sessionKey(identity.clusterId)) === identity.nodeId) {
    sessionStorage.removeItem(sessionKey(identity.clusterId));
  }
}

/**
 * Marks an identity the registry refused: never adopted again, its data kept (a registry
 * that lost its state must not make tabs wipe what may be the last copies).
 */
export async function markIdentityRefused(identity: Identity, reason: string): Promise<void> {
  const record: IdentityRecord = { ...identity, refused: reason };
  await transact('readwrite', (store) =>
    store.put(record, recordKey(identity.clusterId, identity.nodeId)),
  );
  if (sessionStorage.getItem(sessionKey(identity.clusterId)) === identity.nodeId) {
    sessionStorage.removeItem(sessionKey(identity.clusterId));
  }
}
