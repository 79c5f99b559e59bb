/**
 * The Raft paper's §5.1–5.4, case by case (after etcd-io/raft raft_paper_test.go), on a
 * single RawNode whose messages are stepped and inspected by hand.
 */
import { expect } from 'chai';
import {
  type Entry,
  type MemoryStorage,
  type Message,
  MessageType,
  newMessage,
  type RawNode,
} from '../src/index.ts';
import { drain, entry, singleNode, storageAtZero } from './harness.ts';

const peers = ['1', '2', '3'];

function msg(fields: Partial<Message> & Pick<Message, 'type' | 'from' | 'to'>): Message {
  return newMessage({ groupId: 1, ...fields });
}

function ticks(raw: RawNode, n: number): void {
  for (let i = 0; i < n; i++) raw.tick();
}

/** Node '1' elected leader of peers at term 1 (log: the leader's empty entry at index 1). */
function leader(options: Parameters<typeof singleNode>[2] = {}) {
  const node = singleNode('1', peers, options);
  node.raw.campaign();
  drain(node.raw, node.storage);
  node.raw.step(msg({ type: MessageType.VoteResp, from: '2', to: '1', term: 1 }));
  drain(node.raw, node.storage);
  expect(node.raw.status().role).to.equal('leader');
  return node;
}

function storageWith(entries: Entry[], voters = peers, term = 0): MemoryStorage {
  const s = storageAtZero(voters);
  s.append(entries);
  s.setHardState({ term, vote: null, commit: 0 });
  return s;
}

describe('raft paper §5.1: terms', () => {
  for (const role of ['follower', 'candidate', 'leader'] as const) {
    it(`§5.1 a ${role} that sees a higher term adopts it and becomes follower`, () => {
      const { raw, storage } = role === 'leader' ? leader() : singleNode('1', peers);
      if (role === 'candidate') raw.campaign();
      drain(raw, storage);
      raw.step(msg({ type: MessageType.App, from: '2', to: '1', term: 5 }));
      expect(raw.status().term).to.equal(5);
      expect(raw.status().role).to.equal('follower');
      expect(raw.status().lead).to.equal('2');
    });
  }

  it('§5.1 a request with a stale term is rejected (answered with the current term, not acted on)', () => {
    const { raw, storage } = singleNode('1', peers);
    raw.step(msg({ type: MessageType.App, from: '2', to: '1', term: 3 }));
    drain(raw, storage);
    raw.step(msg({ type: MessageType.App, from: '3', to: '1', term: 2, entries: [] }));
    const out = drain(raw, storage);
    expect(raw.status().lead).to.equal('2');
    expect(out).to.have.length(1);
    expect(out[0]).to.deep.include({ type: MessageType.AppResp, to: '3', term: 3 });
  });
});

