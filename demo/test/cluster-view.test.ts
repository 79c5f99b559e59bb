// The demo's cluster view (src/cluster-view.ts) from a registry and a few node statuses:
// the placement is the ring's over the `up` members, a partition's group comes from the
// replica with the highest term (a leader wins a tie), moves are flagged, members count
// what their statuses say, and token positions are the ring's.
import type { GroupStatus, NodeStatus } from '@meshkv/node';
import { positionOf, Ring } from '@meshkv/ring';
import { expect } from 'chai';
import {
  clusterView,
  type KnownStatus,
  type RegistryStatus,
  TokenPositions,
} from '../src/cluster-view.ts';

const SETTINGS = { clusterId: 'demo', partitions: 8, replicationFactor: 3, tokensPerNode: 16 };

function member(nodeId: string, state: 'up' | 'down' | 'left', kind: 'node' | 'browser' = 'node') {
  return { nodeId, kind, state, joinedAtEpoch: 1, changedAtEpoch: 1, connected: state === 'up' };
}

const registry: RegistryStatus = {
  settings: SETTINGS,
  epoch: 7,
  members: [
    member('a', 'up'),
    member('b', 'up'),
    member('c', 'up', 'browser'),
    member('d', 'down'),
  ],
};

function group(partition: number, fields: Partial<GroupStatus>): GroupStatus {
  return {
    partition,
    replica: 'x@1',
    role: 'follower',
    term: 1,
    leader: null,
    commit: 0,
    applied: 0,
    lastIndex: 0,
    logEntries: 0,
    voters: [],
    learners: [],
    votersOutgoing: [],
    followers: [],
    initialized: true,
    installingSnapshot: false,
    retiring: false,
    placement: '',
    ...fields,
  };
}

function known(nodeId: string, groups: GroupStatus[], movesInProgress = 0): [string, KnownStatus] {
  const status = { nodeId, groups, movesInProgress } as unknown as NodeStatus;
  return [nodeId, { status, source: 'HTTP /status', receivedAtMs: 0 }];
}

describe('demo cluster view', () => {
  const placement = new Ring(SETTINGS).placement(['a', 'b', 'c']);
  const placed0 = [...placement.replicasOf(0)];

  it('places on the up members only and takes each partition from its best-informed replica', () => {
    const statuses = new Map([
      // a is behind: an old term for partition 0.
      known('a', [group(0, { term: 2, leader: 'b', voters: placed0, commit: 5 })]),
      known(
        'b',
        [
          group(0, { term: 3, role: 'leader', leader: 'b', voters: placed0, commit: 9 }),
          group(1, {
            term: 4,
            role: 'leader',
            leader: 'b',
            voters: ['a', 'b', 'd'],
            learners: ['c'],
            placement: 'catching up',
          }),
        ],
        1,
      ),
      // c's retiring replica of partition 1 says nothing about the group now.
      known('c', [group(1, { term: 9, role: 'leader', leader: 'c', retiring: true })]),
    ]);
    const view = clusterView(registry, statuses);
    expect(view.rows).to.have.length(SETTINGS.partitions);
    expect(view.rows.map((row) => row.placement)).to.deep.equal(
      view.rows.map((row) => placement.replicasOf(row.partition)),
    );
    expect(view.rows.flatMap((row) => row.placement)).to.not.include('d');
    expect(view.rows[0]).to.include({ leader: 'b', term: 3, commit: 9, moving: false });
    expect(view.rows[1]).to.include({ leader: 'b', term: 4, moving: true, note: 'catching up' });
    expect(view.rows[1]!.learners).to.deep.equal(['c']);
    // Nothing known of the others: the placement only.
    expect(view.rows[2]).to.include({ leader: undefined, voters: undefined, moving: false });
  });

  it('a tie in term goes to the leader; replicas other than the placement are a move', () => {
    const statuses = new Map([
      known('a', [group(0, { term: 5, leader: null, voters: ['a', 'b', 'd'] })]),
      known('b', [group(0, { term: 5, role: 'leader', leader: 'b', voters: ['a', 'b', 'd'] })]),
    ]);
    const row = clusterView(registry, statuses).rows[0]!;
    expect(row.leader).to.equal('b');
    // d is down, so the ring never places on it: the group must move.
    expect(placed0).to.not.include('d');
    expect(row.moving).to.equal(true);
  });

  it('members: registry state and kind, placed partitions, and what their statuses say', () => {
    const statuses = new Map([known('a', [group(0, { role: 'leader' }), group(3, {})], 2)]);
    const members = clusterView(registry, statuses).members;
    expect(members.map((m) => [m.nodeId, m.state, m.kind])).to.deep.equal([
      ['a', 'up', 'node'],
      ['b', 'up', 'node'],
      ['c', 'up', 'browser'],
      ['d', 'down', 'node'],
    ]);
    expect(members[0]).to.include({
      hosted: 2,
      leading: 1,
      movesInProgress: 2,
      source: 'HTTP /status',
    });
    expect(members[0]!.placed).to.equal(placement.partitionsOf('a').length);
    expect(members[1]).to.include({ hosted: undefined, source: undefined });
    expect(members[3]!.placed).to.equal(0);
  });

  it('token positions are the ring positions of id#i as fractions of a turn', () => {
    const positions = new TokenPositions(SETTINGS.tokensPerNode).of('a');
    expect(positions).to.have.length(SETTINGS.tokensPerNode);
    expect(positions[3]).to.equal(positionOf('a#3')[0] / 2 ** 32);
    for (const turn of positions) expect(turn).to.be.at.least(0).and.below(1);
  });
});
