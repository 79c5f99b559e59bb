import { RaftError, RaftErrorCode } from './errors.ts';
import type { NodeId } from './types.ts';

/** One membership operation. */
export const ConfChangeType = {
  /** Make the node a voter (adding it, or promoting a learner). */
  AddNode: 0,
  /** Remove the node from the configuration. */
  RemoveNode: 1,
  /** Make the node a learner (adding it, or demoting a voter). */
  AddLearnerNode: 2,
} as const;
export type ConfChangeType = (typeof ConfChangeType)[keyof typeof ConfChangeType];

/**
 * How a ConfChangeV2 uses joint consensus (Raft thesis §4.3).
 * - Auto: a single voter change is applied directly ("simple"); anything more enters a
 *   joint configuration that raft leaves on its own once it is committed and applied.
 * - Implicit: always joint, left automatically.
 * - Explicit: always joint; the application leaves it by proposing an empty ConfChangeV2.
 */
export const ConfChangeTransition = { Auto: 0, Implicit: 1, Explicit: 2 } as const;
export type ConfChangeTransition = (typeof ConfChangeTransition)[keyof typeof ConfChangeTransition];

export interface ConfChangeSingle {
  readonly type: ConfChangeType;
  readonly nodeId: NodeId;
}

/** A single change, applied without a joint configuration (at most one voter changes). */
export interface ConfChange {
  readonly type: ConfChangeType;
  readonly nodeId: NodeId;
  /** Opaque to raft; returned to the application with the committed entry. */
  readonly context?: Uint8Array;
}

/**
 * Several changes applied atomically. With no changes and transition Auto it means
 * "leave the joint configuration".
 */
export interface ConfChangeV2 {
  readonly transition: ConfChangeTransition;
  readonly changes: readonly ConfChangeSingle[];
  readonly context?: Uint8Array;
}

export function isConfChangeV2(cc: ConfChange | ConfChangeV2): cc is ConfChangeV2 {
  return 'changes' in cc;
}

/** Every ConfChange is handled as the equivalent ConfChangeV2. */
export function asConfChangeV2(cc: ConfChange | ConfChangeV2): ConfChangeV2 {
  if (isConfChangeV2(cc)) return cc;
  return {
    transition: ConfChangeTransition.Auto,
    changes: [{ type: cc.type, nodeId: cc.nodeId }],
    context: cc.context ?? new Uint8Array(0),
  };
}

/** True for the change that leaves a joint configuration. */
export function isLeaveJoint(cc: ConfChangeV2): boolean {
  return cc.transition === ConfChangeTransition.Auto && cc.changes.length === 0;
}

/**
 * Whether `cc` enters a joint configuration, and if so whether it is left automatically.
 * Returns null for a simple change.
 */
export function jointTransition(cc: ConfChangeV2): { autoLeave: boolean } | null {
  if (cc.transition === ConfChangeTransition.Auto && cc.changes.length <= 1) return null;
  return { autoLeave: cc.transition !== ConfChangeTransition.Explicit };
}

const CODEC_VERSION = 1;
const MAX_NODE_ID_BYTES = 255;
const MAX_CHANGES = 0xffff;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

function invalid(message: string): RaftError {
  return new RaftError(RaftErrorCode.InvalidConfChange, message);
}

/**
 * Encodes a configuration change as the `data` of a ConfChange entry.
 * Layout: u8 version=1, u8 transition, u16 count, count × (u8 type, u8 idLength, id
 * UTF-8), u32 contextLength, context. Integers big-endian. The leave-joint change without
 * context is empty data (etcd's zero ConfChangeV2): it costs nothing against
 * maxUncommittedEntriesBytes, so a full uncommitted log never refuses it. Throws
 * InvalidConfChange.
 */
export function encodeConfChange(cc: ConfChange | ConfChangeV2): Uint8Array {
  const v2 = asConfChangeV2(cc);
  if (isLeaveJoint(v2) && (v2.context?.byteLength ?? 0) === 0) return new Uint8Array(0);
  if (v2.changes.length > MAX_CHANGES) throw invalid(`too many changes: ${v2.changes.length}`);
  const ids = v2.changes.map((c) => {
    if (c.nodeId.length === 0) throw invalid('empty node id');
    const bytes = utf8Encoder.encode(c.nodeId);
    if (bytes.byteLength > MAX_NODE_ID_BYTES) throw invalid(`node id too long: ${c.nodeId}`);
    if (!Object.values(ConfChangeType).includes(c.type)) throw invalid(`bad type ${c.type}`);
    return bytes;
  });
  if (!Object.values(ConfChangeTransition).includes(v2.transition)) {
    throw invalid(`bad transition ${v2.transition}`);
  }
  const context = v2.context ?? new Uint8Array(0);
  const size = 4 + ids.reduce((n, id) => n + 2 + id.byteLength, 0) + 4 + context.byteLength;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out[0] = CODEC_VERSION;
  out[1] = v2.transition;
  view.setUint16(2, v2.changes.length);
  let at = 4;
  v2.changes.forEach((c, i) => {
    const id = ids[i]!;
    out[at] = c.type;
    out[at + 1] = id.byteLength;
    out.set(id, at + 2);
    at += 2 + id.byteLength;
  });
  view.setUint32(at, context.byteLength);
  out.set(context, at + 4);
  return out;
}

/** Decodes `encodeConfChange` output (empty data: leave joint). Throws InvalidConfChange on malformed input. */
export function decodeConfChange(data: Uint8Array): ConfChangeV2 {
  if (data.byteLength === 0) {
    return { transition: ConfChangeTransition.Auto, changes: [], context: new Uint8Array(0) };
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const need = (at: number, n: number): void => {
    if (at + n > data.byteLength) throw invalid(`truncated at byte ${at}`);
  };
  need(0, 4);
  if (data[0] !== CODEC_VERSION) throw invalid(`unknown version ${data[0]}`);
  const transition = data[1] as ConfChangeTransition;
  if (!Object.values(ConfChangeTransition).includes(transition)) {
    throw invalid(`bad transition ${transition}`);
  }
  const count = view.getUint16(2);
  const changes: ConfChangeSingle[] = [];
  let at = 4;
  for (let i = 0; i < count; i++) {
    need(at, 2);
    const type = data[at] as ConfChangeType;
    if (!Object.values(ConfChangeType).includes(type)) throw invalid(`bad type ${type}`);
    const length = data[at + 1]!;
    if (length === 0) throw invalid('empty node id');
    need(at + 2, length);
    let nodeId: string;
    try {
      nodeId = utf8Decoder.decode(data.subarray(at + 2, at + 2 + length));
    } catch {
      throw invalid('node id is not UTF-8');
    }
    changes.push({ type, nodeId });
    at += 2 + length;
  }
  need(at, 4);
  const contextLength = view.getUint32(at);
  need(at + 4, contextLength);
  if (at + 4 + contextLength !== data.byteLength) throw invalid('trailing bytes');
  return { transition, changes, context: data.slice(at + 4, at + 4 + contextLength) };
}