describe('raft paper §5.2: leader election', () => {
  it('§5.2 servers start up as followers', () => {
    expect(singleNode('1', peers).raw.status().role).to.equal('follower');
  });

  it('§5.2 the leader sends heartbeats to every follower each heartbeat interval', () => {
    const { raw, storage } = leader({ heartbeatTick: 1 });
    raw.tick();
    const hb = drain(raw, storage).filter((m) => m.type === MessageType.Heartbeat);
    expect(hb.map((m) => m.to).sort()).to.deep.equal(['2', '3']);
    for (const m of hb) expect(m.term).to.equal(1);
  });

  for (const role of ['follower', 'candidate'] as const) {
    it(`§5.2 a ${role} that times out starts an election: term+1, votes for itself, requests votes`, () => {
      const { raw, storage } = singleNode('1', peers);
      if (role === 'candidate') {
        raw.campaign();
        drain(raw, storage);
      }
      const term = raw.status().term;
      ticks(raw, 20);
      const out = drain(raw, storage);
      expect(raw.status().term).to.equal(term + 1);
      expect(raw.status().role).to.equal('candidate');
      expect(raw.status().vote).to.equal('1');
      const votes = out.filter((m) => m.type === MessageType.Vote);
      expect(votes.map((m) => m.to).sort()).to.deep.equal(['2', '3']);
      for (const m of votes) expect(m.term).to.equal(term + 1);
    });
  }

  const cases: [number, Record<string, boolean>, string][] = [
    [1, {}, 'leader'],
    [3, { '2': true, '3': true }, 'leader'],
    [3, { '2': true }, 'leader'],
    [5, { '2': true, '3': true, '4': true, '5': true }, 'leader'],
    [5, { '2': true, '3': true }, 'leader'],
    [3, { '2': false, '3': false }, 'follower'],
    [5, { '2': false, '3': false, '4': false }, 'follower'],
    [3, {}, 'candidate'],
    [5, { '2': true }, 'candidate'],
    [5, { '2': false, '3': false }, 'candidate'],
  ];
  for (const [size, votes, role] of cases) {
    it(`§5.2 election in one round: ${size} voters, votes ${JSON.stringify(votes)} → ${role}`, () => {
      const ids = Array.from({ length: size }, (_, i) => `${i + 1}`);
      const { raw } = singleNode('1', ids);
      raw.campaign();
      for (const [id, granted] of Object.entries(votes)) {
        raw.step(msg({ type: MessageType.VoteResp, from: id, to: '1', term: 1, reject: !granted }));
      }
      expect(raw.status().role).to.equal(role);
      expect(raw.status().term).to.equal(1);
    });
  }

  it('§5.2 a follower votes for at most one candidate per term, first come first served', () => {
    for (const [voted, candidate, rejected] of [
      [null, '2', false],
      [null, '3', false],
      ['2', '2', false],
      ['3', '3', false],
      ['2', '3', true],
      ['3', '2', true],
    ] as const) {
      const storage = storageAtZero(peers);
      storage.setHardState({ term: 1, vote: voted, commit: 0 });
      const { raw } = singleNode('1', peers, { storage });
      raw.step(msg({ type: MessageType.Vote, from: candidate, to: '1', term: 1 }));
      const out = drain(raw, storage);
      expect(out[0], `voted ${voted}, asked by ${candidate}`).to.deep.include({
        type: MessageType.VoteResp,
        to: candidate,
        reject: rejected,
      });
    }
  });

  it('§5.2 a candidate that hears from a leader of its term falls back to follower', () => {
    const { raw } = singleNode('1', peers);
    raw.campaign();
    raw.step(msg({ type: MessageType.App, from: '2', to: '1', term: 1 }));
    expect(raw.status()).to.deep.include({ role: 'follower', term: 1, lead: '2' });
  });

  it('§5.2 election timeouts are randomized so followers rarely time out together', () => {
    const timeouts = new Set<number>();
    for (let seed = 1; seed <= 100; seed++) {
      const { raw, storage } = singleNode('1', peers, { seed });
      let n = 0;
      while (raw.status().role === 'follower') {
        raw.tick();
        n++;
      }
      drain(raw, storage);
      timeouts.add(n);
    }
    expect(timeouts.size, 'every timeout in [10, 20) is used').to.equal(10);
  });
});

