import { expect } from 'chai';
import {
  DropReason,
  MessageType,
  mulberry32,
  RaftError,
  RaftErrorCode,
  type Ready,
} from '../src/index.ts';
import { dec, drain, enc, forEachSeed, Network, singleNode } from './harness.ts';

const five = ['a', 'b', 'c', 'd', 'e'];

function expectDrop(fn: () => void, reason: string): void {
  try {
    fn();
  } catch (e) {
    expect(e).to.be.instanceOf(RaftError);
    expect((e as RaftError).code).to.equal(RaftErrorCode.ProposalDropped);
    expect((e as RaftError).reason).to.equal(reason);
    return;
  }
  expect.fail(`expected a drop with reason ${reason}`);
}

describe('raft: log replication (§5.3)', () => {
  it('basic agree: every proposal is applied by every node in order', () => {
    const net = new Network(['a', 'b', 'c']);
    const leader = net.electLeader();
    for (let i = 0; i < 10; i++) net.propose(leader.id, `v${i}`);
    const expected = Array.from({ length: 10 }, (_, i) => `v${i}`);
    for (const n of net.nodes.values()) expect(n.state).to.deep.equal(expected);
  });

  it('many proposals between two Readies (16,000): one Ready holds them all in order; all commit', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 25 });
    const leader = net.electLeader();
    const firstIndex = leader.status.lastIndex + 1;
    const proposed = Array.from({ length: 16_000 }, (_, i) => `p${i}`);
    for (const v of proposed) leader.raw.propose(enc(v));
    const leaderReadies: Ready[] = [];
    net.onReady = (n, rd) => {
      if (n.id !== leader.id || leaderReadies.length > 0) return;
      leaderReadies.push(rd);
      // Proposed while that Ready is outstanding: it must not show up in it (the unstable
      // log appends in place; a Ready holds its own copy).
      leader.raw.propose(enc('later'));
    };
    net.stabilize();
    const rd = leaderReadies[0]!;
    expect(rd.entries.map((e) => dec(e.data))).to.deep.equal(proposed);
    expect(rd.entries.map((e) => e.index)).to.deep.equal(proposed.map((_, i) => firstIndex + i));
    expect(rd.entries.every((e) => e.term === leader.status.term)).to.equal(true);
    // The harness checked on every Ready that entries apply in index order.
    for (const n of net.nodes.values()) expect(n.state).to.deep.equal([...proposed, 'later']);
  });

  it('a follower forwards proposals to the leader', () => {
    const net = new Network(['a', 'b', 'c']);
    const leader = net.electLeader();
    const follower = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    net.propose(follower, 'fwd');
    expect(net.appliedCount('fwd')).to.equal(3);
  });

  it('fail agree: the majority commits while one follower is down; it catches up on rejoin', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 21 });
    const leader = net.electLeader();
    net.propose(leader.id, 'one');
    const follower = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    net.crash(follower);
    for (const v of ['two', 'three', 'four']) net.propose(leader.id, v);
    expect(net.appliedCount('four')).to.equal(2);
    net.restart(follower);
    net.tickUntil(() => net.node(follower).state.includes('four'));
    expect(net.node(follower).state).to.deep.equal(['one', 'two', 'three', 'four']);
  });

  it('fail no-agree: nothing commits without a majority; the leader keeps the entry and commits it later', () => {
    const net = new Network(five, { seed: 22, checkQuorum: false });
    const leader = net.electLeader();
    net.propose(leader.id, 'before');
    const followers = five.filter((id) => id !== leader.id);
    for (const id of followers.slice(0, 3)) net.crash(id);
    net.propose(leader.id, 'stuck');
    net.tick(undefined, 50);
    expect(net.appliedCount('stuck')).to.equal(0);
    expect(leader.status.commit).to.be.lessThan(leader.status.lastIndex);
    for (const id of followers.slice(0, 3)) net.restart(id);
    net.tickUntil(() => net.appliedCount('stuck') === 5);
  });

  it('rejoin of a partitioned leader: its uncommitted entries are discarded, the new leader wins', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 23 });
    const old = net.electLeader();
    net.propose(old.id, 'agreed');
    net.isolate(old.id);
    for (const v of ['lost1', 'lost2']) old.raw.propose(enc(v));
    net.stabilize();
    const others = ['a', 'b', 'c'].filter((id) => id !== old.id);
    net.tickUntil(() => net.leader()?.id !== old.id && others.includes(net.leader()?.id ?? ''));
    const fresh = net.leader()!;
    net.propose(fresh.id, 'new');
    net.heal();
    net.tickUntil(() => old.state.includes('new'));
    for (const id of ['a', 'b', 'c']) {
      expect(net.node(id).state).to.deep.equal(['agreed', 'new']);
    }
  });

  it('backup: a leader quickly backs up over long divergent logs (fast backtracking)', () => {
    const net = new Network(five, { seed: 24 });
    const leader1 = net.electLeader();
    net.propose(leader1.id, 'base');
    const follower1 = five.find((id) => id !== leader1.id)!;
    // Leader and one follower in the minority accumulate 50 uncommitted entries.
    for (const a of [leader1.id, follower1]) {
      for (const b of five) if (b !== leader1.id && b !== follower1) net.cut(a, b);
    }
    for (let i = 0; i < 50; i++) leader1.raw.propose(enc(`minority${i}`));
    net.stabilize();
    const majority = five.filter((id) => id !== leader1.id && id !== follower1);
    net.tickUntil(() => majority.includes(net.leader()?.id ?? ''));
    const leader2 = net.leader()!;
    for (let i = 0; i < 50; i++) net.propose(leader2.id, `majority${i}`);
    net.heal();
    const before = net.delivered.length;
    net.tickUntil(() => net.appliedCount('majority49') === 5);
    const rejections = net.delivered
      .slice(before)
      .filter((m) => m.type === MessageType.AppResp && m.reject);
    // One rejection per term of divergence, not one per divergent entry.
    expect(rejections.length).to.be.at.most(4);
    for (const id of five)
      expect(net.node(id).state.filter((s) => s.startsWith('minority'))).to.be.empty;
  });

  it('flow control: at most maxInflightMsgs unacknowledged MsgApps to a follower', () => {
    const net = new Network(['a', 'b', 'c'], {
      seed: 25,
      maxInflightMsgs: 3,
      maxSizePerMsgBytes: 64,
    });
    const leader = net.electLeader();
    net.propose(leader.id, 'warmup');
    const slow = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    net.intercept = (m) => (m.type === MessageType.AppResp && m.from === slow ? null : m);
    const before = net.delivered.length;
    // Each 64-byte entry fills a message, so each proposal would need its own MsgApp.
    for (let i = 0; i < 10; i++) leader.raw.propose(new Uint8Array(64).fill(i));
    net.stabilize();
    const apps = net.delivered
      .slice(before)
      .filter((m) => m.type === MessageType.App && m.to === slow);
    expect(apps.length).to.equal(3);
    const p = leader.status.progress.get(slow)!;
    expect(p.state).to.equal('replicate');
    expect(p.inflightMsgs).to.equal(3);
    // Acks resume the pipeline and the follower gets everything.
    net.intercept = null;
    net.tickUntil(() => net.node(slow).status.commit === leader.status.commit);
  });

  it('flow control: maxInflightBytes bounds the bytes in flight', () => {
    const net = new Network(['a', 'b', 'c'], {
      seed: 26,
      maxInflightMsgs: 100,
      maxSizePerMsgBytes: 100,
      maxInflightBytes: 250,
    });
    const leader = net.electLeader();
    net.propose(leader.id, 'warmup');
    const slow = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    net.intercept = (m) => (m.type === MessageType.AppResp && m.from === slow ? null : m);
    const before = net.delivered.length;
    for (let i = 0; i < 10; i++) leader.raw.propose(new Uint8Array(100));
    net.stabilize();
    const apps = net.delivered
      .slice(before)
      .filter((m) => m.type === MessageType.App && m.to === slow);
    // 100 payload bytes per message: the window is full once 300 ≥ 250 bytes are out.
    expect(apps.length).to.equal(3);
    expect(leader.status.progress.get(slow)!.inflightBytes).to.equal(300);
  });

  it('flow control: maxSizePerMsgBytes splits entries over several MsgApps (at least one entry each)', () => {
    const net = new Network(['a', 'b'], { seed: 27, maxSizePerMsgBytes: 300 });
    const leader = net.electLeader();
    const follower = leader.id === 'a' ? 'b' : 'a';
    net.crash(follower);
    for (let i = 0; i < 6; i++) leader.raw.propose(new Uint8Array(100).fill(i));
    leader.raw.propose(new Uint8Array(1000)); // larger than a message: sent alone
    net.stabilize();
    net.restart(follower);
    const before = net.delivered.length;
    net.tickUntil(() => net.node(follower).status.commit === leader.status.lastIndex);
    const apps = net.delivered
      .slice(before)
      .filter((m) => m.type === MessageType.App && m.entries.length > 0);
    for (const m of apps) {
      const bytes = m.entries.reduce((n, e) => n + e.data.byteLength + 24, 0);
      expect(m.entries.length === 1 || bytes <= 300, `MsgApp of ${bytes} bytes`).to.equal(true);
    }
    expect(apps.some((m) => m.entries.length > 1)).to.equal(true);
  });

  it('reportUnreachable stops pipelining to a follower (replicate → probe)', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 30 });
    const leader = net.electLeader();
    net.propose(leader.id, 'x');
    const follower = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    expect(leader.status.progress.get(follower)!.state).to.equal('replicate');
    leader.raw.reportUnreachable(follower);
    expect(leader.status.progress.get(follower)!.state).to.equal('probe');
    net.propose(leader.id, 'y');
    expect(leader.status.progress.get(follower)!.state).to.equal('replicate');
    expect(net.node(follower).state).to.deep.equal(['x', 'y']);
  });

  it('a caught-up follower in probe state is probed on its heartbeat response and replicates again', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 31 });
    const leader = net.electLeader();
    net.propose(leader.id, 'x');
    const follower = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    leader.raw.reportUnreachable(follower);
    const pr = () => leader.status.progress.get(follower)!;
    expect(pr().state).to.equal('probe');
    expect(pr().match, 'it has the whole log').to.equal(leader.status.lastIndex);
    net.tick([leader.id], 1); // a heartbeat round, nothing new to send
    expect(pr().state, 'without an append it would stay in probe').to.equal('replicate');
  });

  it('one MsgApp per follower per Ready: a commit advance after an append of the same Ready raises its commit; a follower answers two appends of one Ready once', () => {
    const ids = ['a', 'b', 'c'];
    const nodes = new Map(ids.map((id) => [id, singleNode(id, ids, { seed: 3 })]));
    const node = (id: string) => nodes.get(id)!;
    const settle = () => {
      for (let moved = true; moved; ) {
        moved = false;
        for (const { raw, storage } of nodes.values()) {
          for (const m of drain(raw, storage)) {
            node(m.to).raw.step(m);
            moved = true;
          }
        }
      }
    };
    const a = node('a');
    a.raw.campaign();
    settle();
    expect(a.raw.status().role).to.equal('leader');
    expect(a.raw.status().progress.get('b')!.state).to.equal('replicate');
    // p1 goes out; the followers' answers come back after p2 was proposed, before the
    // leader's next Ready: it sends p2 to each as it steps the answer, and the commit of p1
    // would then have gone in a second, empty MsgApp of the same Ready.
    a.raw.propose(enc('p1'));
    const toFollowers = drain(a.raw, a.storage);
    const p1Index = a.raw.status().lastIndex;
    const answers = toFollowers.flatMap((m) => {
      node(m.to).raw.step(m);
      return drain(node(m.to).raw, node(m.to).storage);
    });
    a.raw.propose(enc('p2'));
    for (const m of answers) a.raw.step(m);
    const rd = a.raw.ready();
    for (const id of ['b', 'c']) {
      const apps = rd.messages.filter((m) => m.type === MessageType.App && m.to === id);
      expect(
        apps.map((m) => [apps.length, m.index, m.commit, m.entries.map((e) => dec(e.data))]),
      ).to.deep.equal([[1, p1Index, p1Index, ['p2']]]);
    }
    a.storage.append(rd.entries);
    if (rd.hardState) a.storage.setHardState(rd.hardState);
    a.raw.advance();
    // b gets p3 and p4 (two MsgApps, pipelined) before its next Ready: one answer, for p4.
    a.raw.propose(enc('p3'));
    const first = drain(a.raw, a.storage);
    a.raw.propose(enc('p4'));
    const second = drain(a.raw, a.storage);
    const b = node('b');
    const c = node('c');
    for (const m of [...rd.messages, ...first, ...second]) node(m.to).raw.step(m);
    const answered = drain(b.raw, b.storage).filter((m) => m.type === MessageType.AppResp);
    expect(answered.map((m) => [m.index, m.reject])).to.deep.equal([
      [a.raw.status().lastIndex, false],
    ]);
    for (const m of [...answered, ...drain(c.raw, c.storage)]) a.raw.step(m);
    settle();
    for (const { raw } of nodes.values())
      expect(raw.status().commit).to.equal(a.raw.status().lastIndex);
  });

  it('proposal dropped with reason no-leader when no leader is known', () => {
    const net = new Network(['a', 'b', 'c']);
    expectDrop(() => net.node('a').raw.propose(enc('x')), DropReason.NoLeader);
  });

  it('proposal dropped with reason uncommitted-log-full once the uncommitted log exceeds its bound', () => {
    const net = new Network(['a', 'b', 'c'], {
      seed: 28,
      maxUncommittedEntriesBytes: 1000,
      checkQuorum: false,
    });
    const leader = net.electLeader();
    net.isolate(leader.id);
    for (let i = 0; i < 10; i++) leader.raw.propose(new Uint8Array(100));
    expectDrop(() => leader.raw.propose(new Uint8Array(100)), DropReason.UncommittedLogFull);
    expect(leader.status.uncommittedBytes).to.equal(1000);
    // Empty entries never count against the bound.
    net.heal();
    net.tickUntil(() => leader.status.commit === leader.status.lastIndex);
    net.stabilize();
    expect(leader.status.uncommittedBytes).to.equal(0);
    leader.raw.propose(new Uint8Array(100));
  });

  it('proposal dropped with reason forwarding-disabled on a follower that does not forward', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 29, disableProposalForwarding: true });
    const leader = net.electLeader();
    const follower = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    expectDrop(() => net.node(follower).raw.propose(enc('x')), DropReason.ForwardingDisabled);
  });
});

