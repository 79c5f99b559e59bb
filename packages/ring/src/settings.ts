import { RingError } from './errors.ts';

/**
 * The cluster-wide ring settings, fixed when the cluster is created and kept in the
 * registry. Every node must use the same values, or placements differ.
 */
export interface RingSettings {
  /** Q: number of partitions, a power of two in 1..MAX_PARTITIONS. */
  readonly partitions: number;
  /** N: replicas per partition, 1..MAX_REPLICATION_FACTOR. */
  readonly replicationFactor: number;
  /** V: tokens (virtual nodes) per member, 1..MAX_TOKENS_PER_NODE. */
  readonly tokensPerNode: number;
}

/** Q above this makes the per-partition Raft groups, not the ring, the problem. */
export const MAX_PARTITIONS = 65536;
/** The design allows N in 1..5. */
export const MAX_REPLICATION_FACTOR = 5;
/** A placement keeps 10 bytes per token: 1024 × MAX_MEMBERS tokens are 40 MiB. */
export const MAX_TOKENS_PER_NODE = 1024;
/** Members per placement: the design plans for 1000 nodes; this leaves headroom. */
export const MAX_MEMBERS = 4096;
/** A node id is at most this many UTF-8 bytes. */
export const MAX_NODE_ID_BYTES = 64;

/**
 * V chosen by measurement (packages/ring/README.md, `pnpm bench ring tokens`): at M = 100,
 * Q = 4096 it gives the best balance (max/mean 1.16 on average, 1.245 at worst over 100
 * member sets); more tokens do not help there, because the Q partition starts, not the
 * tokens, then limit balance. 1000 members are 128k tokens: a rebuild takes milliseconds.
 */
export const DEFAULT_TOKENS_PER_NODE = 128;

/** Defaults of a new cluster: Q = 64 (DESIGN.md), N = 3, V = DEFAULT_TOKENS_PER_NODE. */
export const DEFAULT_SETTINGS: RingSettings = Object.freeze({
  partitions: 64,
  replicationFactor: 3,
  tokensPerNode: DEFAULT_TOKENS_PER_NODE,
});

function isIntegerIn(value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
}

/** Returns a frozen copy of `settings` or throws RingError('invalid_settings'). */
export function validateSettings(settings: RingSettings): RingSettings {
  if (typeof settings !== 'object' || settings === null) {
    throw new RingError('invalid_settings', 'ring settings must be an object');
  }
  const { partitions, replicationFactor, tokensPerNode } = settings;
  if (!isIntegerIn(partitions, 1, MAX_PARTITIONS) || (partitions & (partitions - 1)) !== 0) {
    throw new RingError(
      'invalid_settings',
      `partitions must be a power of two in 1..${MAX_PARTITIONS}, got ${String(partitions)}`,
    );
  }
  if (!isIntegerIn(replicationFactor, 1, MAX_REPLICATION_FACTOR)) {
    throw new RingError(
      'invalid_settings',
      `replicationFactor must be an integer in 1..${MAX_REPLICATION_FACTOR}, got ${String(replicationFactor)}`,
    );
  }
  if (!isIntegerIn(tokensPerNode, 1, MAX_TOKENS_PER_NODE)) {
    throw new RingError(
      'invalid_settings',
      `tokensPerNode must be an integer in 1..${MAX_TOKENS_PER_NODE}, got ${String(tokensPerNode)}`,
    );
  }
  return Object.freeze({ partitions, replicationFactor, tokensPerNode });
}

export function sameSettings(a: RingSettings, b: RingSettings): boolean {
  return (
    a.partitions === b.partitions &&
    a.replicationFactor === b.replicationFactor &&
    a.tokensPerNode === b.tokensPerNode
  );
}