describe('raft paper §5.3: log replication', () => {
  it('§5.3 the leader appends a proposal to its log and sends it to every follower', () => {
    const { raw, storage } = leader();
    raw.step(msg({ type: MessageType.AppResp, from: '2', to: '1', term: 1, index: 1 }));
    raw.step(msg({ type: MessageType.AppResp, from: '3', to: '1', term: 1, index: 1 }));
    drain(raw, storage);
    raw.propose(new TextEncoder().encode('some data'));
    const apps = drain(raw, storage).filter((m) => m.type === MessageType.App);
    expect(apps.map((m) => m.to).sort()).to.deep.equal(['2', '3']);
    for (const m of apps) {
      expect(m).to.deep.include({ index: 1, logTerm: 1, commit: 1 });
      expect(m.entries.map((e) => [e.index, e.term])).to.deep.equal([[2, 1]]);
    }
    expect(storage.lastIndex()).to.equal(2);
  });

  it('§5.3 the leader commits an entry once a majority has it and tells followers through the commit index', () => {
    const { raw, storage } = leader();
    raw.propose(new TextEncoder().encode('x'));
    drain(raw, storage);
    expect(raw.status().commit).to.equal(0);
    raw.step(msg({ type: MessageType.AppResp, from: '2', to: '1', term: 1, index: 2 }));
    const out = drain(raw, storage);
    expect(raw.status().commit).to.equal(2);
    // Follower 2 holds every entry: it is told in a MsgCommit (a MsgApp without entries
    // or answer); 3, still probed, hears of it with its next MsgApp.
    const told = out.filter((m) => m.type === MessageType.App || m.type === MessageType.Commit);
    expect(told.map((m) => [m.type, m.to, m.commit])).to.deep.equal([[MessageType.Commit, '2', 2]]);
  });

  it('§5.3 a follower told the commit in a MsgCommit commits without answering; one lacking the entry rejects it', () => {
    const { raw, storage } = singleNode('2', peers);
    raw.step(msg({ type: MessageType.App, from: '1', to: '2', term: 1, entries: [entry(1, 1)] }));
    drain(raw, storage);
    const notice = { type: MessageType.Commit, from: '1', to: '2', term: 1, logTerm: 1 } as const;
    raw.step(msg({ ...notice, index: 1, commit: 1 }));
    expect(drain(raw, storage)).to.deep.equal([]);
    expect(raw.status().commit).to.equal(1);
    // The notice names an entry this log does not have: answered as a rejected MsgApp.
    raw.step(msg({ ...notice, index: 3, commit: 3 }));
    const out = drain(raw, storage);
    expect(out.map((m) => [m.type, m.reject, m.rejectHint])).to.deep.equal([
      [MessageType.AppResp, true, 1],
    ]);
    expect(raw.status().commit).to.equal(1);
  });

  for (const [size, acks, committed] of [
    [1, [], true],
    [3, [], false],
    [3, ['2'], true],
    [5, ['2'], false],
    [5, ['2', '3'], true],
  ] as const) {
    it(`§5.3 commit needs a majority: ${size} voters, acks from ${JSON.stringify(acks)} → ${committed ? 'committed' : 'not yet'}`, () => {
      const ids = Array.from({ length: size }, (_, i) => `${i + 1}`);
      const node = singleNode('1', ids);
      node.raw.campaign();
      for (const id of ids.slice(1, Math.floor(size / 2) + 1)) {
        node.raw.step(msg({ type: MessageType.VoteResp, from: id, to: '1', term: 1 }));
      }
      drain(node.raw, node.storage);
      expect(node.raw.status().role).to.equal('leader');
      node.raw.propose(new TextEncoder().encode('x'));
      drain(node.raw, node.storage);
      for (const id of acks)
        node.raw.step(msg({ type: MessageType.AppResp, from: id, to: '1', term: 1, index: 2 }));
      expect(node.raw.status().commit).to.equal(committed ? 2 : 0);
    });
  }

  it('§5.3 committing an entry commits every preceding entry, including older terms', () => {
    const storage = storageWith([entry(1, 1), entry(2, 1)], peers, 2);
    const node = singleNode('1', peers, { storage });
    node.raw.campaign(); // term 3
    node.raw.step(msg({ type: MessageType.VoteResp, from: '2', to: '1', term: 3 }));
    drain(node.raw, node.storage);
    node.raw.step(msg({ type: MessageType.AppResp, from: '2', to: '1', term: 3, index: 3 }));
    expect(node.raw.status().commit).to.equal(3);
  });

  it('§5.3 a follower commits what the leader says is committed', () => {
    const { raw, storage } = singleNode('1', peers);
    raw.step(
      msg({
        type: MessageType.App,
        from: '2',
        to: '1',
        term: 1,
        index: 0,
        logTerm: 0,
        entries: [entry(1, 1, 'a'), entry(2, 1, 'b')],
        commit: 1,
      }),
    );
    expect(raw.status().commit).to.equal(1);
    const rd = raw.ready();
    expect(rd.committedEntries.map((e) => e.index)).to.deep.equal([1]);
    storage.append(rd.entries);
    raw.advance();
  });

  it('§5.3 a follower rejects an append whose previous entry does not match, with a backtracking hint', () => {
    for (const [prevTerm, prevIndex, reject] of [
      [0, 0, false],
      [1, 1, false],
      [2, 2, false],
      [3, 3, false],
      [3, 2, true],
      [4, 4, true],
    ] as const) {
      const s = storageWith([entry(1, 1), entry(2, 2), entry(3, 3)]);
      const { raw } = singleNode('1', peers, { storage: s });
      raw.step(
        msg({
          type: MessageType.App,
          from: '2',
          to: '1',
          term: 3,
          index: prevIndex,
          logTerm: prevTerm,
          commit: 1,
        }),
      );
      const resp = drain(raw, s).find((m) => m.type === MessageType.AppResp)!;
      expect(resp.reject, `prev (${prevIndex}, ${prevTerm})`).to.equal(reject);
      if (reject) expect(resp.rejectHint).to.be.at.most(3);
    }
  });

  it('§5.3 a follower deletes a conflicting suffix and appends the new entries', () => {
    const cases: [number, number, Entry[], number[]][] = [
      // prevIndex, prevTerm, entries → terms of the resulting log
      [2, 2, [entry(3, 3)], [1, 2, 3]],
      [1, 1, [entry(2, 3), entry(3, 4)], [1, 3, 4]],
      [0, 0, [entry(1, 1)], [1, 2]],
      [0, 0, [entry(1, 3)], [3]],
    ];
    for (const [index, logTerm, entries, terms] of cases) {
      const s = storageWith([entry(1, 1), entry(2, 2)]);
      const { raw } = singleNode('1', peers, { storage: s });
      raw.step(
        msg({ type: MessageType.App, from: '2', to: '1', term: 4, index, logTerm, entries }),
      );
      drain(raw, s);
      const log = s.entries(1, s.lastIndex() + 1, Number.POSITIVE_INFINITY).map((e) => e.term);
      expect(log, `append after ${index}`).to.deep.equal(terms);
    }
  });

  it('§5.3 Figure 7: the leader brings every follower log (a)–(f) in line with its own', () => {
    const t = (...terms: number[]) => terms.map((term, i) => entry(i + 1, term));
    const leaderLog = t(1, 1, 1, 4, 4, 5, 5, 6, 6, 6);
    const followers = {
      a: t(1, 1, 1, 4, 4, 5, 5, 6, 6),
      b: t(1, 1, 1, 4),
      c: t(1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6),
      d: t(1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7),
      e: t(1, 1, 1, 4, 4, 4, 4),
      f: t(1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3),
    };
    for (const [name, log] of Object.entries(followers)) {
      const ls = storageWith(leaderLog, peers, 8);
      ls.setHardState({ term: 8, vote: null, commit: 10 });
      // peers '2' and '3': '2' has log (name), '3' only grants the vote.
      const lead = singleNode('1', peers, { storage: ls });
      const fs = storageWith(log, peers, 8);
      const follower = singleNode('2', peers, { storage: fs });
      lead.raw.campaign();
      lead.raw.step(msg({ type: MessageType.VoteResp, from: '3', to: '1', term: 9 }));
      expect(lead.raw.status().role).to.equal('leader');
      let queue = drain(lead.raw, lead.storage);
      for (let round = 0; round < 50 && queue.length > 0; round++) {
        const next: Message[] = [];
        for (const m of queue) {
          if (m.to === '2') {
            follower.raw.step(m);
            next.push(...drain(follower.raw, follower.storage));
          } else if (m.to === '1') {
            lead.raw.step(m);
            next.push(...drain(lead.raw, lead.storage));
          }
        }
        queue = next.filter((m) => m.to !== '3');
      }
      const terms = (s: MemoryStorage) =>
        s.entries(1, s.lastIndex() + 1, Number.POSITIVE_INFINITY).map((e) => e.term);
      expect(terms(fs), `follower (${name})`).to.deep.equal(terms(ls));
      expect(terms(ls)).to.deep.equal([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 9]);
    }
  });
});