describe('raft: persistence (Figure 2: term, vote and log survive restarts)', () => {
  it('persist and restart the leader: committed data survives and the cluster continues', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 31 });
    const leader = net.electLeader();
    net.propose(leader.id, 'x');
    net.restart(leader.id);
    expect(leader.state, 'the state machine re-applies the log on restart').to.deep.equal([]);
    const next = net.electLeader();
    net.propose(next.id, 'y');
    net.tickUntil(() => net.appliedCount('y') === 3);
    for (const n of net.nodes.values()) expect(n.state).to.deep.equal(['x', 'y']);
  });

  it('persist and restart the followers: they recover term, vote and log', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 32 });
    const leader = net.electLeader();
    net.propose(leader.id, 'x');
    for (const id of ['a', 'b', 'c']) {
      if (id === leader.id) continue;
      const { term, vote } = net.node(id).status;
      net.restart(id);
      expect(net.node(id).status.term).to.equal(term);
      expect(net.node(id).status.vote).to.equal(vote);
    }
    net.propose(leader.id, 'y');
    net.tickUntil(() => net.appliedCount('y') === 3);
    for (const n of net.nodes.values()) expect(n.state).to.deep.equal(['x', 'y']);
  });

  it('persist and restart all: a full-cluster restart loses nothing committed', () => {
    const net = new Network(five, { seed: 33 });
    for (let round = 0; round < 5; round++) {
      const leader = net.electLeader();
      net.propose(leader.id, `r${round}`);
      for (const id of five) net.crash(id);
      for (const id of five) net.restart(id);
    }
    net.electLeader();
    net.tickUntil(() => net.appliedCount('r4') === 5);
    for (const n of net.nodes.values())
      expect(n.state).to.deep.equal(['r0', 'r1', 'r2', 'r3', 'r4']);
  });

  it('persist: a node restarted while partitioned keeps its vote (no double vote in a term)', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 34, preVote: false });
    net.campaign('a');
    const { term, vote } = net.node('b').status;
    expect(vote).to.equal('a');
    net.restart('b');
    expect(net.node('b').status.vote).to.equal('a');
    expect(net.node('b').status.term).to.equal(term);
  });
});

describe('raft: Figure 8 (§5.4.2)', () => {
  for (const unreliable of [false, true]) {
    it(`Figure 8 (${unreliable ? 'unreliable' : 'reliable'}): random leader crashes never lose a committed entry`, () => {
      forEachSeed([unreliable ? 808 : 8], (seed) => {
        const net = new Network(five, { seed });
        const rng = mulberry32(seed);
        if (unreliable) net.unreliable();
        let up = five.length;
        for (let iter = 0; iter < 200; iter++) {
          const leader = net.leader();
          if (leader && leader.status.role === 'leader') {
            try {
              leader.raw.propose(enc(`v${iter}`));
            } catch (e) {
              if (!(e instanceof RaftError)) throw e;
            }
          }
          net.tick(undefined, rng.nextInt(8) + 1);
          if (leader && rng.nextInt(100) < 50 && !net.isDown(leader.id)) {
            net.crash(leader.id);
            up--;
          }
          if (up < 3) {
            const down = five.filter((id) => net.isDown(id));
            net.restart(down[rng.nextInt(down.length)]!);
            up++;
          }
        }
        // The harness checked on every apply that no index got two different entries.
        net.finalAgreement();
      });
    });
  }
});
