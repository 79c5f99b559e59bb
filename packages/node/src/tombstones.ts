/**
 * Tombstones of removed replicas (packages/raft/README.md, "Removed replicas"): a replica
 * deleted from this node keeps its last term and vote, so that if the partition comes back
 * here its new, empty replica starts from them and can never vote twice in a term the old
 * one voted in. They live in the KV data of one reserved storage group that is never a
 * partition (`NODE_META_GROUP`), written in the same batch as the removal.
 */
import type { GroupId, HardState, NodeId } from '@meshkv/raft';
import type { GroupWrite, KvWrite, NodeStorage } from '@meshkv/storage';

/** The storage group holding node metadata: above every partition id (Q ≤ 65,536). */
export const NODE_META_GROUP: GroupId = 0xffff_ffff;

const VERSION = 1;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

function tombstoneKey(group: GroupId): string {
  return `tombstone/${group}`;
}

/** version (1), term (f64), vote length (u8, 0 = none), vote (UTF-8). */
export function encodeTombstone(hardState: HardState): Uint8Array {
  const vote = textEncoder.encode(hardState.vote ?? '');
  const bytes = new Uint8Array(10 + vote.length);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, VERSION);
  view.setFloat64(1, hardState.term);
  view.setUint8(9, vote.length);
  bytes.set(vote, 10);
  return bytes;
}

/** The term and vote of a tombstone; null for bytes that are not one (it is then ignored). */
export function decodeTombstone(bytes: Uint8Array): { term: number; vote: NodeId | null } | null {
  if (bytes.length < 10) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint8(0) !== VERSION) return null;
  const term = view.getFloat64(1);
  const voteBytes = view.getUint8(9);
  if (!Number.isSafeInteger(term) || term < 0 || bytes.length !== 10 + voteBytes) return null;
  try {
    const vote = voteBytes === 0 ? null : textDecoder.decode(bytes.subarray(10));
    return { term, vote };
  } catch {
    return null;
  }
}

/** The tombstones the store holds for partitions 0..partitions−1. */
export async function loadTombstones(
  storage: NodeStorage,
  hostsMetaGroup: boolean,
  partitions: number,
): Promise<Map<GroupId, HardState>> {
  const tombstones = new Map<GroupId, HardState>();
  if (!hostsMetaGroup) return tombstones;
  for (let group = 0; group < partitions; group++) {
    const bytes = await storage.get(NODE_META_GROUP, tombstoneKey(group));
    const decoded = bytes === null ? null : decodeTombstone(bytes);
    if (decoded !== null)
      tombstones.set(group, { term: decoded.term, vote: decoded.vote, commit: 0 });
  }
  return tombstones;
}

/** The meta group's part of a batch that removes replicas with these last hard states. */
export function tombstonesPart(
  removed: ReadonlyMap<GroupId, HardState>,
  createMetaGroup: boolean,
): GroupWrite {
  const kv: KvWrite[] = [];
  for (const [group, hardState] of removed) {
    kv.push({ key: tombstoneKey(group), value: encodeTombstone(hardState) });
  }
  return createMetaGroup
    ? { group: NODE_META_GROUP, create: true, kv }
    : { group: NODE_META_GROUP, kv };
}
