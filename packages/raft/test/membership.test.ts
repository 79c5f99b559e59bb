import { expect } from 'chai';
import {
  ConfChangeTransition,
  ConfChangeType,
  type ConfChangeV2,
  DropReason,
  decodeConfChange,
  EntryType,
  encodeConfChange,
  MessageType,
  mulberry32,
  newMessage,
  RaftError,
  RaftErrorCode,
} from '../src/index.ts';
import { compactAll, enc, forEachSeed, Network } from './harness.ts';

const add = (nodeId: string) => ({ type: ConfChangeType.AddNode, nodeId });
const remove = (nodeId: string) => ({ type: ConfChangeType.RemoveNode, nodeId });
const addLearner = (nodeId: string) => ({ type: ConfChangeType.AddLearnerNode, nodeId });

function dropReason(fn: () => void): string | null {
  try {
    fn();
    return null;
  } catch (e) {
    expect(e).to.be.instanceOf(RaftError);
    return (e as RaftError).reason;
  }
}

/** Adds blank node `id` as a learner and waits until it has caught up (via snapshot). */
function addCaughtUpLearner(net: Network, leaderId: string, id: string): void {
  net.addBlank(id);
  net.node(leaderId).raw.proposeConfChange(addLearner(id));
  net.stabilize();
  const leader = net.node(leaderId);
  leader.snapshotAndCompact();
  net.tickUntil(() => net.node(id).appliedIndex === leader.appliedIndex);
}

