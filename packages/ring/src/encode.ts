import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js';
import type { Placement } from './placement.ts';

/** Version byte of the encoding below; bump it if the layout changes. */
const ENCODING_VERSION = 1;

/**
 * A canonical byte encoding of a placement, equal for equal placements in every
 * environment. Layout (integers big endian):
 *   u8 version (1) · u32 Q · u8 N · u32 V · u32 M ·
 *   M × (u8 byte length · UTF-8 node id), ids sorted ·
 *   Q × min(N, M) × u16 member index, each partition's replicas in clockwise order.
 */
export function encodePlacement(placement: Placement): Uint8Array {
  const { partitions, replicationFactor, tokensPerNode } = placement.settings;
  const ids = placement.members.map((id) => utf8ToBytes(id));
  const indexOf = new Map(placement.members.map((id, index) => [id, index]));
  const perPartition = placement.replicasPerPartition;
  const idBytes = ids.reduce((sum, id) => sum + 1 + id.length, 0);
  const bytes = new Uint8Array(14 + idBytes + 2 * partitions * perPartition);
  const view = new DataView(bytes.buffer);
  let at = 0;
  view.setUint8(at, ENCODING_VERSION);
  view.setUint32(at + 1, partitions);
  view.setUint8(at + 5, replicationFactor);
  view.setUint32(at + 6, tokensPerNode);
  view.setUint32(at + 10, ids.length);
  at += 14;
  for (const id of ids) {
    view.setUint8(at, id.length);
    bytes.set(id, at + 1);
    at += 1 + id.length;
  }
  for (let partition = 0; partition < partitions; partition++) {
    for (const id of placement.replicasOf(partition)) {
      view.setUint16(at, indexOf.get(id)!);
      at += 2;
    }
  }
  return bytes;
}

/** Hex sha256 of encodePlacement: nodes of one epoch can compare placements by it. */
export function placementDigest(placement: Placement): string {
  return bytesToHex(sha256(encodePlacement(placement)));
}
