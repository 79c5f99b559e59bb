import { expect } from 'chai';
import {
  ConfChangeType,
  decodeConfChange,
  EntryType,
  encodeConfChange,
  MessageType,
  mulberry32,
  newMessage,
} from '../src/index.ts';
import { drain, forEachSeed, Network, singleNode, storageAtZero } from './harness.ts';

describe('raft: leader election (§5.2), PreVote (thesis §9.6), CheckQuorum (thesis §6.2)', () => {
  it('initial election: one leader, everyone follows it, terms agree', () => {
    const net = new Network(['a', 'b', 'c']);
    const leader = net.electLeader();
    for (const n of net.nodes.values()) {
      expect(n.status.lead).to.equal(leader.id);
      expect(n.status.term).to.equal(leader.status.term);
      // The allocation-free accessors hosts use per request agree with status().
      expect([n.raw.lead, n.raw.role, n.raw.term]).to.deep.equal([
        n.status.lead,
        n.status.role,
        n.status.term,
      ]);
    }
  });

  it('re-election: a new leader is elected after the leader fails, and the old one rejoins as follower', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 2 });
    const first = net.electLeader();
    net.crash(first.id);
    const second = net.electLeader();
    expect(second.id).to.not.equal(first.id);
    expect(second.status.term).to.be.greaterThan(first.status.term);
    net.restart(first.id);
    net.tickUntil(() => net.node(first.id).status.lead === second.id);
    expect(net.node(first.id).status.role).to.equal('follower');
  });

  it('re-election: no leader is elected without a quorum; one is once the quorum is back', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 3 });
    const first = net.electLeader();
    const others = ['a', 'b', 'c'].filter((id) => id !== first.id);
    net.crash(first.id);
    net.crash(others[0]!);
    net.tick(undefined, 100);
    expect(net.node(others[1]!).status.role).to.not.equal('leader');
    net.restart(others[0]!);
    const next = net.electLeader();
    expect(others).to.include(next.id);
  });

  it('many elections: random crashes and partitions never yield two leaders in a term', () => {
    forEachSeed([4242], (seed) => {
      const ids = ['a', 'b', 'c', 'd', 'e'];
      const net = new Network(ids, { seed });
      const rng = mulberry32(seed);
      for (let round = 0; round < 30; round++) {
        net.heal();
        for (const id of ids) if (net.isDown(id)) net.restart(id);
        // Every round deposes the leader, then adds a random crash or cut; a majority stays.
        net.crash(net.electLeader().id);
        const victim = ids[rng.nextInt(ids.length)]!;
        if (rng.nextInt(2) === 0) net.crash(victim);
        else net.cut(victim, ids[rng.nextInt(ids.length)]!);
        net.tick(undefined, 40);
      }
      net.finalAgreement();
      // The harness asserted one leader per term on every Ready; every round elected anew.
      expect(net.leaderOfTerm.size).to.be.at.least(30);
    });
  });

  it('disruptive follower with PreVote: a partitioned follower does not bump its term and cannot disrupt on rejoin', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 5, preVote: true });
    const leader = net.electLeader();
    const term = leader.status.term;
    const lonely = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    net.isolate(lonely);
    net.tick(undefined, 100);
    expect(net.node(lonely).status.term, 'pre-vote never adopts a term').to.equal(term);
    expect(net.node(lonely).status.role).to.equal('precandidate');
    net.heal();
    net.tick(undefined, 5);
    expect(net.leader()!.id).to.equal(leader.id);
    expect(leader.status.term).to.equal(term);
    expect(net.node(lonely).status.lead).to.equal(leader.id);
  });

  it('PreVote without CheckQuorum: a follower that stops hearing the leader (one-way loss) gets no pre-votes from followers that still hear it (thesis §9.6)', () => {
    forEachSeed([8, 9, 10, 11, 12], (seed) => {
      const net = new Network(['a', 'b', 'c'], { seed, preVote: true, checkQuorum: false });
      const leader = net.electLeader();
      const term = leader.status.term;
      const deaf = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
      net.loss(1, leader.id, deaf); // only the leader's messages to it are lost
      net.tick(undefined, 100);
      expect(net.node(deaf).status.role, 'it keeps asking').to.equal('precandidate');
      expect(leader.status.role).to.equal('leader');
      expect(leader.status.term, 'the healthy leader was not deposed').to.equal(term);
    });
  });

  it('disruptive follower without PreVote: the rejoining node forces a new election at a higher term', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 6, preVote: false, checkQuorum: false });
    const leader = net.electLeader();
    const term = leader.status.term;
    const lonely = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    net.isolate(lonely);
    net.tick([lonely], 100);
    expect(net.node(lonely).status.term).to.be.greaterThan(term + 1);
    net.heal();
    net.tick(undefined, 1);
    // Its higher term deposes the leader (the disruption PreVote exists to prevent).
    expect(leader.status.term).to.be.greaterThan(term);
    net.electLeader();
  });

  it('disruptive follower with CheckQuorum only: followers in the lease ignore its votes, but its term still deposes the leader', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 7, preVote: false, checkQuorum: true });
    const leader = net.electLeader();
    const lonely = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    const other = ['a', 'b', 'c'].find((id) => id !== leader.id && id !== lonely)!;
    net.isolate(lonely);
    net.propose(leader.id, 'x'); // the isolated node's log falls behind
    net.tick([lonely], 100);
    const lonelyTerm = net.node(lonely).status.term;
    expect(lonelyTerm).to.be.greaterThan(leader.status.term);
    net.heal();
    // Its MsgVote reaches a follower that heard from the leader within the lease: ignored.
    net.node(lonely).raw.campaign();
    net.stabilize();
    expect(net.node(other).status.vote).to.not.equal(lonely);
    // The leader's next heartbeat gets answered at the higher term and it steps down (the
    // disruption that PreVote prevents); the stale node cannot win with its short log.
    net.electLeader();
    expect(net.leader()!.id).to.not.equal(lonely);
    expect(net.leader()!.status.term).to.be.greaterThan(lonelyTerm);
    expect(net.node(lonely).state).to.deep.equal(['x']);
  });

  it('a follower that hears its leader ignores a late higher-term response (it would end the vote lease and depose the leader)', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 13, readOnlyOption: 'lease' });
    const leader = net.electLeader();
    net.tick(undefined, 1);
    const [f, n] = ['a', 'b', 'c'].filter((id) => id !== leader.id) as [string, string];
    const term = leader.status.term;
    // n answers, at a term it reached campaigning alone, an append f sent long ago as leader.
    net
      .node(f)
      .raw.step(
        newMessage({ groupId: 1, type: MessageType.AppResp, from: n, to: f, term: term + 3 }),
      );
    net.stabilize();
    expect(net.node(f).status.term).to.equal(term);
    expect(net.node(f).status.lead).to.equal(leader.id);
    expect(leader.status.role).to.equal('leader');
  });

  it('CheckQuorum: a leader that loses its quorum steps down within an election timeout', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 8, checkQuorum: true });
    const leader = net.electLeader();
    net.isolate(leader.id);
    net.tick([leader.id], 2 * 10 + 1);
    expect(leader.status.role).to.equal('follower');
    expect(leader.status.lead).to.equal(null);
  });

  it('CheckQuorum: a leader with a quorum stays leader indefinitely', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 9, checkQuorum: true });
    const leader = net.electLeader();
    const term = leader.status.term;
    net.tick(undefined, 200);
    expect(net.leader()!.id).to.equal(leader.id);
    expect(leader.status.term).to.equal(term);
  });

  it('without CheckQuorum an isolated leader keeps believing it leads', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 10, checkQuorum: false });
    const leader = net.electLeader();
    net.isolate(leader.id);
    net.tick([leader.id], 100);
    expect(leader.status.role).to.equal('leader');
  });

  it('a node with a committed but unapplied configuration change does not campaign until it applies it (etcd: hup)', () => {
    const storage = storageAtZero(['a', 'b', 'c']);
    const cc = encodeConfChange({ type: ConfChangeType.RemoveNode, nodeId: 'c' });
    storage.append([{ index: 1, term: 1, type: EntryType.ConfChange, data: cc }]);
    storage.setHardState({ term: 1, vote: null, commit: 1 });
    const { raw } = singleNode('a', ['a', 'b', 'c'], { storage });
    raw.campaign();
    for (let i = 0; i < 30; i++) raw.tick();
    const rd = raw.ready();
    expect(rd.messages, 'it may not know who votes yet').to.deep.equal([]);
    expect(raw.status().role).to.equal('follower');
    expect(rd.committedEntries.map((e) => e.index)).to.deep.equal([1]);
    raw.applyConfChange(decodeConfChange(rd.committedEntries[0]!.data));
    raw.advance();
    raw.campaign();
    const votes = drain(raw, storage).filter((m) => m.type === MessageType.Vote);
    expect(
      votes.map((m) => m.to),
      'asks the voters of the applied configuration',
    ).to.deep.equal(['b']);
  });

  it('a learner never campaigns', () => {
    const net = new Network(['a', 'b', 'l'], { seed: 11, learners: ['l'] });
    net.tick(['l'], 200);
    expect(net.node('l').status.role).to.equal('follower');
    expect(net.node('l').status.term).to.equal(0);
  });

  it('single-voter group elects itself on its first election timeout', () => {
    const net = new Network(['solo'], { seed: 12 });
    net.tickUntil(() => net.node('solo').status.role === 'leader', 20);
    net.propose('solo', 'x');
    expect(net.node('solo').state).to.deep.equal(['x']);
  });

  it('the randomized election timeout lies in [electionTick, 2·electionTick) (§5.2)', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const net = new Network(['a', 'b', 'c'], { seed, preVote: false });
      let ticks = 0;
      while (net.node('a').status.role === 'follower') {
        net.node('a').raw.tick();
        ticks++;
      }
      expect(ticks, `seed ${seed}`).to.be.within(10, 19);
    }
  });

  it('PreVote: a pre-candidate that loses returns to follower without touching term or vote', () => {
    const net = new Network(['a', 'b', 'c'], { seed: 13, preVote: true });
    const leader = net.electLeader();
    const follower = ['a', 'b', 'c'].find((id) => id !== leader.id)!;
    const { term, vote } = net.node(follower).status;
    // Peers within the lease ignore the pre-vote; nobody grants it.
    net.node(follower).raw.campaign();
    net.stabilize();
    expect(net.node(follower).status.term).to.equal(term);
    expect(net.node(follower).status.vote).to.equal(vote);
    expect(net.leader()!.id).to.equal(leader.id);
    expect(
      net.delivered.some((m) => m.type === MessageType.PreVote && m.from === follower),
    ).to.equal(true);
  });
});