describe('raft: membership changes (thesis §4) with learners and joint consensus', () => {
  it('membership add: a voter added by a simple change takes part in the quorum', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 51 });
    const leader = net.electLeader();
    addCaughtUpLearner(net, leader.id, 'd');
    leader.raw.proposeConfChange(add('d'));
    net.stabilize();
    expect(leader.confState.voters).to.deep.equal(['a', 'b', 'c', 'd']);
    // With four voters a commit needs three: two down blocks progress.
    const [x, y] = ['a', 'b', 'c'].filter((id) => id !== leader.id);
    net.crash(x!);
    net.crash(y!);
    leader.raw.propose(enc('needs-d'));
    net.stabilize();
    expect(leader.state).to.not.include('needs-d');
    net.restart(x!);
    net.tickUntil(() => leader.state.includes('needs-d'));
  });

  it('membership remove: a removed follower stops counting; the rest keep committing', () => {
    const net = new Network(['a', 'b', 'c', 'd'], { seed: 52 });
    const leader = net.electLeader();
    const victim = ['a', 'b', 'c', 'd'].find((id) => id !== leader.id)!;
    leader.raw.proposeConfChange(remove(victim));
    net.stabilize();
    expect(leader.confState.voters).to.not.include(victim);
    net.crash(victim);
    const [x] = ['a', 'b', 'c', 'd'].filter((id) => id !== leader.id && id !== victim);
    net.crash(x!);
    // Three voters left, two up: still a majority.
    net.propose(leader.id, 'after-remove');
    expect(leader.state).to.include('after-remove');
  });

  it('membership replace leader: joint consensus swaps the leader out; it steps down and a new leader continues', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 53 });
    const leader = net.electLeader();
    addCaughtUpLearner(net, leader.id, 'd');
    const cc: ConfChangeV2 = {
      transition: ConfChangeTransition.Auto,
      changes: [add('d'), remove(leader.id)],
    };
    leader.raw.proposeConfChange(cc);
    net.stabilize();
    // Entering the joint config was applied; the leader then left it automatically.
    net.tickUntil(
      () =>
        net.node('d').confState.votersOutgoing.length === 0 &&
        net.node('d').confState.voters.includes('d'),
    );
    const expected = ['a', 'b', 'c', 'd'].filter((id) => id !== leader.id);
    expect(net.node('d').confState.voters).to.deep.equal(expected);
    expect(leader.status.role, 'removed leader steps down').to.equal('follower');
    net.crash(leader.id);
    const next = net.electLeader();
    expect(expected).to.include(next.id);
    net.propose(next.id, 'post-replace');
    for (const id of expected) expect(net.node(id).state).to.include('post-replace');
  });

  it('membership remove leader (simple change): it steps down once the removal is applied; the rest elect a leader', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 60 });
    const leader = net.electLeader();
    net.propose(leader.id, 'before');
    leader.raw.proposeConfChange(remove(leader.id));
    net.stabilize();
    expect(leader.confState.voters).to.not.include(leader.id);
    expect(leader.status.role).to.equal('follower');
    // It no longer campaigns: it is not in the configuration.
    net.tick([leader.id], 100);
    expect(leader.status.role).to.equal('follower');
    const rest = ['a', 'b', 'c'].filter((id) => id !== leader.id);
    net.tickUntil(() => rest.includes(net.leader()?.id ?? ''));
    net.propose(net.leader()!.id, 'after');
    for (const id of rest) expect(net.node(id).state).to.deep.equal(['before', 'after']);
  });

  for (const preVote of [false, true]) {
    for (const checkQuorum of [false, true]) {
      it(`a replica that missed its own removal never disrupts the group (preVote ${preVote}, checkQuorum ${checkQuorum}); members report it`, () => {
        const net = new Network(['a', 'b', 'c', 'd'], { seed: 61, preVote, checkQuorum });
        net.campaign('a');
        const leader = net.electLeader();
        expect(leader.id).to.equal('a');
        net.isolate('d');
        leader.raw.proposeConfChange(remove('d'));
        net.stabilize();
        for (const id of ['a', 'b', 'c'])
          expect(net.node(id).confState.voters, id).to.deep.equal(['a', 'b', 'c']);
        expect(net.node('d').confState.voters, 'd missed it').to.include('d');
        // d campaigns alone (its term climbs without PreVote), then the network heals.
        net.tick(['d'], 100);
        net.heal();
        const term = leader.status.term;
        net.tick(undefined, 100);
        expect(net.leader()?.id).to.equal('a');
        expect(leader.status.term, "no member took d's term").to.equal(term);
        net.propose('a', 'after');
        for (const id of ['a', 'b', 'c']) expect(net.node(id).state, id).to.deep.equal(['after']);
        // The host learns from the members that d asked for votes without being a member.
        const told = ['a', 'b', 'c'].filter((id) => net.node(id).nonMemberCandidates.includes('d'));
        expect(told.length, 'members that report d').to.be.greaterThan(0);
      });
    }
  }

  it('a lagging voter helps elect a voter added by changes it lacks (§5.4.1: its log is ahead), when the old leader is gone for good', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 63 });
    net.campaign('a');
    const leader = net.electLeader();
    expect(leader.id).to.equal('a');
    net.isolate('b');
    addCaughtUpLearner(net, 'a', 'd');
    // c swaps for d while b is cut off: {a,b,d} commits with a and d alone.
    leader.raw.proposeConfChange({
      transition: ConfChangeTransition.Auto,
      changes: [add('d'), remove('c')],
    });
    net.stabilize();
    expect(net.node('d').confState.voters).to.deep.equal(['a', 'b', 'd']);
    expect(net.node('b').confState.voters, 'b missed it').to.deep.equal(['a', 'b', 'c']);
    net.crash('a');
    net.heal();
    // b and d are a majority of {a,b,d}; only d's log holds that configuration.
    net.tickUntil(() => net.leader()?.id === 'd', 2000);
    net.propose('d', 'after');
    expect(net.node('b').state).to.include('after');
    expect(net.node('b').confState.voters).to.deep.equal(['a', 'b', 'd']);
  });

  it('a voter demoted while partitioned (it missed its demotion) catches up, though the voters ignore its votes (no PreVote, no CheckQuorum)', () => {
    const net = new Network(['a', 'b', 'c', 'd'], { seed: 62, preVote: false, checkQuorum: false });
    net.campaign('a');
    const leader = net.electLeader();
    net.isolate('d');
    leader.raw.proposeConfChange(addLearner('d'));
    net.stabilize();
    expect(leader.confState.learners).to.deep.equal(['d']);
    net.tick(['d'], 100);
    expect(net.node('d').status.term, 'its term climbed').to.be.greaterThan(leader.status.term);
    net.heal();
    // d ignores the leader's lower term but answers it with its own: the leader steps
    // down once, the next leader's term reaches d, and d learns of its demotion.
    net.tickUntil(() => net.node('d').confState.learners.includes('d'), 2000);
    const next = net.electLeader();
    net.propose(next.id, 'after');
    expect(net.node('d').state).to.deep.equal(['after']);
    expect(net.node('d').status.role).to.equal('follower');
  });

  it('joint consensus: while joint, a decision needs majorities of both halves (§4.3)', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 54 });
    const leader = net.electLeader();
    for (const id of ['d', 'e']) addCaughtUpLearner(net, leader.id, id);
    // Explicit: stay joint until told to leave.
    leader.raw.proposeConfChange({
      transition: ConfChangeTransition.Explicit,
      changes: [add('d'), add('e'), remove(['a', 'b', 'c'].find((id) => id !== leader.id)!)],
    });
    net.stabilize();
    expect(leader.confState.votersOutgoing).to.deep.equal(['a', 'b', 'c']);
    // Take down the new voters: the incoming half {leader, other, d, e} loses its majority.
    net.crash('d');
    net.crash('e');
    leader.raw.propose(enc('joint'));
    net.stabilize();
    expect(leader.state).to.not.include('joint');
    net.restart('d');
    net.tickUntil(() => leader.state.includes('joint'));
    // Leaving is explicit: an empty ConfChangeV2.
    leader.raw.proposeConfChange({ transition: ConfChangeTransition.Auto, changes: [] });
    net.stabilize();
    expect(leader.confState.votersOutgoing).to.deep.equal([]);
  });

  it('the leave-joint entry has empty data (as etcd): a full uncommitted log never refuses it, auto or explicit', () => {
    const net = new Network(['a', 'b', 'c', 'd'], {
      seed: 57,
      checkQuorum: false,
      maxUncommittedEntriesBytes: 100,
      learners: ['d'],
    });
    const leader = net.electLeader();
    const out = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    const swap = (transition: ConfChangeTransition, incoming: string, outgoing: string) => ({
      transition,
      changes: [add(incoming), remove(outgoing)],
    });
    // Auto: raft proposes the leave itself; its entry carries no data.
    leader.raw.proposeConfChange(swap(ConfChangeTransition.Auto, 'd', out));
    net.stabilize();
    expect(leader.confState.votersOutgoing).to.deep.equal([]);
    const last = leader.storage.lastIndex();
    const [leave] = leader.storage.entries(last, last + 1, Number.POSITIVE_INFINITY);
    expect(leave!.type).to.equal(EntryType.ConfChange);
    expect(leave!.data.byteLength, 'auto-leave data').to.equal(0);
    expect(decodeConfChange(leave!.data)).to.deep.include({
      transition: ConfChangeTransition.Auto,
      changes: [],
    });
    // Explicit: enter, fill the uncommitted log while cut off, then leave.
    leader.raw.proposeConfChange(swap(ConfChangeTransition.Explicit, out, 'd'));
    net.stabilize();
    expect(leader.confState.votersOutgoing).to.not.deep.equal([]);
    net.isolate(leader.id);
    leader.raw.propose(new Uint8Array(100));
    expect(dropReason(() => leader.raw.propose(new Uint8Array(1)))).to.equal(
      DropReason.UncommittedLogFull,
    );
    expect(
      dropReason(() =>
        leader.raw.proposeConfChange({ transition: ConfChangeTransition.Auto, changes: [] }),
      ),
      'the leave is accepted',
    ).to.equal(null);
    net.heal();
    net.tickUntil(() => leader.confState.votersOutgoing.length === 0);
  });

  it('conf changes are serialized: a second one is dropped until the first is applied', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 55, checkQuorum: false });
    const leader = net.electLeader();
    net.isolate(leader.id);
    leader.raw.proposeConfChange(addLearner('x'));
    expect(dropReason(() => leader.raw.proposeConfChange(addLearner('y')))).to.equal(
      DropReason.ConfChangePending,
    );
    net.heal();
    net.tickUntil(() => leader.confState.learners.includes('x'));
    leader.raw.proposeConfChange(addLearner('y'));
  });

  it('a refused conf change leaves no trace: a malformed one does not block the next', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 61 });
    const leader = net.electLeader();
    const lastIndex = leader.status.lastIndex;
    const bad = newMessage({
      groupId: 1,
      type: MessageType.Prop,
      from: ['a', 'b', 'c'].find((id) => id !== leader.id)!,
      to: leader.id,
      entries: [{ term: 0, index: 0, type: EntryType.ConfChange, data: new Uint8Array([9, 9]) }],
    });
    expect(() => leader.raw.step(bad)).to.throw(RaftError, 'InvalidMessage');
    expect(leader.status.lastIndex).to.equal(lastIndex);
    leader.raw.proposeConfChange(addLearner('x'));
    net.stabilize();
    expect(leader.confState.learners).to.deep.equal(['x']);
  });

  it('joint configuration: only a leave is accepted while joint, and a leave only while joint', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 56 });
    const leader = net.electLeader();
    expect(
      dropReason(() =>
        leader.raw.proposeConfChange({ transition: ConfChangeTransition.Auto, changes: [] }),
      ),
    ).to.equal(DropReason.ConfNotJoint);
    leader.raw.proposeConfChange({
      transition: ConfChangeTransition.Explicit,
      changes: [addLearner('z')],
    });
    net.stabilize();
    expect(dropReason(() => leader.raw.proposeConfChange(addLearner('w')))).to.equal(
      DropReason.ConfAlreadyJoint,
    );
  });

  it('learners receive the log but do not vote or count for commit', () => {
    const net = new Network(['a', 'b', 'l'], { seed: 57, learners: ['l'] });
    const leader = net.electLeader();
    net.propose(leader.id, 'x');
    expect(net.node('l').state).to.deep.equal(['x']);
    const voter = ['a', 'b'].find((id) => id !== leader.id)!;
    net.crash(voter);
    leader.raw.propose(enc('y'));
    net.stabilize();
    expect(leader.state, 'leader + learner is not a quorum').to.deep.equal(['x']);
    expect(
      net.delivered.some((m) => m.type === MessageType.VoteResp && m.from === 'l'),
      'nobody asks the learner for a vote',
    ).to.equal(false);
  });

  it('demoting a voter to learner in a joint config keeps it voting until the joint config is left', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 58 });
    const leader = net.electLeader();
    const demoted = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    leader.raw.proposeConfChange({
      transition: ConfChangeTransition.Explicit,
      changes: [addLearner(demoted)],
    });
    net.stabilize();
    expect(leader.confState.learnersNext).to.deep.equal([demoted]);
    leader.raw.proposeConfChange({ transition: ConfChangeTransition.Auto, changes: [] });
    net.stabilize();
    expect(leader.confState.learners).to.deep.equal([demoted]);
    expect(leader.confState.voters).to.not.include(demoted);
  });

  it('invalid changes are rejected identically by every replica when applied', () => {
    const net = new Network(['a'], { seed: 59 });
    net.tickUntil(() => net.node('a').status.role === 'leader');
    expect(() => net.node('a').raw.applyConfChange(remove('a'))).to.throw(
      RaftError,
      'removed all voters',
    );
    expect(() =>
      net.node('a').raw.applyConfChange({
        transition: ConfChangeTransition.Auto,
        changes: [add('x'), add('y')],
      }),
    ).to.not.throw();
    expect(() => net.node('a').raw.applyConfChange(add('z'))).to.throw(RaftError, 'joint');
  });

  it('membership churn under an unreliable network: learners added, promoted, removed and swapped; members converge', () => {
    forEachSeed([3, 17, 29, 41, 53], (seed) => {
      const pool = ['a', 'b', 'c', 'd', 'e', 'f'];
      const net = new Network(['a', 'b', 'c'], { seed, maxSnapshotChunkBytes: 40 });
      const rng = mulberry32(seed);
      net.unreliable({ loss: 0.05, duplicate: 0.05, delay: 0.1 });
      for (let iter = 0; iter < 150; iter++) {
        const leader = net.leader();
        if (leader) {
          const cs = leader.confState;
          const fresh = pool.find((id) => !net.nodes.has(id));
          const pick = rng.nextInt(10);
          try {
            leader.raw.propose(enc(`v${iter}`));
            if (pick === 0 && fresh) {
              net.addBlank(fresh);
              leader.raw.proposeConfChange(addLearner(fresh));
            } else if (pick === 1 && cs.learners.length > 0) {
              leader.raw.proposeConfChange(add(cs.learners[0]!));
            } else if (pick === 2 && cs.voters.length > 3) {
              leader.raw.proposeConfChange(remove(cs.voters[rng.nextInt(cs.voters.length)]!));
            } else if (pick === 3 && cs.learners.length > 0) {
              const out = cs.voters[rng.nextInt(cs.voters.length)]!;
              leader.raw.proposeConfChange({
                transition: ConfChangeTransition.Auto,
                changes: [add(cs.learners[0]!), remove(out)],
              });
            }
          } catch (e) {
            if (!(e instanceof RaftError)) throw e;
          }
        }
        net.tick(undefined, rng.nextInt(6) + 1);
        if (rng.nextInt(8) === 0) compactAll(net);
        const ids = [...net.nodes.keys()];
        const victim = ids[rng.nextInt(ids.length)]!;
        if (rng.nextInt(10) === 0) {
          if (net.isDown(victim)) net.restart(victim);
          else if (ids.every((id) => !net.isDown(id))) net.crash(victim);
        }
      }
      net.finalAgreement();
      const applied = [...net.appliedAt.values()].filter((k) => k.split(':')[1] === '1');
      expect(applied.length, 'configuration changes applied').to.be.at.least(3);
    });
  });

  it('ConfChange codec: round trip, and malformed input is rejected with InvalidConfChange', () => {
    const cc: ConfChangeV2 = {
      transition: ConfChangeTransition.Implicit,
      changes: [add('nodé-1'), remove('n2'), addLearner('n3')],
      context: new Uint8Array([1, 2, 3]),
    };
    const decoded = decodeConfChange(encodeConfChange(cc));
    expect(decoded.transition).to.equal(cc.transition);
    expect(decoded.changes).to.deep.equal(cc.changes);
    expect([...decoded.context!]).to.deep.equal([1, 2, 3]);
    const simple = decodeConfChange(encodeConfChange(add('x')));
    expect(simple).to.deep.include({ transition: ConfChangeTransition.Auto, changes: [add('x')] });
    const bytes = encodeConfChange(cc);
    // Empty data is the leave-joint change (etcd's zero ConfChangeV2); any other cut is malformed.
    expect(decodeConfChange(new Uint8Array(0))).to.deep.include({
      transition: ConfChangeTransition.Auto,
      changes: [],
    });
    for (let cut = 1; cut < bytes.byteLength; cut++) {
      expect(() => decodeConfChange(bytes.subarray(0, cut)), `cut at ${cut}`).to.throw(RaftError);
    }
    const bad = bytes.slice();
    bad[0] = 9;
    expect(() => decodeConfChange(bad)).to.throw(RaftError, 'version');
    try {
      encodeConfChange(add(''));
      expect.fail('empty id encoded');
    } catch (e) {
      expect((e as RaftError).code).to.equal(RaftErrorCode.InvalidConfChange);
    }
  });
});
