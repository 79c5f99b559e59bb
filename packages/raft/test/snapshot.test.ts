import { expect } from 'chai';
import { ConfChangeType, MessageType, mulberry32 } from '../src/index.ts';
import { type ClusterOptions, enc, Network } from './harness.ts';

/** Proposes `count` values on the leader and compacts every live node's log. */
function writeAndCompact(net: Network, leaderId: string, prefix: string, count: number): void {
  for (let i = 0; i < count; i++) net.propose(leaderId, `${prefix}${i}`);
  for (const id of net.liveIds()) {
    const n = net.node(id);
    if (n.appliedIndex > n.storage.snapshot().metadata.index) n.snapshotAndCompact();
  }
}

/**
 * A 3-node cluster whose leader wrote `count` values and compacted while one follower was
 * down; the follower is restarted and must be caught up by snapshot.
 */
function laggingFollower(seed: number, count: number, options: ClusterOptions = {}) {
  const net = new Network(['a', 'b', 'c'], { seed, ...options });
  const leader = net.electLeader();
  const lagging = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
  net.crash(lagging);
  writeAndCompact(net, leader.id, 'v', count);
  net.restart(lagging);
  return { net, leader, lagging };
}

describe('raft: log compaction and snapshots (§7)', () => {
  it('snapshot install (basic): a follower behind the compacted log is caught up by snapshot', () => {
    const { net, leader, lagging } = laggingFollower(41, 20);
    expect(leader.storage.firstIndex()).to.be.greaterThan(2);
    net.tickUntil(() => net.node(lagging).state.length === 20);
    expect(net.node(lagging).state).to.deep.equal(leader.state);
    expect(net.delivered.some((m) => m.type === MessageType.Snap && m.to === lagging)).to.equal(
      true,
    );
    // Replication continues from the log after the snapshot.
    net.propose(leader.id, 'after');
    expect(net.node(lagging).state.at(-1)).to.equal('after');
    expect(leader.status.progress.get(lagging)!.state).to.equal('replicate');
  });

  it('snapshots are sent in chunks of at most maxSnapshotChunkBytes and reassembled', () => {
    const { net, leader, lagging } = laggingFollower(42, 30, { maxSnapshotChunkBytes: 64 });
    net.tickUntil(() => net.node(lagging).state.length === 30);
    const chunks = net.delivered.filter((m) => m.type === MessageType.Snap && m.to === lagging);
    const total = chunks[0]!.snapshot!.totalBytes;
    expect(chunks.length).to.equal(Math.ceil(total / 64));
    for (const c of chunks) expect(c.snapshot!.data.byteLength).to.be.at.most(64);
    expect(net.node(lagging).state).to.deep.equal(leader.state);
  });

  it('a lost chunk makes the follower reject and the leader restart the transfer', () => {
    const { net, leader, lagging } = laggingFollower(43, 20, { maxSnapshotChunkBytes: 32 });
    let dropped = false;
    net.intercept = (m) => {
      if (!dropped && m.type === MessageType.Snap && m.snapshot!.offsetBytes === 64) {
        dropped = true;
        return null;
      }
      return m;
    };
    net.tickUntil(() => net.node(lagging).state.length === 20);
    expect(dropped).to.equal(true);
    expect(net.delivered.some((m) => m.type === MessageType.SnapResp && m.reject)).to.equal(true);
    expect(net.node(lagging).state).to.deep.equal(leader.state);
  });

  it('a lost last chunk stalls nothing: the leader resends after snapshotTimeoutTicks', () => {
    const { net, lagging } = laggingFollower(44, 20, {
      maxSnapshotChunkBytes: 32,
      snapshotTimeoutTicks: 15,
    });
    let dropped = 0;
    net.intercept = (m) => {
      const c = m.snapshot;
      if (dropped === 0 && c && c.offsetBytes + c.data.byteLength === c.totalBytes) {
        dropped++;
        return null;
      }
      return m;
    };
    net.tickUntil(() => net.node(lagging).state.length === 20);
    expect(dropped).to.equal(1);
    const sends = net.delivered.filter(
      (m) => m.type === MessageType.Snap && m.snapshot!.offsetBytes === 0,
    );
    expect(sends.length).to.be.at.least(2);
  });

  it('snapshot install (crash): a follower crashing mid-transfer installs it after restart', () => {
    const { net, leader, lagging } = laggingFollower(45, 20, { maxSnapshotChunkBytes: 32 });
    let crashed = false;
    net.intercept = (m) => {
      if (!crashed && m.type === MessageType.Snap && m.snapshot!.offsetBytes === 96) {
        crashed = true;
        net.crash(lagging);
        return null;
      }
      return m;
    };
    net.tick(undefined, 30);
    expect(crashed).to.equal(true);
    net.restart(lagging);
    net.tickUntil(() => net.node(lagging).state.length === 20);
    expect(net.node(lagging).state).to.deep.equal(leader.state);
  });

  it('snapshot install (crash): a follower restarted after installing recovers from its stored snapshot', () => {
    const { net, leader, lagging } = laggingFollower(46, 10);
    net.tickUntil(() => net.node(lagging).state.length === 10);
    net.restart(lagging);
    expect(net.node(lagging).state).to.deep.equal(leader.state);
    net.propose(leader.id, 'more');
    net.tickUntil(() => net.node(lagging).state.at(-1) === 'more');
  });

  it('snapshot install (unreliable): random loss, crashes and compactions still converge', () => {
    const seed = 4747;
    const ids = ['a', 'b', 'c', 'd', 'e'];
    const net = new Network(ids, { seed, maxSnapshotChunkBytes: 48 });
    const rng = mulberry32(seed);
    net.unreliable();
    let written = 0;
    try {
      for (let iter = 0; iter < 60; iter++) {
        const leader = net.leader();
        if (leader) {
          for (let k = 0; k < 3; k++) {
            try {
              leader.raw.propose(enc(`w${written}`));
              written++;
            } catch {
              break;
            }
          }
        }
        net.tick(undefined, rng.nextInt(5) + 1);
        const victim = ids[rng.nextInt(ids.length)]!;
        if (net.isDown(victim)) net.restart(victim);
        else if (ids.filter((id) => net.isDown(id)).length < 2) net.crash(victim);
        if (iter % 10 === 9) {
          for (const id of net.liveIds()) {
            const n = net.node(id);
            if (n.appliedIndex > n.storage.snapshot().metadata.index) n.snapshotAndCompact();
          }
        }
      }
      net.heal();
      for (const id of ids) if (net.isDown(id)) net.restart(id);
      const leader = net.electLeader();
      net.propose(leader.id, 'final');
      net.tickUntil(() => net.appliedCount('final') === 5);
      const states = ids.map((id) => net.node(id).state.join(','));
      expect(new Set(states).size).to.equal(1);
    } catch (e) {
      throw new Error(`seed ${seed}: ${(e as Error).message}`);
    }
  });

  it('a new node is added as learner, caught up by snapshot, then promoted to voter', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 48 });
    const leader = net.electLeader();
    net.addBlank('d');
    leader.raw.proposeConfChange({ type: ConfChangeType.AddLearnerNode, nodeId: 'd' });
    net.stabilize();
    expect(leader.confState.learners).to.deep.equal(['d']);
    writeAndCompact(net, leader.id, 'v', 10);
    net.tickUntil(() => net.node('d').state.length === 10);
    expect(net.delivered.some((m) => m.type === MessageType.Snap && m.to === 'd')).to.equal(true);
    leader.raw.proposeConfChange({ type: ConfChangeType.AddNode, nodeId: 'd' });
    net.stabilize();
    net.tickUntil(() => net.node('d').confState.voters.includes('d'));
    expect(leader.confState.voters).to.deep.equal(['a', 'b', 'c', 'd']);
    net.propose(leader.id, 'four-voters');
    expect(net.appliedCount('four-voters')).to.equal(4);
  });
});
