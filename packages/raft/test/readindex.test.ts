import { expect } from 'chai';
import {
  ConfChangeType,
  DropReason,
  type Message,
  MessageType,
  newMessage,
  type RaftError,
  RaftErrorCode,
} from '../src/index.ts';
import { dec, enc, forEachSeed, Network } from './harness.ts';

const ids = ['a', 'b', 'c'];

describe('raft: ReadIndex linearizable reads (thesis §6.4)', () => {
  it('a read on the leader returns its commit index after a heartbeat quorum', () => {
    const net = new Network(ids, { seed: 71 });
    const leader = net.electLeader();
    net.propose(leader.id, 'x');
    const before = net.delivered.length;
    leader.raw.readIndex(enc('r1'));
    net.stabilize();
    expect(leader.readStates).to.have.length(1);
    expect(dec(leader.readStates[0]!.context)).to.equal('r1');
    expect(leader.readStates[0]!.index).to.equal(leader.status.commit);
    // Safe mode confirmed leadership with a heartbeat round (its context names the round).
    const hb = net.delivered.slice(before).filter((m) => m.type === MessageType.Heartbeat);
    expect(hb.length).to.be.at.least(2);
    expect(hb[0]!.context.byteLength).to.be.greaterThan(0);
  });

  it('a read on a follower is forwarded and answered with the leader commit index', () => {
    const net = new Network(ids, { seed: 72 });
    const leader = net.electLeader();
    net.propose(leader.id, 'x');
    const follower = ids.find((id) => id !== leader.id)!;
    net.node(follower).raw.readIndex(enc('f1'));
    net.stabilize();
    const rs = net.node(follower).readStates;
    expect(rs).to.have.length(1);
    expect(rs[0]!.index).to.equal(leader.status.commit);
    expect(dec(rs[0]!.context)).to.equal('f1');
  });

  it('a partitioned old leader cannot serve a read (no heartbeat quorum): no stale read', () => {
    const net = new Network(ids, { seed: 73, checkQuorum: false });
    const leader = net.electLeader();
    net.propose(leader.id, 'x');
    net.isolate(leader.id);
    leader.raw.readIndex(enc('stale?'));
    net.tick([leader.id], 30);
    expect(leader.status.role).to.equal('leader');
    expect(leader.readStates).to.have.length(0);
  });

  it('a new leader defers reads until it commits an entry of its own term', () => {
    const net = new Network(ids, { seed: 74 });
    const leader = net.electLeader();
    net.ignore(MessageType.AppResp);
    const other = ids.find((id) => id !== leader.id)!;
    leader.raw.transferLeader(other);
    net.stabilize();
    const fresh = net.node(other);
    expect(fresh.status.role).to.equal('leader');
    fresh.raw.readIndex(enc('early'));
    net.stabilize();
    expect(fresh.readStates, 'no commit in the new term yet').to.have.length(0);
    net.heal();
    net.tick(undefined, 2);
    expect(fresh.readStates).to.have.length(1);
    expect(fresh.readStates[0]!.index).to.equal(fresh.status.commit);
  });

  it('reads queued before the first commit of the term are released whatever commits it (here: a configuration change)', () => {
    const net = new Network(ids, { seed: 81 });
    const leader = net.electLeader();
    net.ignore(MessageType.AppResp);
    const fresh = net.node(ids.find((id) => id !== leader.id)!);
    leader.raw.transferLeader(fresh.id);
    net.stabilize();
    expect(fresh.status.role).to.equal('leader');
    fresh.raw.readIndex(enc('early'));
    net.stabilize();
    expect(fresh.readStates, 'no commit in the new term yet').to.have.length(0);
    // The host applies changes that leave the leader the only voter: its own entry of
    // the term now commits without any acknowledgement.
    for (const id of ids.filter((id) => id !== fresh.id)) {
      fresh.raw.applyConfChange({ type: ConfChangeType.RemoveNode, nodeId: id });
    }
    expect(fresh.status.commit).to.equal(fresh.status.lastIndex);
    net.stabilize();
    expect(fresh.readStates.map((r) => [dec(r.context), r.index])).to.deep.equal([
      ['early', fresh.status.commit],
    ]);
  });

  it('two reads with the same context are both answered, each by a heartbeat round sent after it arrived', () => {
    const net = new Network(ids, { seed: 82 });
    const leader = net.electLeader();
    const follower = net.node(ids.find((id) => id !== leader.id)!);
    // Hold back the acknowledgements of the first round.
    const held: Message[] = [];
    net.intercept = (m) => {
      if (m.type !== MessageType.HeartbeatResp) return m;
      held.push(m);
      return null;
    };
    leader.raw.readIndex(enc('same'));
    net.stabilize();
    const firstRound = held.splice(0);
    expect(firstRound.length).to.equal(2);
    // The same context again, from the leader's host and forwarded by a follower's.
    leader.raw.readIndex(enc('same'));
    follower.raw.readIndex(enc('same'));
    net.stabilize();
    // The first round confirms only the read that came before it…
    for (const m of firstRound) leader.raw.step(m);
    net.stabilize();
    expect(leader.readStates.map((r) => dec(r.context))).to.deep.equal(['same']);
    expect(follower.readStates).to.have.length(0);
    // …a later round the others.
    net.intercept = null;
    net.tick([leader.id], 1);
    expect(leader.readStates.map((r) => dec(r.context))).to.deep.equal(['same', 'same']);
    expect(follower.readStates.map((r) => dec(r.context))).to.deep.equal(['same']);
  });

  it('many reads confirmed by one heartbeat round are all answered, in order', () => {
    const net = new Network(ids, { seed: 75 });
    const leader = net.electLeader();
    net.ignore(MessageType.HeartbeatResp);
    for (const c of ['q1', 'q2', 'q3']) leader.raw.readIndex(enc(c));
    net.stabilize();
    expect(leader.readStates).to.have.length(0);
    net.heal();
    net.tick(undefined, 1);
    expect(leader.readStates.map((r) => dec(r.context))).to.deep.equal(['q1', 'q2', 'q3']);
  });

  it('reads issued between two Readies share one heartbeat round', () => {
    const net = new Network(ids, { seed: 79 });
    const leader = net.electLeader();
    net.propose(leader.id, 'x');
    const before = net.delivered.length;
    for (let i = 0; i < 10; i++) leader.raw.readIndex(enc(`batch${i}`));
    net.stabilize();
    const heartbeats = net.delivered.slice(before).filter((m) => m.type === MessageType.Heartbeat);
    expect(heartbeats).to.have.length(2);
    expect(leader.readStates.map((r) => dec(r.context))).to.deep.equal(
      Array.from({ length: 10 }, (_, i) => `batch${i}`),
    );
  });

  it('lease reads (opt-in): answered without a heartbeat round while the lease holds', () => {
    const net = new Network(ids, { seed: 76, readOnlyOption: 'lease' });
    const leader = net.electLeader();
    net.propose(leader.id, 'x');
    net.tick(undefined, 1); // a heartbeat round acknowledged by a quorum: the lease
    const before = net.delivered.length;
    leader.raw.readIndex(enc('lease'));
    net.stabilize();
    expect(leader.readStates).to.have.length(1);
    expect(net.delivered.slice(before).some((m) => m.type === MessageType.Heartbeat)).to.equal(
      false,
    );
  });

  it('lease reads: an isolated leader never answers stale, even when the others tick faster (within maxTickDriftPercent)', () => {
    forEachSeed(
      Array.from({ length: 20 }, (_, i) => 100 + i),
      (seed) => {
        const net = new Network(ids, { seed, readOnlyOption: 'lease', maxTickDriftPercent: 25 });
        const leader = net.electLeader();
        net.tick(undefined, 1 + (seed % 3));
        const others = ids.filter((id) => id !== leader.id);
        net.isolate(leader.id);
        // The others tick 5 times for every 4 of the old leader's (25 % faster). The old
        // leader is asked for a read every tick: those asked once another leader exists
        // (it may have acknowledged writes since) must never be answered.
        const read = (context: string): void => {
          if (leader.status.role === 'leader') leader.raw.readIndex(enc(context));
        };
        let newLeader: string | undefined;
        for (let round = 0; round < 200 && newLeader === undefined; round++) {
          net.tick(others, 1);
          if (round % 5 !== 4) net.tick([leader.id], 1);
          newLeader = others.find((id) => net.node(id).status.role === 'leader');
          read(newLeader === undefined ? 'before' : 'after');
          net.stabilize();
        }
        expect(newLeader, 'the others elected a leader').to.not.equal(undefined);
        net.propose(newLeader!, 'new');
        for (let round = 0; round < 40; round++) {
          read('after');
          net.tick(others, 1);
          net.tick([leader.id], 1);
        }
        expect(
          leader.readStates.map((r) => dec(r.context)).filter((c) => c === 'after'),
          'stale reads answered by the isolated leader',
        ).to.deep.equal([]);
        expect(leader.status.role, 'the old leader stepped down (CheckQuorum)').to.not.equal(
          'leader',
        );
      },
    );
  });

  it('lease reads: a restarted voter refuses votes for an election timeout (it may have acked a lease round before the crash)', () => {
    const net = new Network(ids, { seed: 83, readOnlyOption: 'lease' });
    const leader = net.electLeader();
    net.tick(undefined, 1);
    const [f, g] = ids.filter((id) => id !== leader.id) as [string, string];
    net.restart(f);
    const term = leader.status.term;
    const vote = newMessage({
      groupId: 1,
      type: MessageType.Vote,
      from: g,
      to: f,
      term: term + 1,
      index: 100,
      logTerm: term,
    });
    net.node(f).raw.step(vote);
    expect(net.node(f).status.term, 'not even the term is taken').to.equal(term);
    for (let i = 0; i < 10; i++) net.node(f).raw.tick();
    net.node(f).raw.step(vote);
    expect(net.node(f).status.vote, 'an election timeout later it votes').to.equal(g);
  });

  it('lease reads: a leadership transfer ends the lease (the forced election ignores leases)', () => {
    const net = new Network(ids, { seed: 84, readOnlyOption: 'lease' });
    const leader = net.electLeader();
    net.tick(undefined, 1);
    const target = ids.find((id) => id !== leader.id)!;
    net.ignore(MessageType.TimeoutNow); // delayed: the old leader still leads meanwhile
    leader.raw.transferLeader(target);
    net.stabilize();
    net.ignore(MessageType.HeartbeatResp);
    leader.raw.readIndex(enc('during-transfer'));
    net.stabilize();
    expect(leader.status.role).to.equal('leader');
    expect(leader.readStates, 'not answered from the lease').to.have.length(0);
  });

  it('read dropped with reason no-leader, and read-queue-full beyond the bound', () => {
    const net = new Network(ids, { seed: 77, maxPendingReadIndexRequests: 2 });
    try {
      net.node('a').raw.readIndex(enc('x'));
      expect.fail('accepted');
    } catch (e) {
      expect((e as RaftError).code).to.equal(RaftErrorCode.ReadIndexDropped);
      expect((e as RaftError).reason).to.equal(DropReason.NoLeader);
    }
    const leader = net.electLeader();
    net.ignore(MessageType.HeartbeatResp);
    leader.raw.readIndex(enc('1'));
    leader.raw.readIndex(enc('2'));
    try {
      leader.raw.readIndex(enc('3'));
      expect.fail('accepted');
    } catch (e) {
      expect((e as RaftError).reason).to.equal(DropReason.ReadQueueFull);
    }
  });

  it('a leader removed with stepDownOnRemoval: false confirms reads with the remaining voter, never on its own', () => {
    const net = new Network(['a', 'b'], { seed: 80, stepDownOnRemoval: false });
    const leader = net.electLeader();
    const other = net.node(leader.id === 'a' ? 'b' : 'a');
    leader.raw.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: leader.id });
    net.stabilize();
    expect(leader.confState.voters).to.deep.equal([other.id]);
    expect(leader.status.role, 'it keeps leading the one-voter group').to.equal('leader');
    // Connected, the remaining voter's heartbeat acknowledgement confirms the read.
    leader.raw.readIndex(enc('with-ack'));
    net.stabilize();
    expect(leader.readStates.map((r) => dec(r.context))).to.deep.equal(['with-ack']);
    // Isolated, the remaining voter elects itself and writes; the old leader must not answer.
    net.isolate(leader.id);
    net.tickUntil(() => other.status.role === 'leader');
    other.raw.propose(enc('new'));
    net.stabilize();
    expect(other.state).to.include('new');
    leader.raw.readIndex(enc('stale?'));
    net.stabilize();
    expect(
      leader.readStates.map((r) => dec(r.context)),
      'a stale read',
    ).to.deep.equal(['with-ack']);
  });

  it('single-voter group answers reads at once', () => {
    const net = new Network(['solo'], { seed: 78 });
    net.tickUntil(() => net.node('solo').status.role === 'leader', 30);
    net.node('solo').raw.readIndex(enc('s'));
    net.stabilize();
    expect(net.node('solo').readStates).to.have.length(1);
  });
});
