import { expect } from 'chai';
import { DropReason, MessageType, type RaftError, RaftErrorCode } from '../src/index.ts';
import { enc, Network } from './harness.ts';

const ids = ['a', 'b', 'c'];

describe('raft: leadership transfer (thesis §3.10)', () => {
  it('transfer to an up-to-date follower: it becomes leader at once via MsgTimeoutNow', () => {
    const net = new Network(ids, { seed: 61 });
    const leader = net.electLeader();
    const target = ids.find((id) => id !== leader.id)!;
    leader.raw.transferLeader(target);
    net.stabilize();
    expect(net.leader()!.id).to.equal(target);
    expect(
      net.delivered.some((m) => m.type === MessageType.TimeoutNow && m.to === target),
    ).to.equal(true);
    expect(leader.status.role).to.equal('follower');
  });

  it('transfer requested on a follower is forwarded to the leader', () => {
    const net = new Network(ids, { seed: 62 });
    const leader = net.electLeader();
    const [asker, target] = ids.filter((id) => id !== leader.id);
    net.node(asker!).raw.transferLeader(target!);
    net.stabilize();
    expect(net.leader()!.id).to.equal(target);
  });

  it('transfer to a lagging follower: the leader first catches it up, then hands over', () => {
    const net = new Network(ids, { seed: 63 });
    const leader = net.electLeader();
    const target = ids.find((id) => id !== leader.id)!;
    net.crash(target);
    for (let i = 0; i < 5; i++) net.propose(leader.id, `v${i}`);
    net.restart(target);
    leader.raw.transferLeader(target);
    expect(leader.status.leadTransferee).to.equal(target);
    net.tickUntil(() => net.leader()?.id === target, 50);
    expect(net.node(target).state).to.deep.equal(['v0', 'v1', 'v2', 'v3', 'v4']);
  });

  it('transfer timeout: a transfer to an unreachable follower is abandoned after an election timeout', () => {
    const net = new Network(ids, { seed: 64 });
    const leader = net.electLeader();
    const target = ids.find((id) => id !== leader.id)!;
    net.crash(target);
    net.propose(leader.id, 'x');
    leader.raw.transferLeader(target);
    net.stabilize();
    expect(leader.status.leadTransferee).to.equal(target);
    // Proposals are refused while the transfer runs...
    try {
      leader.raw.propose(enc('blocked'));
      expect.fail('proposal accepted during transfer');
    } catch (e) {
      expect((e as RaftError).reason).to.equal(DropReason.TransferInProgress);
    }
    net.tick(undefined, 10);
    // ...and accepted again once it is abandoned.
    expect(leader.status.leadTransferee).to.equal(null);
    expect(leader.status.role).to.equal('leader');
    net.propose(leader.id, 'resumed');
    expect(leader.state).to.include('resumed');
  });

  it('transfer to self is a no-op on the leader', () => {
    const net = new Network(ids, { seed: 65 });
    const leader = net.electLeader();
    const term = leader.status.term;
    leader.raw.transferLeader(leader.id);
    net.stabilize();
    expect(leader.status.role).to.equal('leader');
    expect(leader.status.term).to.equal(term);
    expect(leader.status.leadTransferee).to.equal(null);
  });

  it('transfer to the current leader requested on a follower is a no-op (nothing is sent)', () => {
    const net = new Network(ids, { seed: 70 });
    const leader = net.electLeader();
    const follower = net.node(ids.find((id) => id !== leader.id)!);
    follower.raw.transferLeader(leader.id);
    expect(follower.raw.ready().messages).to.deep.equal([]);
    follower.raw.advance();
    expect(net.leader()!.id).to.equal(leader.id);
  });

  it('transfer to a non-member (or a learner) is refused with InvalidArgument', () => {
    const net = new Network(['a', 'b', 'c', 'l'], { seed: 66, learners: ['l'] });
    const leader = net.electLeader();
    for (const target of ['zz', 'l']) {
      try {
        leader.raw.transferLeader(target);
        expect.fail(`transfer to ${target} accepted`);
      } catch (e) {
        expect((e as RaftError).code).to.equal(RaftErrorCode.InvalidArgument);
      }
    }
    expect(leader.status.leadTransferee).to.equal(null);
  });

  it('transfer without a known leader is refused with InvalidState', () => {
    const net = new Network(ids, { seed: 67 });
    try {
      net.node('a').raw.transferLeader('b');
      expect.fail('accepted');
    } catch (e) {
      expect((e as RaftError).code).to.equal(RaftErrorCode.InvalidState);
    }
  });

  it('a second transfer to another node replaces the first; repeating the same is ignored', () => {
    const net = new Network(ids, { seed: 68 });
    const leader = net.electLeader();
    const [t1, t2] = ids.filter((id) => id !== leader.id);
    net.crash(t1!);
    net.crash(t2!);
    net.propose(leader.id, 'x');
    leader.raw.transferLeader(t1!);
    leader.raw.transferLeader(t1!);
    expect(leader.status.leadTransferee).to.equal(t1);
    leader.raw.transferLeader(t2!);
    expect(leader.status.leadTransferee).to.equal(t2);
    net.restart(t2!);
    net.tickUntil(() => net.leader()?.id === t2, 50);
  });

  it('transfer succeeds with PreVote on, and the transferee campaigns without a pre-vote round', () => {
    const net = new Network(ids, { seed: 69, preVote: true });
    const leader = net.electLeader();
    const target = ids.find((id) => id !== leader.id)!;
    const before = net.delivered.length;
    leader.raw.transferLeader(target);
    net.stabilize();
    expect(net.leader()!.id).to.equal(target);
    const after = net.delivered.slice(before);
    expect(after.some((m) => m.type === MessageType.PreVote)).to.equal(false);
    expect(after.some((m) => m.type === MessageType.Vote && m.from === target)).to.equal(true);
  });
});
