// What the browser cluster test reads of a node's status, from a page (browser-page.ts)
// and from a Node peer's GET /status alike: plain JSON, through page.evaluate too.
import type { NodeStatus } from '../../src/mesh-node.ts';

export interface StatusView {
  readonly nodeId: string;
  readonly movesInProgress: number;
  /** Peers whose link is up. */
  readonly peers: readonly string[];
  readonly groups: readonly {
    readonly partition: number;
    readonly role: string;
    readonly term: number;
    readonly leader: string | null;
    readonly voters: number;
    readonly learners: number;
    readonly votersOutgoing: number;
  }[];
}

export function statusView(status: NodeStatus): StatusView {
  return {
    nodeId: status.nodeId,
    movesInProgress: status.movesInProgress,
    peers: status.peers,
    groups: status.groups.map((g) => ({
      partition: g.partition,
      role: g.role,
      term: g.term,
      leader: g.leader,
      voters: g.voters.length,
      learners: g.learners.length,
      votersOutgoing: g.votersOutgoing.length,
    })),
  };
}
