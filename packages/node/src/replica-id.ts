/**
 * Replica ids: the Raft member id of one replica of one partition, distinct from its
 * node's id (TiKV's peer id, CockroachDB's ReplicaID). A node that leaves a group and is
 * added again gets a NEW replica id, so that messages of the old replica still in flight
 * (an append acknowledgement, a vote) can never be taken for the new one's: raft drops
 * them as coming from a non-member, instead of, say, counting an old acknowledgement of
 * entries the new, empty replica does not have towards a commit.
 *
 * Form: `${nodeId}@${incarnation in base 36}`. Node ids never hold '@' (signaling
 * protocol: `A-Z a-z 0-9 . _ : -`, at most MAX_NODE_ID_FOR_REPLICAS characters here), and
 * the incarnation is the log index of the configuration change that adds the replica (1
 * for a bootstrap replica: the bootstrap snapshot's index), unique within a group, so a
 * replica id is at most 64 bytes (raft's NodeId bound).
 */
import type { ConfState, NodeId } from '@meshkv/raft';
import { MAX_NODE_ID_CHARS } from '@meshkv/transport/signaling-protocol';

/**
 * The longest node id whose replica ids fit raft's 64-byte NodeId (an index needs ≤ 11
 * base-36 digits): the registry admits no longer one (signaling protocol).
 */
export const MAX_NODE_ID_FOR_REPLICAS = MAX_NODE_ID_CHARS;

export function replicaId(nodeId: NodeId, incarnation: number): NodeId {
  if (!Number.isSafeInteger(incarnation) || incarnation < 1) {
    throw new RangeError(`a replica incarnation is a log index ≥ 1, got ${incarnation}`);
  }
  if (nodeId.length === 0 || nodeId.length > MAX_NODE_ID_FOR_REPLICAS || nodeId.includes('@')) {
    throw new RangeError(
      `node id '${nodeId}' cannot name replicas: 1 to ${MAX_NODE_ID_FOR_REPLICAS} characters without '@'`,
    );
  }
  return `${nodeId}@${incarnation.toString(36)}`;
}

/** The node a replica id belongs to; '' for a string that is not a replica id. */
export function nodeOfReplica(id: NodeId): NodeId {
  const at = id.lastIndexOf('@');
  return at <= 0 ? '' : id.slice(0, at);
}

/** The incarnation of a replica id; 0 for a string that is not one. */
export function incarnationOf(id: NodeId): number {
  const at = id.lastIndexOf('@');
  if (at <= 0) return 0;
  const digits = id.slice(at + 1);
  if (!/^[0-9a-z]{1,11}$/.test(digits)) return 0;
  const incarnation = Number.parseInt(digits, 36);
  return Number.isSafeInteger(incarnation) && incarnation >= 1 ? incarnation : 0;
}

/**
 * The replica of `node` in a configuration, or null: the newest should there be two (the
 * planner never adds a node already in the configuration, but a configuration restored
 * from storage is taken as it is).
 */
export function replicaOfNode(c: ConfState, node: NodeId): NodeId | null {
  let found: NodeId | null = null;
  for (const list of [c.voters, c.learners, c.votersOutgoing, c.learnersNext]) {
    for (const id of list) {
      if (nodeOfReplica(id) !== node) continue;
      if (found === null || incarnationOf(id) > incarnationOf(found)) found = id;
    }
  }
  return found;
}

/** `id` is a member (voter or learner, either half of a joint configuration) of `c`. */
export function isReplicaIn(c: ConfState, id: NodeId): boolean {
  return (
    c.voters.includes(id) ||
    c.learners.includes(id) ||
    c.votersOutgoing.includes(id) ||
    c.learnersNext.includes(id)
  );
}
