/**
 * Node metadata kept in one reserved storage group: tombstones and retirement records.
 *
 * Tombstones of removed replicas (packages/raft/README.md, "Removed replicas"): a replica
 * deleted from this node keeps its last term and vote, so that if the partition comes back
 * here its new, empty replica starts from them and can never vote twice in a term the old
 * one voted in; and its replica id, which is never hosted again (a message for it, or an
 * older one, still in flight is dropped: re-created empty under its old id, the leader's
 * view of its log — match, acknowledged entries — would be the deleted replica's). They live in the KV data of one reserved storage group that is never a
 * partition (`NODE_META_GROUP`), written in the same batch as the removal.
 */
import type { GroupId, NodeId } from '@meshkv/raft';
import type { GroupWrite, KvWrite, NodeStorage } from '@meshkv/storage';

/** The storage group holding node metadata: above every partition id (Q ≤ 65,536). */
export const NODE_META_GROUP: GroupId = 0xffff_ffff;

const VERSION = 1;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

/** What a deleted replica leaves: its last term and vote, and its replica id. */
export interface Tombstone {
  readonly term: number;
  readonly vote: NodeId | null;
  /**
   * The deleted replica (replica-id.ts): it, and any older one, is never hosted again; the
   * node id alone (incarnation 0) when the replica held no data (nothing stale to fear).
   */
  readonly replica: NodeId;
}

function tombstoneKey(group: GroupId): string {
  return `tombstone/${group}`;
}

/** version (1), term (f64), vote length (u8, 0 = none), vote, replica length (u8), replica. */
export function encodeTombstone(tombstone: Tombstone): Uint8Array {
  const vote = textEncoder.encode(tombstone.vote ?? '');
  const replica = textEncoder.encode(tombstone.replica);
  const bytes = new Uint8Array(11 + vote.length + replica.length);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, VERSION);
  view.setFloat64(1, tombstone.term);
  view.setUint8(9, vote.length);
  bytes.set(vote, 10);
  view.setUint8(10 + vote.length, replica.length);
  bytes.set(replica, 11 + vote.length);
  return bytes;
}

/** A tombstone; null for bytes that are not one (it is then ignored). */
export function decodeTombstone(bytes: Uint8Array): Tombstone | null {
  if (bytes.length < 11) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint8(0) !== VERSION) return null;
  const term = view.getFloat64(1);
  const voteBytes = view.getUint8(9);
  if (!Number.isSafeInteger(term) || term < 0 || bytes.length < 11 + voteBytes) return null;
  const replicaBytes = view.getUint8(10 + voteBytes);
  if (bytes.length !== 11 + voteBytes + replicaBytes || replicaBytes === 0) return null;
  try {
    const vote = voteBytes === 0 ? null : textDecoder.decode(bytes.subarray(10, 10 + voteBytes));
    const replica = textDecoder.decode(bytes.subarray(11 + voteBytes));
    return { term, vote, replica };
  } catch {
    return null;
  }
}

/** The tombstones the store holds for partitions 0..partitions−1. */
export async function loadTombstones(
  storage: NodeStorage,
  hostsMetaGroup: boolean,
  partitions: number,
): Promise<Map<GroupId, Tombstone>> {
  const tombstones = new Map<GroupId, Tombstone>();
  if (!hostsMetaGroup) return tombstones;
  for (let group = 0; group < partitions; group++) {
    const bytes = await storage.get(NODE_META_GROUP, tombstoneKey(group));
    const decoded = bytes === null ? null : decodeTombstone(bytes);
    if (decoded !== null) tombstones.set(group, decoded);
  }
  return tombstones;
}

/**
 * A retiring replica (GroupReplica.retiring): its applied configuration no longer names
 * it, so at a restart only this record tells its replica id and that it must go on
 * retiring rather than be deleted at once. Written in the round after it applied its
 * removal (before or with the applied state that drops it), deleted with its tombstone.
 */
export interface RetirementRecord {
  readonly replica: NodeId;
  readonly removedAtIndex: number;
}

function retirementKey(group: GroupId): string {
  return `retiring/${group}`;
}

/** version (1), removedAtIndex (f64), replica length (u8), replica. */
export function encodeRetirement(record: RetirementRecord): Uint8Array {
  const replica = textEncoder.encode(record.replica);
  const bytes = new Uint8Array(10 + replica.length);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, VERSION);
  view.setFloat64(1, record.removedAtIndex);
  view.setUint8(9, replica.length);
  bytes.set(replica, 10);
  return bytes;
}

/** A retirement record; null for bytes that are not one (the replica is then deleted). */
export function decodeRetirement(bytes: Uint8Array): RetirementRecord | null {
  if (bytes.length < 11) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint8(0) !== VERSION) return null;
  const removedAtIndex = view.getFloat64(1);
  if (!Number.isSafeInteger(removedAtIndex) || removedAtIndex < 1) return null;
  if (bytes.length !== 10 + view.getUint8(9)) return null;
  try {
    return { replica: textDecoder.decode(bytes.subarray(10)), removedAtIndex };
  } catch {
    return null;
  }
}

/** The retirement records the store holds for partitions 0..partitions−1. */
export async function loadRetirements(
  storage: NodeStorage,
  hostsMetaGroup: boolean,
  partitions: number,
): Promise<Map<GroupId, RetirementRecord>> {
  const records = new Map<GroupId, RetirementRecord>();
  if (!hostsMetaGroup) return records;
  for (let group = 0; group < partitions; group++) {
    const bytes = await storage.get(NODE_META_GROUP, retirementKey(group));
    const decoded = bytes === null ? null : decodeRetirement(bytes);
    if (decoded !== null) records.set(group, decoded);
  }
  return records;
}

/**
 * The meta group's part of a batch: the tombstones of the replicas it removes (their
 * retirement records go with them) and the records of replicas that began retiring.
 */
export function nodeMetaPart(
  removed: ReadonlyMap<GroupId, Tombstone> | null,
  retired: ReadonlyMap<GroupId, RetirementRecord> | null,
  createMetaGroup: boolean,
): GroupWrite {
  const kv: KvWrite[] = [];
  if (removed !== null) {
    for (const [group, tombstone] of removed) {
      kv.push({ key: tombstoneKey(group), value: encodeTombstone(tombstone) });
      kv.push({ key: retirementKey(group), value: null });
    }
  }
  if (retired !== null) {
    for (const [group, record] of retired) {
      kv.push({ key: retirementKey(group), value: encodeRetirement(record) });
    }
  }
  return createMetaGroup
    ? { group: NODE_META_GROUP, create: true, kv }
    : { group: NODE_META_GROUP, kv };
}
