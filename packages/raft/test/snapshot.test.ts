import { expect } from 'chai';
import {
  ConfChangeType,
  type Message,
  MessageType,
  messageTypeName,
  mulberry32,
  newMessage,
  type SnapshotChunk,
} from '../src/index.ts';
import {
  type ClusterOptions,
  compactAll,
  confStateOf,
  drain,
  enc,
  forEachSeed,
  Network,
  singleNode,
} from './harness.ts';

/** Proposes `count` values on the leader and compacts every live node's log. */
function writeAndCompact(net: Network, leaderId: string, prefix: string, count: number): void {
  for (let i = 0; i < count; i++) net.propose(leaderId, `${prefix}${i}`);
  compactAll(net);
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

  /** Drops the first snapshot chunk `pick` selects; returns a counter of drops. */
  function dropFirstChunk(net: Network, pick: (c: SnapshotChunk) => boolean): { dropped: number } {
    const state = { dropped: 0 };
    net.intercept = (m) => {
      if (state.dropped === 0 && m.snapshot && pick(m.snapshot)) {
        state.dropped++;
        return null;
      }
      return m;
    };
    return state;
  }

  const chunksAt = (net: Network, offset: number) =>
    net.delivered.filter((m) => m.type === MessageType.Snap && m.snapshot!.offsetBytes === offset)
      .length;

  it('a lost chunk: later chunks are ignored and the leader resends from the acknowledged offset', () => {
    const { net, leader, lagging } = laggingFollower(43, 20, { maxSnapshotChunkBytes: 32 });
    const drops = dropFirstChunk(net, (c) => c.offsetBytes === 64);
    net.tickUntil(() => net.node(lagging).state.length === 20);
    expect(drops.dropped).to.equal(1);
    expect(chunksAt(net, 64), 'the lost chunk was sent again').to.equal(1);
    expect(chunksAt(net, 0), 'the transfer resumed, it did not start over').to.equal(1);
    expect(net.node(lagging).state).to.deep.equal(leader.state);
  });

  it('a lost last chunk stalls nothing: the leader resends it after snapshotTimeoutTicks', () => {
    const { net, lagging } = laggingFollower(44, 20, {
      maxSnapshotChunkBytes: 32,
      snapshotTimeoutTicks: 15,
    });
    let total = 0;
    const drops = dropFirstChunk(net, (c) => {
      total = c.totalBytes;
      return c.offsetBytes + c.data.byteLength === c.totalBytes;
    });
    net.tickUntil(() => net.node(lagging).state.length === 20);
    expect(drops.dropped).to.equal(1);
    expect(chunksAt(net, Math.floor((total - 1) / 32) * 32)).to.equal(1);
    expect(chunksAt(net, 0)).to.equal(1);
  });

  it('a late duplicate chunk of an installed (or older) snapshot leaves the newer transfer in progress', () => {
    const { raw, storage } = singleNode('b', ['a', 'b']);
    const at = { groupId: 1, from: 'a', to: 'b', term: 1 };
    raw.step(newMessage({ ...at, type: MessageType.Heartbeat }));
    drain(raw, storage);
    const data = enc('0123456789abcdef');
    const chunk = (index: number, offsetBytes: number) =>
      newMessage({
        ...at,
        type: MessageType.Snap,
        snapshot: {
          metadata: { index, term: 1, confState: confStateOf(['a', 'b']) },
          offsetBytes,
          totalBytes: data.byteLength,
          data: data.subarray(offsetBytes, offsetBytes + 8),
        },
      });
    const answers = (m: Message) => {
      raw.step(m);
      return drain(raw, storage).map(
        (r) => `${messageTypeName(r.type)} ${r.index} ${r.rejectHint}`,
      );
    };
    expect(answers(chunk(5, 0))).to.deep.equal(['MsgSnapResp 5 8']);
    expect(answers(chunk(5, 8))).to.deep.equal(['MsgAppResp 5 0']);
    expect(answers(chunk(9, 0))).to.deep.equal(['MsgSnapResp 9 8']);
    // Late duplicates: of the installed snapshot 5, and of a never-finished snapshot 7.
    expect(answers(chunk(5, 0))).to.deep.equal(['MsgAppResp 5 0']);
    expect(answers(chunk(7, 0)), 'an older transfer of the same leader and term').to.deep.equal([]);
    expect(answers(chunk(9, 8)), 'snapshot 9 completes').to.deep.equal(['MsgAppResp 9 0']);
    expect(raw.status().commit).to.equal(9);
  });

  it('snapshot flow control: at most maxSnapshotInflightChunks chunks are unacknowledged', () => {
    const { net, lagging } = laggingFollower(49, 30, {
      maxSnapshotChunkBytes: 16,
      maxSnapshotInflightChunks: 3,
    });
    net.intercept = (m) => (m.type === MessageType.SnapResp ? null : m);
    net.tickUntil(() => chunksAt(net, 0) > 0, 50);
    const chunks = net.delivered.filter((m) => m.type === MessageType.Snap && m.to === lagging);
    expect(chunks.map((m) => m.snapshot!.offsetBytes)).to.deep.equal([0, 16, 32]);
    // Acknowledgements open the window again and the transfer completes.
    net.intercept = null;
    net.tickUntil(() => net.node(lagging).state.length === 30);
  });

  it('a snapshot that predates the follower joining is refused; a newer one installs', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 50 });
    const leader = net.electLeader();
    writeAndCompact(net, leader.id, 'v', 5); // this snapshot does not know 'd'
    net.addBlank('d');
    leader.raw.proposeConfChange({ type: ConfChangeType.AddLearnerNode, nodeId: 'd' });
    net.stabilize();
    net.tick(undefined, 3);
    expect(net.delivered.some((m) => m.type === MessageType.SnapResp && m.reject)).to.equal(true);
    expect(net.node('d').state).to.deep.equal([]);
    // The host snapshots after the configuration change, as the Storage contract asks.
    leader.snapshotAndCompact();
    net.tickUntil(() => net.node('d').state.length === 5);
    expect(net.node('d').confState.learners).to.deep.equal(['d']);
  });

  it('reportSnapshot(failure) from the host aborts the transfer; probing sends it again', () => {
    const { net, leader, lagging } = laggingFollower(47, 10);
    net.intercept = (m) => (m.type === MessageType.Snap ? null : m);
    net.tickUntil(() => leader.status.progress.get(lagging)!.state === 'snapshot', 50);
    leader.raw.reportSnapshot(lagging, 'failure');
    expect(leader.status.progress.get(lagging)!.state).to.equal('probe');
    expect(leader.status.progress.get(lagging)!.pendingSnapshot).to.equal(0);
    net.intercept = null;
    net.tickUntil(() => net.node(lagging).state.length === 10);
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
    forEachSeed([4747], (seed) => {
      const ids = ['a', 'b', 'c', 'd', 'e'];
      const net = new Network(ids, { seed, maxSnapshotChunkBytes: 48 });
      const rng = mulberry32(seed);
      net.unreliable();
      let written = 0;
      for (let iter = 0; iter < 60; iter++) {
        const leader = net.leader();
        for (let k = 0; leader && k < 3; k++) {
          try {
            leader.raw.propose(enc(`w${written}`));
            written++;
          } catch {
            break;
          }
        }
        net.tick(undefined, rng.nextInt(5) + 1);
        const victim = ids[rng.nextInt(ids.length)]!;
        if (net.isDown(victim)) net.restart(victim);
        else if (ids.filter((id) => net.isDown(id)).length < 2) net.crash(victim);
        if (iter % 10 === 9) compactAll(net);
      }
      net.finalAgreement();
      expect(written).to.be.greaterThan(20);
    });
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