describe('raft paper §5.4: safety', () => {
  it('§5.4.1 a voter rejects a candidate whose log is less up to date', () => {
    const cases: [number, number, boolean][] = [
      // candidate lastTerm, lastIndex → granted (voter log: terms 1, 2 at indexes 1, 2)
      [1, 1, false],
      [1, 2, false],
      [1, 3, false],
      [2, 1, false],
      [2, 2, true],
      [2, 3, true],
      [3, 1, true],
      [3, 2, true],
    ];
    for (const [logTerm, index, granted] of cases) {
      const s = storageWith([entry(1, 1), entry(2, 2)], peers, 2);
      const { raw } = singleNode('1', peers, { storage: s });
      raw.step(msg({ type: MessageType.Vote, from: '2', to: '1', term: 3, index, logTerm }));
      const resp = drain(raw, s).find((m) => m.type === MessageType.VoteResp)!;
      expect(!resp.reject, `candidate (${index}, ${logTerm})`).to.equal(granted);
    }
  });

  it('§5.4.1 a candidate asks for votes with its last log index and term', () => {
    const s = storageWith([entry(1, 1), entry(2, 2)], peers, 2);
    const { raw } = singleNode('1', peers, { storage: s });
    raw.campaign();
    const votes = drain(raw, s).filter((m) => m.type === MessageType.Vote);
    expect(votes).to.have.length(2);
    for (const m of votes) expect(m).to.deep.include({ term: 3, index: 2, logTerm: 2 });
  });

  it('§5.4.2 a leader never commits an entry of an older term by counting replicas (Figure 8)', () => {
    // The leader of term 3 holds an entry of term 2 at index 2, replicated to a majority.
    const s = storageWith([entry(1, 1), entry(2, 2)], peers, 2);
    const lead = singleNode('1', peers, { storage: s });
    lead.raw.campaign();
    lead.raw.step(msg({ type: MessageType.VoteResp, from: '2', to: '1', term: 3 }));
    drain(lead.raw, lead.storage);
    expect(lead.raw.status().role).to.equal('leader');
    // Follower 2 acknowledges index 2 (the old-term entry) but not index 3 (this term's).
    lead.raw.step(msg({ type: MessageType.AppResp, from: '2', to: '1', term: 3, index: 2 }));
    expect(lead.raw.status().commit, 'index 2 is on a majority but from term 2').to.equal(0);
    lead.raw.step(msg({ type: MessageType.AppResp, from: '2', to: '1', term: 3, index: 3 }));
    expect(lead.raw.status().commit, 'committing index 3 of term 3 commits index 2 too').to.equal(
      3,
    );
  });

  it('§5.4.3 a new leader has every committed entry (leader completeness via the vote restriction)', () => {
    // '2' holds the committed entry (index 2, term 2); '1' lacks it: '2' refuses to elect '1'.
    const s2 = storageWith([entry(1, 1), entry(2, 2)], peers, 2);
    const { raw } = singleNode('2', peers, { storage: s2 });
    raw.step(msg({ type: MessageType.Vote, from: '1', to: '2', term: 3, index: 1, logTerm: 1 }));
    const resp = drain(raw, s2).find((m) => m.type === MessageType.VoteResp)!;
    expect(resp.reject).to.equal(true);
  });
});
