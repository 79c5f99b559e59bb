import { expect } from 'chai';
import {
  bootstrapSnapshot,
  type ConfChangeType,
  MemoryStorage,
  type Message,
  MessageType,
  mulberry32,
  newMessage,
  RaftError,
  RaftErrorCode,
  RawNode,
} from '../src/index.ts';
import { JointConfig, majorityCommitted, majorityVoteResult } from '../src/quorum.ts';
import { Inflights } from '../src/tracker.ts';
import { confStateOf, drain, enc, entry, Network, singleNode, storageAtZero } from './harness.ts';

/** Config of a one-voter group 'a' (voters given by `voters`). */
function soloConfig(groupId = 0, voters = ['a']) {
  return {
    id: 'a',
    groupId,
    storage: new MemoryStorage({ confState: confStateOf(voters) }),
    random: mulberry32(1),
    electionTick: 10,
    heartbeatTick: 1,
  };
}

function code(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (e) {
    if (!(e instanceof RaftError)) throw e;
    return e.code;
  }
}

describe('raft units: flow control, quorum, storage, PRNG, config, message validation', () => {
  it('Inflights: bounded by count and bytes; freeLE and freeFirstOne release in order', () => {
    const inf = new Inflights(3, 250);
    inf.add(1, 100);
    inf.add(2, 100);
    expect(inf.full()).to.equal(false);
    inf.add(3, 100);
    expect(inf.full()).to.equal(true);
    inf.freeLE(2);
    expect(inf.count()).to.equal(1);
    expect(inf.sizeBytes()).to.equal(100);
    inf.add(5, 200);
    expect(inf.full(), '300 bytes ≥ 250').to.equal(true);
    inf.freeFirstOne();
    expect(inf.sizeBytes()).to.equal(200);
    expect(() => inf.add(4, 1)).to.throw(RaftError, 'increase');
  });

  it('Inflights: a long run of adds and frees matches a plain list (seeded)', () => {
    const random = mulberry32(11);
    const inf = new Inflights(16, 0);
    const model: { index: number; size: number }[] = [];
    let last = 0;
    for (let step = 0; step < 20_000; step++) {
      const choice = random.nextInt(10);
      if (choice < 6 && model.length < 16) {
        last += 1 + random.nextInt(3);
        const size = random.nextInt(100);
        inf.add(last, size);
        model.push({ index: last, size });
      } else if (choice < 9) {
        const upTo = last - random.nextInt(8);
        inf.freeLE(upTo);
        while (model.length > 0 && model[0]!.index <= upTo) model.shift();
      } else {
        inf.freeFirstOne();
        model.shift();
      }
      expect(inf.count(), `step ${step}`).to.equal(model.length);
      expect(inf.sizeBytes()).to.equal(model.reduce((sum, m) => sum + m.size, 0));
      expect(inf.full()).to.equal(model.length >= 16);
    }
  });

  it('quorum: majority commit index, vote results, joint configurations need both halves', () => {
    const acked = new Map([
      ['a', 5],
      ['b', 3],
      ['c', 1],
    ]);
    expect(majorityCommitted(new Set(['a', 'b', 'c']), (id) => acked.get(id))).to.equal(3);
    expect(majorityCommitted(new Set(['a', 'b', 'c', 'd']), (id) => acked.get(id))).to.equal(1);
    expect(majorityCommitted(new Set(), () => 0)).to.equal(Number.POSITIVE_INFINITY);
    // Every order of acks, sizes 1..7 in turn (the sort reuses one array across calls).
    const random = mulberry32(7);
    for (let round = 0; round < 200; round++) {
      const size = 1 + (round % 7);
      const ids = Array.from({ length: size }, (_, i) => `n${i}`);
      const acks = new Map(ids.map((id) => [id, random.nextInt(10)]));
      const sorted = [...acks.values()].sort((x, y) => y - x);
      expect(majorityCommitted(new Set(ids), (id) => acks.get(id))).to.equal(
        sorted[Math.floor(size / 2)],
      );
    }
    const votes = new Map([
      ['a', true],
      ['b', false],
    ]);
    expect(majorityVoteResult(new Set(['a', 'b', 'c']), votes)).to.equal('pending');
    expect(majorityVoteResult(new Set(['a', 'b']), votes)).to.equal('lost');
    expect(majorityVoteResult(new Set(['a']), votes)).to.equal('won');
    const joint = new JointConfig(new Set(['a', 'b', 'c']), new Set(['c', 'd', 'e']));
    const j = new Map([
      ['a', 9],
      ['b', 9],
      ['c', 2],
      ['d', 1],
      ['e', 0],
    ]);
    expect(joint.committed((id) => j.get(id))).to.equal(1);
    expect(
      joint.voteResult(
        new Map([
          ['a', true],
          ['b', true],
        ]),
      ),
    ).to.equal('pending');
    expect(
      joint.voteResult(
        new Map([
          ['a', true],
          ['b', true],
          ['d', false],
          ['e', false],
        ]),
      ),
    ).to.equal('lost');
    expect(
      joint.voteResult(
        new Map([
          ['a', true],
          ['c', true],
          ['d', true],
        ]),
      ),
    ).to.equal('won');
  });

  it('MemoryStorage: entries/term/first/last, byte limits, compaction and snapshot errors', () => {
    const s = new MemoryStorage({ confState: confStateOf(['a']) });
    expect([s.firstIndex(), s.lastIndex(), s.term(1)]).to.deep.equal([2, 1, 1]);
    s.setHardState({ term: 2, vote: 'a', commit: 1 });
    expect(s.writtenHardState()).to.deep.equal({ term: 2, vote: 'a', commit: 1 });
    expect(s.writtenHardState()).to.equal(s.initialState().hardState);
    s.append([entry(2, 1, 'x'.repeat(100)), entry(3, 1, 'y'.repeat(100)), entry(4, 2, 'z')]);
    expect(
      s.entries(2, 5, 1).map((e) => e.index),
      'at least one entry',
    ).to.deep.equal([2]);
    expect(s.entries(2, 5, 250).map((e) => e.index)).to.deep.equal([2, 3]);
    expect(code(() => s.entries(1, 3, 100))).to.equal(RaftErrorCode.Compacted);
    expect(code(() => s.entries(2, 6, 100))).to.equal(RaftErrorCode.Unavailable);
    expect(code(() => s.term(5))).to.equal(RaftErrorCode.Unavailable);
    s.append([entry(3, 3, 'replaced')]);
    expect(s.lastIndex()).to.equal(3);
    s.createSnapshot(2, confStateOf(['a']), enc('state'));
    s.compact(2);
    expect([s.firstIndex(), s.term(2)]).to.deep.equal([3, 1]);
    expect(code(() => s.term(1))).to.equal(RaftErrorCode.Compacted);
    expect(code(() => s.compact(2))).to.equal(RaftErrorCode.Compacted);
    expect(code(() => s.applySnapshot(bootstrapSnapshot(confStateOf(['a']))))).to.equal(
      RaftErrorCode.SnapshotOutOfDate,
    );
    expect(code(() => s.append([entry(9, 3)]))).to.equal(RaftErrorCode.Invariant);
  });

  it('mulberry32: same seed, same sequence; values within range', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const xs = Array.from({ length: 100 }, () => a.nextInt(10));
    expect(xs).to.deep.equal(Array.from({ length: 100 }, () => b.nextInt(10)));
    expect(xs.every((x) => x >= 0 && x < 10)).to.equal(true);
    expect(new Set(xs).size).to.equal(10);
    expect(() => a.nextInt(0)).to.throw(RangeError);
  });

  it('Config: invalid values are refused with InvalidConfig naming the field', () => {
    const base = soloConfig();
    const bad: [object, string][] = [
      [{ id: '' }, 'id'],
      [{ groupId: -1 }, 'groupId'],
      [{ electionTick: 1 }, 'electionTick'],
      [{ heartbeatTick: 0 }, 'heartbeatTick'],
      [{ maxInflightMsgs: 0 }, 'maxInflightMsgs'],
      [{ maxSizePerMsgBytes: 100, maxInflightBytes: 10 }, 'maxInflightBytes'],
      [{ readOnlyOption: 'lease', checkQuorum: false }, 'readOnlyOption'],
    ];
    for (const [override, field] of bad) {
      try {
        new RawNode({ ...base, ...override });
        expect.fail(`accepted ${JSON.stringify(override)}`);
      } catch (e) {
        expect((e as RaftError).code).to.equal(RaftErrorCode.InvalidConfig);
        expect((e as RaftError).message).to.contain(field);
      }
    }
  });

  it('a hard state committing beyond the last index is an invariant violation, not silent', () => {
    const s = new MemoryStorage({ confState: confStateOf(['a']) });
    s.setHardState({ term: 1, vote: null, commit: 7 });
    expect(
      code(
        () =>
          new RawNode({
            id: 'a',
            groupId: 0,
            storage: s,
            random: mulberry32(1),
            electionTick: 10,
            heartbeatTick: 1,
          }),
      ),
    ).to.equal(RaftErrorCode.Invariant);
  });

  it('messages carry the group id; a node refuses other groups, other recipients and local types', () => {
    const net = new Network(['a', 'b', 'c']);
    const leader = net.electLeader();
    const raw = net.node('b').raw;
    const ok = newMessage({
      groupId: 1,
      type: MessageType.Heartbeat,
      from: 'a',
      to: 'b',
      term: 99,
    });
    expect(code(() => raw.step({ ...ok, groupId: 2 }))).to.equal(RaftErrorCode.InvalidMessage);
    expect(code(() => raw.step({ ...ok, to: 'c' }))).to.equal(RaftErrorCode.InvalidMessage);
    expect(code(() => raw.step({ ...ok, type: MessageType.Hup }))).to.equal(
      RaftErrorCode.StepLocalMessage,
    );
    expect(code(() => raw.step({ ...ok, type: MessageType.AppResp, from: 'zz' }))).to.equal(
      RaftErrorCode.StepPeerNotFound,
    );
    expect(net.node('b').status.term, 'nothing was stepped').to.equal(leader.status.term);
  });

  it('two groups on the same nodes stay independent', () => {
    const g1 = new Network(['a', 'b', 'c'], { seed: 1 });
    const g2 = new Network(['a', 'b', 'c'], { seed: 2 });
    const l1 = g1.electLeader();
    g2.electLeader();
    g1.propose(l1.id, 'only-in-1');
    for (const id of ['a', 'b', 'c']) expect(g2.node(id).state).to.deep.equal([]);
    for (const m of g1.delivered) expect(m.groupId).to.equal(1);
    // Every outgoing message is stamped with its RawNode's group.
    const other = new RawNode(soloConfig(7, ['a', 'b']));
    other.campaign();
    expect(other.ready().messages.every((m) => m.groupId === 7)).to.equal(true);
  });

  it('malformed messages from the network raise InvalidMessage, never anything else', () => {
    const seed = 99;
    const rng = mulberry32(seed);
    const net = new Network(['a', 'b', 'c']);
    net.electLeader();
    const raw = net.node('b').raw;
    const pick = <T>(xs: T[]): T => xs[rng.nextInt(xs.length)]!;
    const values = [
      -1,
      0,
      1,
      2,
      1.5,
      Number.NaN,
      2 ** 60,
      'x',
      null,
      undefined,
      {},
      [],
      new Uint8Array(2),
    ];
    for (let i = 0; i < 2000; i++) {
      const m: Record<string, unknown> = {
        ...newMessage({
          groupId: 1,
          type: pick([3, 4, 7, 8, 15, 17, 19, 42]) as Message['type'],
          from: 'a',
          to: 'b',
        }),
      };
      for (const f of [
        'term',
        'logTerm',
        'index',
        'commit',
        'rejectHint',
        'context',
        'entries',
        'snapshot',
        'from',
      ]) {
        if (rng.nextInt(4) === 0) m[f] = pick(values);
      }
      if (m.type === MessageType.App && rng.nextInt(2) === 0) {
        m.entries = [
          {
            index: pick([0, 1, 5]),
            term: pick([0, 1, 9]),
            type: pick([0, 1, 7]),
            data: pick([new Uint8Array(1), 'x']),
          },
        ];
      }
      if (m.type === MessageType.Snap && rng.nextInt(2) === 0) {
        m.snapshot = {
          metadata: {
            index: pick([0, 3, 10]),
            term: pick([0, 1]),
            confState: pick([confStateOf(['b']), {}, null]),
          },
          offsetBytes: pick([0, 5, -1]),
          totalBytes: pick([0, 3, 10]),
          data: pick([new Uint8Array(3), null]),
        };
      }
      try {
        raw.step(m as unknown as Message);
      } catch (e) {
        if (!(e instanceof RaftError) || e.code === RaftErrorCode.Invariant) {
          throw new Error(
            `seed ${seed}, message ${i} ${JSON.stringify(m)}: ${(e as Error).message}`,
          );
        }
      }
    }
  });

  it('ready/advance misuse is reported with InvalidState', () => {
    const raw = new RawNode(soloConfig());
    expect(code(() => raw.advance())).to.equal(RaftErrorCode.InvalidState);
    raw.campaign();
    raw.ready();
    expect(raw.hasReady(), 'nothing new while a Ready is outstanding').to.equal(false);
    expect(code(() => raw.ready())).to.equal(RaftErrorCode.InvalidState);
    raw.advance();
    expect(code(() => raw.propose('x' as unknown as Uint8Array))).to.equal(
      RaftErrorCode.InvalidArgument,
    );
    expect(code(() => raw.readIndex(new Uint8Array(0)))).to.equal(RaftErrorCode.InvalidArgument);
    expect(code(() => raw.proposeConfChange({ type: 9 as ConfChangeType, nodeId: 'x' }))).to.equal(
      RaftErrorCode.InvalidConfChange,
    );
  });

  it('Ready: mustSync only when term, vote or entries change', () => {
    const net = new Network(['a', 'b', 'c']);
    const leader = net.electLeader();
    const follower = net.node(['a', 'b', 'c'].find((id) => id !== leader.id)!);
    leader.raw.tick();
    // Deliver the heartbeat by hand and look at the follower's Ready.
    net.stabilize();
    follower.raw.step(
      newMessage({
        groupId: 1,
        type: MessageType.Heartbeat,
        from: leader.id,
        to: follower.id,
        term: leader.status.term,
        commit: leader.status.commit,
      }),
    );
    const rd = follower.raw.ready();
    expect(rd.mustSync).to.equal(false);
    expect(rd.entries).to.deep.equal([]);
    follower.raw.advance();
  });

  it('Ready: what raft produces after ready() goes into the next Ready, not into the one taken', () => {
    // Leader a of [a, b]; b is probed (paused) after the leader's first append.
    const { raw, storage } = singleNode('a', ['a', 'b']);
    raw.campaign();
    drain(raw, storage);
    raw.step(newMessage({ groupId: 1, type: MessageType.VoteResp, from: 'b', to: 'a', term: 1 }));
    drain(raw, storage);
    raw.propose(enc('x'));
    const rd = raw.ready();
    expect(rd.messages, 'b is paused: no append').to.deep.equal([]);
    expect(rd.readStates).to.deep.equal([]);
    expect(rd.nonMemberCandidates).to.deep.equal([]);
    // Before advance(): b answers a heartbeat (an append to b follows), an outsider asks for
    // a vote, a read is asked for.
    raw.step(
      newMessage({ groupId: 1, type: MessageType.HeartbeatResp, from: 'b', to: 'a', term: 1 }),
    );
    raw.step(newMessage({ groupId: 1, type: MessageType.Vote, from: 'z', to: 'a', term: 2 }));
    expect(rd.messages, 'the append promises nothing of this Ready').to.deep.equal([]);
    expect(rd.nonMemberCandidates).to.deep.equal([]);
    storage.append(rd.entries);
    raw.advance();
    const next = raw.ready();
    expect(next.messages.map((m) => [m.type, m.to])).to.deep.equal([[MessageType.App, 'b']]);
    expect(next.nonMemberCandidates).to.deep.equal(['z']);
  });

  /** Follower 'b' of [a, b] that heard leader 'a' at term 1 (so later term changes are visible). */
  function followerAtTerm1() {
    const { raw, storage } = singleNode('b', ['a', 'b']);
    const from = { groupId: 1, from: 'a', to: 'b', term: 1 };
    raw.step(newMessage({ ...from, type: MessageType.Heartbeat }));
    drain(raw, storage);
    return { raw, storage, from };
  }

  it('Ready: installing a snapshot must sync (its acknowledgement is in the same Ready)', () => {
    const { raw, from } = followerAtTerm1();
    const data = enc('state');
    raw.step(
      newMessage({
        ...from,
        type: MessageType.Snap,
        snapshot: {
          metadata: { index: 5, term: 1, confState: confStateOf(['a', 'b']) },
          offsetBytes: 0,
          totalBytes: data.byteLength,
          data,
        },
      }),
    );
    const rd = raw.ready();
    expect(rd.snapshot?.metadata.index).to.equal(5);
    expect(rd.hardState?.term, 'the term did not change').to.equal(1);
    expect(rd.entries).to.deep.equal([]);
    expect(rd.messages.map((m) => [m.type, m.index])).to.deep.equal([[MessageType.AppResp, 5]]);
    expect(rd.mustSync, 'the AppResp acknowledges the snapshot').to.equal(true);
  });

  it('Ready: a vote at the same term, or a new term alone, must sync (Figure 2: persist before answering)', () => {
    // b at term 3 with no vote and no leader (e.g. restarted) is asked for its vote at term 3.
    const storage = storageAtZero(['a', 'b', 'c']);
    storage.setHardState({ term: 3, vote: null, commit: 0 });
    const b = singleNode('b', ['a', 'b', 'c'], { storage });
    b.raw.step(newMessage({ groupId: 1, type: MessageType.Vote, from: 'c', to: 'b', term: 3 }));
    const vote = b.raw.ready();
    expect(vote.hardState).to.deep.equal({ term: 3, vote: 'c', commit: 0 });
    expect(vote.messages.map((m) => [m.type, m.reject])).to.deep.equal([
      [MessageType.VoteResp, false],
    ]);
    expect(vote.mustSync, 'vote changed, term did not').to.equal(true);
    b.raw.advance();

    const { raw } = followerAtTerm1();
    raw.step(newMessage({ groupId: 1, type: MessageType.Heartbeat, from: 'a', to: 'b', term: 2 }));
    const term = raw.ready();
    expect(term.hardState).to.deep.equal({ term: 2, vote: null, commit: 0 });
    expect(term.mustSync, 'term changed, vote did not (null → null)').to.equal(true);
  });

  it('quiescence: isIdle turns true once every member has the whole log and the commit index', () => {
    const net = new Network(['a', 'b', 'c']);
    const leader = net.electLeader();
    net.tick(undefined, 2);
    for (const n of net.nodes.values()) expect(n.raw.isIdle(), n.id).to.equal(true);
    leader.raw.propose(enc('x'));
    expect(leader.raw.isIdle()).to.equal(false);
    net.stabilize();
    expect(leader.raw.isIdle(), 'followers have not heard the new commit index yet').to.equal(
      false,
    );
    net.tick(undefined, 1);
    for (const n of net.nodes.values()) expect(n.raw.isIdle(), n.id).to.equal(true);
    expect(leader.state).to.deep.equal(['x']);
  });
});
