// A NodeStatus of an idle node with no groups, for tests that need one without a node.
import type { NodeStatus } from '../../src/mesh-node.ts';

export function idleNodeStatus(fields: Partial<NodeStatus> = {}): NodeStatus {
  return {
    nodeId: 'stub',
    epoch: 1,
    nowMs: 0,
    peers: [],
    unreachable: [],
    groups: [],
    movesInProgress: 0,
    pendingRequests: 0,
    servedRequests: 0,
    snapshotsInstalled: 0,
    batchesWritten: 0,
    framesSent: 0,
    recordsRelayed: 0,
    recordsForwarded: 0,
    closed: false,
    ...fields,
  };
}
