/**
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

/** The meta group's part of a batch that removes replicas, leaving these tombstones. */
export function tombstonesPart(
  removed: ReadonlyMap<GroupId, Tombstone>,
  createMetaGroup: boolean,
): GroupWrite {
  const kv: KvWrite[] = [];
  for (const [group, tombstone] of removed) {
    kv.push({ key: tombstoneKey(group), value: encodeTombstone(tombstone) });
  }
  return createMetaGroup
    ? { group: NODE_META_GROUP, create: true, kv }
    : { group: NODE_META_GROUP, kv };
}
