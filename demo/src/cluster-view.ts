/**
 * The cluster as the demo shows it, put together from what this page can know (README
 * "Where the cluster view comes from"):
 * - the registry: the signaling server's `/status` (same origin): settings, members, states;
 * - the placement: computed here with @meshkv/ring from the registry's `up` members, as
 *   every node computes it;
 * - node statuses (MeshNode.status()): this tab's own, the other tabs' of this browser
 *   (BroadcastChannel), the Node peers' (their HTTP `/status`, CORS for loopback pages).
 * A partition's leader, term and configuration come from the freshest status of a replica
 * that knows them; a partition none of the known statuses hosts shows the placement only.
 * Pure functions: no DOM, no fetching.
 */
import type { GroupStatus, NodeStatus } from '@meshkv/node';
import { positionOf, Ring } from '@meshkv/ring';
import type { Member, RegistrySnapshot } from '@meshkv/transport/signaling-protocol';

/** The signaling server's `/status` document (signaling/README.md "HTTP"). */
export interface RegistryStatus extends RegistrySnapshot {
  readonly members: readonly (Member & { readonly connected: boolean })[];
}

export type StatusSource = 'this tab' | 'another tab' | 'HTTP /status';

export interface KnownStatus {
  readonly status: NodeStatus;
  readonly source: StatusSource;
  /** performance.now() when it arrived. */
  readonly receivedAtMs: number;
}

export interface MemberRow {
  readonly nodeId: string;
  readonly kind: Member['kind'];
  readonly state: Member['state'];
  readonly connected: boolean;
  readonly httpAddress: string | undefined;
  /** Partitions the placement gives it (0 unless `up`). */
  readonly placed: number;
  /** From its status, if one is known. */
  readonly hosted: number | undefined;
  readonly leading: number | undefined;
  readonly movesInProgress: number | undefined;
  readonly source: StatusSource | undefined;
}

export interface PartitionRow {
  readonly partition: number;
  /** Where the ring places it: the first N distinct members clockwise. */
  readonly placement: readonly string[];
  /** Its Raft group as the best-informed replica sees it; undefined if none is known. */
  readonly leader: string | null | undefined;
  readonly term: number | undefined;
  readonly commit: number | undefined;
  readonly voters: readonly string[] | undefined;
  readonly learners: readonly string[];
  readonly votersOutgoing: readonly string[];
  /** Why it is not in place yet (a leader's placement note), or ''. */
  readonly note: string;
  /** Its replicas differ from the placement, or a learner or joint configuration is there. */
  readonly moving: boolean;
}

export interface ClusterView {
  readonly partitions: number;
  readonly replicationFactor: number;
  readonly tokensPerNode: number;
  readonly epoch: number;
  readonly members: readonly MemberRow[];
  readonly rows: readonly PartitionRow[];
}

/** Members whose tokens are drawn and placed: the registry's `up` ones (as MeshNode places). */
export function placedMembers(registry: RegistrySnapshot): string[] {
  return registry.members.filter((m) => m.state === 'up').map((m) => m.nodeId);
}

export function clusterView(
  registry: RegistryStatus,
  statuses: ReadonlyMap<string, KnownStatus>,
): ClusterView {
  const { partitions, replicationFactor, tokensPerNode } = registry.settings;
  const placement = new Ring({ partitions, replicationFactor, tokensPerNode }).placement(
    placedMembers(registry),
  );
  // Per partition, the group status with the highest term (a leader's wins a tie).
  const best = new Map<number, GroupStatus>();
  for (const { status } of statuses.values()) {
    for (const group of status.groups) {
      if (group.retiring) continue;
      const known = best.get(group.partition);
      if (
        known === undefined ||
        group.term > known.term ||
        (group.term === known.term && group.role === 'leader' && known.role !== 'leader')
      ) {
        best.set(group.partition, group);
      }
    }
  }
  const rows: PartitionRow[] = [];
  for (let partition = 0; partition < partitions; partition++) {
    const placed = placement.replicasOf(partition);
    const group = best.get(partition);
    const moving =
      group !== undefined &&
      (group.learners.length > 0 ||
        group.votersOutgoing.length > 0 ||
        !sameSet(group.voters, placed));
    rows.push({
      partition,
      placement: placed,
      leader: group?.leader,
      term: group?.term,
      commit: group?.commit,
      voters: group?.voters,
      learners: group?.learners ?? [],
      votersOutgoing: group?.votersOutgoing ?? [],
      note: group?.role === 'leader' ? group.placement : '',
      moving,
    });
  }
  const members: MemberRow[] = registry.members.map((m) => {
    const known = statuses.get(m.nodeId);
    const groups = known?.status.groups;
    return {
      nodeId: m.nodeId,
      kind: m.kind,
      state: m.state,
      connected: m.connected,
      httpAddress: m.httpAddress,
      placed: placement.partitionsOf(m.nodeId).length,
      hosted: groups?.length,
      leading: groups?.filter((g) => g.role === 'leader').length,
      movesInProgress: known?.status.movesInProgress,
      source: known?.source,
    };
  });
  return {
    partitions,
    replicationFactor,
    tokensPerNode,
    epoch: registry.epoch,
    members,
    rows,
  };
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/** Where a member's tokens sit on the ring, as fractions of a turn in [0, 1). */
export class TokenPositions {
  private readonly cache = new Map<string, readonly number[]>();

  constructor(private readonly tokensPerNode: number) {}

  of(nodeId: string): readonly number[] {
    let positions = this.cache.get(nodeId);
    if (positions === undefined) {
      const list: number[] = [];
      // The ring's token `${id}#${i}` (packages/ring tokens.ts); the high word orders it.
      for (let i = 0; i < this.tokensPerNode; i++)
        list.push(positionOf(`${nodeId}#${i}`)[0] / 2 ** 32);
      positions = list;
      // Members come and go; the cache keeps at most the registry's bound of them.
      if (this.cache.size >= 1000) this.cache.clear();
      this.cache.set(nodeId, positions);
    }
    return positions;
  }
}
