/**
 * A member's identity and its binding to storage, shared by the shells (peer.node.ts for
 * Node peers, browser-node.browser.ts for tabs). Isomorphic.
 *
 * The rules (DESIGN "Membership and rebalancing", node README "Browser nodes"):
 * - A node id is bound by the registry to the member secret of its first join. The shell
 *   keeps both durably with the node's storage, written BEFORE the MeshNode writes
 *   anything under the id, so a store never holds promises made under an id it cannot
 *   prove (`joinRegistry`, then the shell saves the identity when `newIdentity`).
 * - A store refused as `corrupt` (lost, damaged, vanished) did make promises under its id
 *   that nobody can keep any more: the shell sets it aside and the node joins as a NEW
 *   member (`startBoundToStorage`); the old id is removed from its groups like any
 *   departed member.
 */
import type { Prng } from '@meshkv/raft';
import { StorageError } from '@meshkv/storage';
import { type MemberKind, SignalingClient, SignalingError } from '@meshkv/transport';

export interface Identity {
  readonly clusterId: string;
  readonly nodeId: string;
  readonly memberSecret: string;
}

/** `value` as an identity record, or null if it is not one (a field missing or not text). */
export function parseIdentity(value: unknown): Identity | null {
  const record = value as Partial<Record<keyof Identity, unknown>> | null | undefined;
  if (
    typeof record !== 'object' ||
    record === null ||
    typeof record.clusterId !== 'string' ||
    typeof record.nodeId !== 'string' ||
    typeof record.memberSecret !== 'string'
  ) {
    return null;
  }
  return { clusterId: record.clusterId, nodeId: record.nodeId, memberSecret: record.memberSecret };
}

export interface JoinOptions {
  readonly signalingUrl: string;
  readonly token: string;
  readonly clusterId: string;
  readonly kind: MemberKind;
  /** The identity to rejoin under; null joins as a new member. */
  readonly identity: Identity | null;
  /** Without an identity: the id to ask for (default: the registry issues one). */
  readonly requestedNodeId?: string;
  /** A Node peer's HTTP API address. */
  readonly httpAddress?: string;
}

/**
 * Joins the registry under `identity` (id and secret) or as a new member. A refusal of the
 * identity rejects with a SignalingError `wrong_secret` (see `isIdentityRefused`): the
 * shell decides, since wiping the data automatically could destroy every copy of a
 * cluster whose registry was lost.
 */
export async function joinRegistry(options: JoinOptions): Promise<SignalingClient> {
  const identity = options.identity;
  if (identity !== null && identity.clusterId !== options.clusterId) {
    throw new RangeError(
      `identity ${identity.nodeId} belongs to cluster '${identity.clusterId}', not '${options.clusterId}'`,
    );
  }
  return SignalingClient.connect({
    url: options.signalingUrl,
    token: options.token,
    clusterId: options.clusterId,
    kind: options.kind,
    ...(options.httpAddress === undefined ? {} : { httpAddress: options.httpAddress }),
    ...(identity === null
      ? options.requestedNodeId === undefined
        ? {}
        : { nodeId: options.requestedNodeId }
      : { nodeId: identity.nodeId, memberSecret: identity.memberSecret }),
  });
}

/** The registry refused the id (bound to other storage, or unknown to it: `wrong_secret`). */
export function isIdentityRefused(error: unknown): error is SignalingError {
  return error instanceof SignalingError && error.code === 'wrong_secret';
}

/**
 * Starts under `identity`; if the storage is refused as corrupt, `setAside` (the shell's:
 * rename, delete; it also forgets the identity) runs with the reason and the node starts
 * again as a new member (`start(null)`).
 */
export async function startBoundToStorage<T>(
  identity: Identity | null,
  start: (identity: Identity | null) => Promise<T>,
  setAside: (reason: string) => Promise<void>,
): Promise<T> {
  try {
    return await start(identity);
  } catch (error) {
    if (!(error instanceof StorageError && error.code === 'corrupt')) throw error;
    await setAside(error.message);
    return await start(null);
  }
}

/** Largest multiple of n below 2^32: words at or above it would skew the result. */
function unbiasedLimit(n: number): number {
  return 2 ** 32 - (2 ** 32 % n);
}

/**
 * The node's randomness (election timeouts, incarnations, stream ids) from the platform's
 * CSPRNG (`crypto.getRandomValues`: browsers and Node ≥ 19), uniform by rejection.
 */
export const cryptoRandom: Prng = {
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > 2 ** 32) {
      throw new RangeError(`nextInt(${n}): n must be an integer in 1..2^32`);
    }
    const limit = unbiasedLimit(n);
    const word = new Uint32Array(1);
    for (;;) {
      globalThis.crypto.getRandomValues(word);
      if (word[0]! < limit) return word[0]! % n;
    }
  },
};
