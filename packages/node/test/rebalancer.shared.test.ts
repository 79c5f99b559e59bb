/**
 * The rebalancing planner, checked against the real raft configuration code: every step
 * it returns is applied as raft applies a committed ConfChangeV2 (`RawNode.applyConfChange`
 * runs raft's ConfChanger, which refuses what a proposal would be refused for: a second
 * joint change, a leave outside a joint configuration, a simple change of two voters,
 * removing every voter). Membership by joint consensus: Raft thesis §4.3; leadership
 * transfer: §3.10.
 */
import {
  ConfChangeTransition,
  ConfChangeType,
  type ConfChangeV2,
  type ConfState,
  EntryType,
  isRaftError,
  MemoryStorage,
  mulberry32,
  type NodeId,
  type Prng,
  type ProgressStatus,
  RaftErrorCode,
  RawNode,
} from '@meshkv/raft';
import { expect } from 'chai';
// The raft package's deterministic in-test network (real RawNodes, persist → send →
// apply → advance, one-leader-per-term and same-entry-per-index checks on every step).
import { compactAll, Network, type TestNode } from '../../raft/test/harness.ts';
import {
  type MemberProgress,
  movesInConfig,
  planReconfiguration,
  type RebalanceInput,
  type RebalanceStep,
  toConfChange,
} from '../src/rebalancer.ts';

function conf(
  voters: NodeId[],
  more: {
    learners?: NodeId[];
    outgoing?: NodeId[];
    learnersNext?: NodeId[];
    autoLeave?: boolean;
  } = {},
): ConfState {
  return {
    voters,
    learners: more.learners ?? [],
    votersOutgoing: more.outgoing ?? [],
    learnersNext: more.learnersNext ?? [],
    autoLeave: more.autoLeave ?? false,
  };
}

function membersOf(cs: ConfState): NodeId[] {
  return [...new Set([...cs.voters, ...cs.votersOutgoing, ...cs.learners, ...cs.learnersNext])];
}

const LAST_INDEX = 1000;

/** A member the leader sees caught up, or lagging (probing far behind). */
const caughtUp: MemberProgress = { match: LAST_INDEX, state: 'replicate' };
const lagging: MemberProgress = { match: 3, state: 'probe' };

/**
 * A planning world: the leader `self`, the configuration, who is reachable and who is
 * caught up. Everyone is reachable and caught up unless listed.
 */
interface World {
  self: NodeId;
  cs: ConfState;
  target: NodeId[];
  unreachable?: NodeId[];
  laggingMembers?: NodeId[];
  confChangePending?: boolean;
  leadTransferee?: NodeId | null;
  movesInProgress?: number;
  maxMovesPerNode?: number;
}

function inputOf(w: World): RebalanceInput {
  const progress = new Map<NodeId, MemberProgress>();
  for (const id of membersOf(w.cs)) {
    progress.set(id, w.laggingMembers?.includes(id) ? lagging : caughtUp);
  }
  const everyone = [...membersOf(w.cs), ...w.target];
  return {
    self: w.self,
    confState: w.cs,
    confChangePending: w.confChangePending ?? false,
    leadTransferee: w.leadTransferee ?? null,
    target: w.target,
    progress,
    lastIndex: LAST_INDEX,
    reachable: new Set(everyone.filter((id) => !w.unreachable?.includes(id))),
    movesInProgress: w.movesInProgress ?? movesInConfig(w.cs),
    maxMovesPerNode: w.maxMovesPerNode ?? 8,
  };
}

/** Applies `cc` to `cs` exactly as raft applies a committed ConfChangeV2 (throws if raft refuses it). */
function applyAsRaft(cs: ConfState, cc: ConfChangeV2, self: NodeId): ConfState {
  const node = new RawNode({
    id: self,
    groupId: 0,
    storage: new MemoryStorage({ confState: cs }),
    random: mulberry32(1),
    electionTick: 10,
    heartbeatTick: 1,
  });
  return node.applyConfChange(cc);
}

const leaveJoint: ConfChangeV2 = { transition: ConfChangeTransition.Auto, changes: [] };

/**
 * Plans and applies steps until the planner says none (at most `maxSteps`): a transfer
 * makes its target the leader; an auto-leave joint configuration is left as raft leaves
 * it. `beforePlan` may change the world between steps (catch learners up, ...).
 */
function drive(
  w: World,
  maxSteps = 20,
  beforePlan: (w: World) => void = () => {},
): { steps: RebalanceStep[]; last: RebalanceStep } {
  const steps: RebalanceStep[] = [];
  for (let i = 0; i < maxSteps; i++) {
    if (w.cs.autoLeave) w.cs = applyAsRaft(w.cs, leaveJoint, w.self);
    beforePlan(w);
    const step = planReconfiguration(inputOf(w));
    if (step.kind === 'none') return { steps, last: step };
    steps.push(step);
    if (step.kind === 'transferLeader') w.self = step.to;
    else w.cs = applyAsRaft(w.cs, toConfChange(step)!, w.self);
  }
  throw new Error(`no convergence within ${maxSteps} steps: ${JSON.stringify(steps)}`);
}

const sorted = (ids: readonly NodeId[]) => [...ids].sort();

function expectInPlace(w: World, last: RebalanceStep): void {
  expect(last).to.deep.equal({ kind: 'none', reason: 'in place' });
  expect(sorted(w.cs.voters)).to.deep.equal(sorted(w.target));
  expect(w.cs.learners).to.deep.equal([]);
  expect(w.cs.votersOutgoing).to.deep.equal([]);
}

describe('node rebalancer: one configuration step at a time toward the placement (Raft thesis §4.3)', () => {
  it('bootstrap growth: voters [a], target [a,b,c] → learners b, c → once caught up one joint swap → leave joint → in place', () => {
    const w: World = { self: 'a', cs: conf(['a']), target: ['a', 'b', 'c'] };
    expect(planReconfiguration(inputOf(w))).to.deep.equal({
      kind: 'addLearners',
      nodes: ['b', 'c'],
    });
    // Two learners in one Auto ConfChangeV2: raft enters an auto-leave joint configuration
    // with the same voters in both halves, and leaves it by itself.
    w.cs = applyAsRaft(w.cs, toConfChange({ kind: 'addLearners', nodes: ['b', 'c'] })!, 'a');
    expect(w.cs).to.deep.include({ voters: ['a'], votersOutgoing: ['a'], autoLeave: true });
    expect(planReconfiguration(inputOf(w)).kind).to.equal('none');
    w.cs = applyAsRaft(w.cs, leaveJoint, 'a');
    expect(w.cs).to.deep.equal(conf(['a'], { learners: ['b', 'c'] }));
    // Not caught up yet: the planner waits for both (one swap for all).
    w.laggingMembers = ['c'];
    expect(planReconfiguration(inputOf(w))).to.deep.equal({
      kind: 'none',
      reason: 'waiting for c to catch up',
    });
    w.laggingMembers = [];
    const { steps, last } = drive(w);
    expect(steps).to.deep.equal([
      { kind: 'enterJoint', promote: ['b', 'c'], remove: [] },
      { kind: 'leaveJoint' },
    ]);
    expectInPlace(w, last);
  });

  it('the move budget bounds learners added: with 1 of 2 moves in progress only one learner is added, with 2 none', () => {
    const w: World = { self: 'a', cs: conf(['a']), target: ['a', 'b', 'c'], maxMovesPerNode: 2 };
    w.movesInProgress = 1;
    expect(planReconfiguration(inputOf(w))).to.deep.equal({ kind: 'addLearners', nodes: ['b'] });
    w.movesInProgress = 2;
    expect(planReconfiguration(inputOf(w))).to.deep.equal({
      kind: 'none',
      reason: 'move budget exhausted (2 of 2)',
    });
    // A move that is under way continues and finishes whatever the budget.
    w.cs = conf(['a'], { learners: ['b'] });
    w.movesInProgress = 5;
    expect(planReconfiguration(inputOf(w))).to.deep.equal({
      kind: 'enterJoint',
      promote: ['b'],
      remove: [],
    });
    w.cs = conf(['a', 'b'], { outgoing: ['a'] });
    expect(planReconfiguration(inputOf(w))).to.deep.equal({ kind: 'leaveJoint' });
  });

  for (const unreachable of [[], ['c']]) {
    const title =
      unreachable.length === 0
        ? 'a 4th node joins: voters [a,b,c], target [a,b,d] → learner d → joint swap d for c → leave joint → in place'
        : 'a voter is down: voters [a,b,c] (c down), target [a,b,d] → d replaces c in the same steps (c is not removed before d is promoted)';
    it(title, () => {
      const w: World = {
        self: 'a',
        cs: conf(['a', 'b', 'c']),
        target: ['a', 'b', 'd'],
        unreachable,
      };
      const { steps, last } = drive(w);
      expect(steps).to.deep.equal([
        { kind: 'addLearners', nodes: ['d'] },
        { kind: 'enterJoint', promote: ['d'], remove: ['c'] },
        { kind: 'leaveJoint' },
      ]);
      expectInPlace(w, last);
    });
  }

  it('the leader leaves (self a, target [b,c,d]): leadership moves first to a caught-up target voter, which completes the move', () => {
    const w: World = { self: 'a', cs: conf(['a', 'b', 'c']), target: ['b', 'c', 'd'] };
    const { steps, last } = drive(w);
    expect(steps).to.deep.equal([
      { kind: 'transferLeader', to: 'b' },
      { kind: 'addLearners', nodes: ['d'] },
      { kind: 'enterJoint', promote: ['d'], remove: ['a'] },
      { kind: 'leaveJoint' },
    ]);
    expect(w.self).to.equal('b');
    expectInPlace(w, last);
  });

  it('a leaving leader removes itself last: with room for one removal it swaps out the other leaver first', () => {
    // c (in the target) lags, so there is no one to hand off to yet; e is unreachable, so
    // only d is promoted and one of the two leavers may go.
    const w: World = {
      self: 'a',
      cs: conf(['a', 'b', 'c'], { learners: ['d'] }),
      target: ['c', 'd', 'e'],
      laggingMembers: ['c'],
      unreachable: ['e'],
    };
    expect(planReconfiguration(inputOf(w))).to.deep.equal({
      kind: 'enterJoint',
      promote: ['d'],
      remove: ['b'],
    });
  });

  it('the leader leaves while the target voters lag: it swaps itself out in the joint configuration and hands off before leaving it', () => {
    const w: World = {
      self: 'a',
      cs: conf(['a', 'b', 'c']),
      target: ['b', 'c', 'd'],
      laggingMembers: ['b', 'c'],
    };
    const step1 = planReconfiguration(inputOf(w));
    expect(step1).to.deep.equal({ kind: 'addLearners', nodes: ['d'] });
    w.cs = applyAsRaft(w.cs, toConfChange(step1)!, 'a');
    const step2 = planReconfiguration(inputOf(w));
    expect(step2).to.deep.equal({ kind: 'enterJoint', promote: ['d'], remove: ['a'] });
    w.cs = applyAsRaft(w.cs, toConfChange(step2)!, 'a');
    // a votes only in the outgoing half now: it must not leave the joint configuration
    // itself (it would step down and leave the group leaderless); d is caught up.
    expect(planReconfiguration(inputOf(w))).to.deep.equal({ kind: 'transferLeader', to: 'd' });
    w.laggingMembers = ['b', 'c', 'd'];
    expect(planReconfiguration(inputOf(w))).to.deep.equal({
      kind: 'none',
      reason: 'waiting for an incoming voter to catch up to hand off leadership',
    });
    w.laggingMembers = [];
    // b comes first in the target order once it caught up.
    expect(planReconfiguration(inputOf(w))).to.deep.equal({ kind: 'transferLeader', to: 'b' });
    w.self = 'b';
    expect(planReconfiguration(inputOf(w))).to.deep.equal({ kind: 'leaveJoint' });
  });

  it('an unreachable newcomer is neither added nor promoted, and no voter makes room for it', () => {
    const target = ['a', 'b', 'd'];
    const down: World = { self: 'a', cs: conf(['a', 'b', 'c']), target, unreachable: ['c', 'd'] };
    expect(planReconfiguration(inputOf(down))).to.deep.equal({
      kind: 'none',
      reason: 'target members d unreachable',
    });
    const learner: World = {
      self: 'a',
      cs: conf(['a', 'b', 'c'], { learners: ['d'] }),
      target,
      unreachable: ['d'],
    };
    expect(planReconfiguration(inputOf(learner))).to.deep.equal({
      kind: 'none',
      reason: 'target members d unreachable',
    });
  });

  it("liveness is the reachable set, not raft's recentActive: right after CheckQuorum cleared it the move goes on", () => {
    // What Status.progress holds in the tick after a CheckQuorum round: no member active.
    const cleared = (match: number): ProgressStatus => ({
      match,
      next: match + 1,
      state: 'replicate',
      isLearner: false,
      recentActive: false,
      pendingSnapshot: 0,
      inflightMsgs: 0,
      inflightBytes: 0,
    });
    const input = inputOf({
      self: 'a',
      cs: conf(['a', 'b', 'c'], { learners: ['d'] }),
      target: ['a', 'b', 'd'],
    });
    const progress = new Map<NodeId, ProgressStatus>();
    for (const id of ['a', 'b', 'c', 'd']) progress.set(id, cleared(LAST_INDEX));
    expect(planReconfiguration({ ...input, progress })).to.deep.equal({
      kind: 'enterJoint',
      promote: ['d'],
      remove: ['c'],
    });
  });

  it('in place, leadership goes to the first replica of the target once it is caught up', () => {
    const input = inputOf({ self: 'a', cs: conf(['a', 'b', 'c']), target: ['b', 'a', 'c'] });
    expect(planReconfiguration(input)).to.deep.equal({ kind: 'transferLeader', to: 'b' });
    const lagging = new Map(input.progress).set('b', { match: 3, state: 'probe' as const });
    expect(planReconfiguration({ ...input, progress: lagging }).kind).to.equal('none');
    const unreachable = new Set([...input.reachable].filter((id) => id !== 'b'));
    expect(planReconfiguration({ ...input, reachable: unreachable }).kind).to.equal('none');
    const atHome = inputOf({ self: 'b', cs: conf(['a', 'b', 'c']), target: ['b', 'a', 'c'] });
    expect(planReconfiguration(atHome)).to.deep.equal({ kind: 'none', reason: 'in place' });
  });

  it('a leadership taken by request stays in place; a move off the leader still hands it off', () => {
    const input = inputOf({ self: 'a', cs: conf(['a', 'b', 'c']), target: ['b', 'a', 'c'] });
    expect(planReconfiguration({ ...input, leadershipTaken: true })).to.deep.equal({
      kind: 'none',
      reason: 'in place; leads by request instead of b',
    });
    const leaving = inputOf({ self: 'a', cs: conf(['a', 'b', 'c']), target: ['b', 'c'] });
    expect(planReconfiguration({ ...leaving, leadershipTaken: true }).kind).to.equal(
      'transferLeader',
    );
  });

  it('a learner is caught up when replicating within catchUpLagEntries of the last index', () => {
    const input = inputOf({ self: 'a', cs: conf(['a'], { learners: ['b'] }), target: ['a', 'b'] });
    const withB = (progress: MemberProgress, catchUpLagEntries?: number) =>
      planReconfiguration({
        ...input,
        progress: new Map([...input.progress, ['b', progress]]),
        catchUpLagEntries,
      }).kind;
    expect(withB({ match: LAST_INDEX - 256, state: 'replicate' })).to.equal('enterJoint');
    expect(withB({ match: LAST_INDEX - 257, state: 'replicate' })).to.equal('none');
    expect(withB({ match: LAST_INDEX - 10, state: 'replicate' }, 10)).to.equal('enterJoint');
    expect(withB({ match: LAST_INDEX - 11, state: 'replicate' }, 10)).to.equal('none');
    // A member being sent a snapshot is not caught up, whatever its match says; one probed
    // is only if it acknowledged the whole log (after a snapshot an idle group sends no
    // append that would move it to replicate: sim seed 2035 waited forever).
    expect(withB({ match: LAST_INDEX, state: 'snapshot' })).to.equal('none');
    expect(withB({ match: LAST_INDEX, state: 'probe' })).to.equal('enterJoint');
    expect(withB({ match: LAST_INDEX - 1, state: 'probe' })).to.equal('none');
  });

  it('never proposes a configuration whose majority is unreachable: a shrink that would need a down voter waits', () => {
    // Target shrank to [a,b] but b is down: {a,b} would need b.
    const shrink: World = {
      self: 'a',
      cs: conf(['a', 'b', 'c']),
      target: ['a', 'b'],
      unreachable: ['b'],
    };
    expect(planReconfiguration(inputOf(shrink))).to.deep.equal({
      kind: 'none',
      reason: 'removing c would leave no live majority',
    });
    // Five voters, two of the kept three down: removing both live leavers is refused and
    // so is removing one (two of four live); nothing is proposed.
    const five: World = {
      self: 'a',
      cs: conf(['a', 'b', 'c', 'd', 'e']),
      target: ['a', 'b', 'c'],
      unreachable: ['b', 'c'],
    };
    expect(planReconfiguration(inputOf(five))).to.deep.equal({
      kind: 'none',
      reason: 'removing d, e would leave no live majority',
    });
    // With one of them back, both leave at once: {a,b,c} has a, b live.
    five.unreachable = ['c'];
    expect(planReconfiguration(inputOf(five))).to.deep.equal({
      kind: 'enterJoint',
      promote: [],
      remove: ['d', 'e'],
    });
    // No live majority now: nothing could commit.
    const lost: World = {
      self: 'a',
      cs: conf(['a', 'b', 'c']),
      target: ['a', 'b', 'd'],
      unreachable: ['b', 'c'],
    };
    expect(planReconfiguration(inputOf(lost))).to.deep.equal({
      kind: 'none',
      reason: 'no live majority of voters a, b, c',
    });
  });

  it('a target smaller than N (a cluster of 2 members, N 3): voters [a], target [a,b] → grows to 2 voters', () => {
    const w: World = { self: 'a', cs: conf(['a']), target: ['a', 'b'] };
    const { steps, last } = drive(w);
    expect(steps).to.deep.equal([
      { kind: 'addLearners', nodes: ['b'] },
      { kind: 'enterJoint', promote: ['b'], remove: [] },
      { kind: 'leaveJoint' },
    ]);
    expectInPlace(w, last);
  });

  it('N = 1, the only voter leaves: voters [a], target [b] → learner b → joint {b}/{a} → transfer to b → b leaves joint', () => {
    const w: World = { self: 'a', cs: conf(['a']), target: ['b'] };
    const { steps, last } = drive(w);
    expect(steps).to.deep.equal([
      { kind: 'addLearners', nodes: ['b'] },
      { kind: 'enterJoint', promote: ['b'], remove: ['a'] },
      { kind: 'transferLeader', to: 'b' },
      { kind: 'leaveJoint' },
    ]);
    expect(w.self).to.equal('b');
    expectInPlace(w, last);
  });

  it('learners outside the target are removed (a newcomer the placement dropped again)', () => {
    const w: World = {
      self: 'a',
      cs: conf(['a', 'b', 'c'], { learners: ['e', 'd'] }),
      target: ['a', 'b', 'c'],
    };
    const { steps, last } = drive(w);
    expect(steps).to.deep.equal([{ kind: 'removeLearners', nodes: ['d', 'e'] }]);
    expectInPlace(w, last);
  });

  it('waits while a configuration change is pending, a transfer is in progress, or it is not a voter', () => {
    const base: World = { self: 'a', cs: conf(['a']), target: ['a', 'b'] };
    expect(planReconfiguration(inputOf({ ...base, confChangePending: true }))).to.deep.equal({
      kind: 'none',
      reason: 'configuration change pending',
    });
    expect(planReconfiguration(inputOf({ ...base, leadTransferee: 'b' }))).to.deep.equal({
      kind: 'none',
      reason: 'leadership transfer to b in progress',
    });
    expect(planReconfiguration(inputOf({ ...base, self: 'z' }))).to.deep.equal({
      kind: 'none',
      reason: 'z is not a voter',
    });
    // An auto-leave joint configuration is raft's to leave.
    const auto = conf(['a'], { outgoing: ['a'], learners: ['b'], autoLeave: true });
    expect(planReconfiguration(inputOf({ ...base, cs: auto }))).to.deep.equal({
      kind: 'none',
      reason: 'raft leaves the joint configuration by itself',
    });
  });

  it('refuses malformed input (a target of duplicates, too many replicas, a zero move budget)', () => {
    const base: World = { self: 'a', cs: conf(['a']), target: ['a'] };
    expect(() => planReconfiguration(inputOf({ ...base, target: ['a', 'a'] }))).to.throw(
      RangeError,
      'distinct',
    );
    expect(() => planReconfiguration(inputOf({ ...base, target: [] }))).to.throw(RangeError);
    const six = ['a', 'b', 'c', 'd', 'e', 'f'];
    expect(() => planReconfiguration(inputOf({ ...base, target: six }))).to.throw(RangeError);
    expect(() => planReconfiguration(inputOf({ ...base, maxMovesPerNode: 0 }))).to.throw(
      RangeError,
    );
  });

  it('toConfChange: one ConfChangeV2 per step (Auto for learners, ExplicitJoint for the swap, empty Auto to leave)', () => {
    expect(toConfChange({ kind: 'addLearners', nodes: ['b', 'c'] })).to.deep.equal({
      transition: ConfChangeTransition.Auto,
      changes: [
        { type: ConfChangeType.AddLearnerNode, nodeId: 'b' },
        { type: ConfChangeType.AddLearnerNode, nodeId: 'c' },
      ],
    });
    expect(toConfChange({ kind: 'enterJoint', promote: ['d'], remove: ['c'] })).to.deep.equal({
      transition: ConfChangeTransition.Explicit,
      changes: [
        { type: ConfChangeType.AddNode, nodeId: 'd' },
        { type: ConfChangeType.RemoveNode, nodeId: 'c' },
      ],
    });
    expect(toConfChange({ kind: 'removeLearners', nodes: ['e'] })).to.deep.equal({
      transition: ConfChangeTransition.Auto,
      changes: [{ type: ConfChangeType.RemoveNode, nodeId: 'e' }],
    });
    expect(toConfChange({ kind: 'leaveJoint' })).to.deep.equal(leaveJoint);
    expect(toConfChange({ kind: 'transferLeader', to: 'b' })).to.equal(null);
    expect(toConfChange({ kind: 'none', reason: 'in place' })).to.equal(null);
  });

  it('movesInConfig counts learners and, while joint, incoming voters the outgoing half lacks', () => {
    expect(movesInConfig(conf(['a', 'b', 'c']))).to.equal(0);
    expect(movesInConfig(conf(['a'], { learners: ['b', 'c'] }))).to.equal(2);
    expect(movesInConfig(conf(['a', 'b', 'd'], { outgoing: ['a', 'b', 'c'] }))).to.equal(1);
  });

  describe('seeded random walks: random targets, progress and reachability', () => {
    const pool = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
    const seeds = Array.from({ length: 60 }, (_, i) => i + 1);

    function pick<T>(rng: Prng, items: readonly T[]): T {
      return items[rng.nextInt(items.length)]!;
    }

    function randomTarget(rng: Prng): NodeId[] {
      const size = 1 + rng.nextInt(5);
      const left = [...pool];
      const out: NodeId[] = [];
      while (out.length < size) out.push(left.splice(rng.nextInt(left.length), 1)[0]!);
      return out;
    }

    function isLive(input: RebalanceInput, id: NodeId): boolean {
      if (id === input.self) return true;
      return input.reachable.has(id);
    }

    function liveMajority(input: RebalanceInput, voters: readonly NodeId[]): boolean {
      return voters.filter((id) => isLive(input, id)).length > voters.length / 2;
    }

    /**
     * Checks one step against the rules raft and the planner promise, and returns the
     * configuration after it (raft's own application of the change).
     */
    function checkStep(input: RebalanceInput, step: RebalanceStep): ConfState {
      const cs = input.confState;
      if (step.kind === 'none') return cs;
      expect(input.confChangePending, 'a step while a change is pending').to.equal(false);
      expect(input.leadTransferee, 'a step while a transfer is in progress').to.equal(null);
      if (step.kind === 'transferLeader') {
        expect(step.to).to.not.equal(input.self);
        expect([...cs.voters, ...cs.votersOutgoing], 'transfer to a voter').to.include(step.to);
        const pr = input.progress.get(step.to)!;
        const caughtUp =
          pr.state === 'replicate' || (pr.state === 'probe' && pr.match >= input.lastIndex);
        expect(isLive(input, step.to) && caughtUp, 'transfer to a live caught-up voter').to.equal(
          true,
        );
        return cs;
      }
      if (step.kind === 'addLearners') {
        expect(step.nodes.length).to.be.within(1, input.maxMovesPerNode - input.movesInProgress);
        for (const id of step.nodes) {
          expect(input.target, 'learners come from the target').to.include(id);
          expect(isLive(input, id), `learner ${id} is live`).to.equal(true);
        }
      }
      if (step.kind === 'enterJoint') {
        for (const id of step.promote) {
          expect(cs.learners, 'promote learners only').to.include(id);
          expect(input.target).to.include(id);
          const pr = input.progress.get(id)!;
          const caughtUp =
            pr.state === 'replicate' || (pr.state === 'probe' && pr.match >= input.lastIndex);
          expect(isLive(input, id) && caughtUp, `${id} promoted caught up`).to.equal(true);
        }
        for (const id of step.remove) expect(input.target, `${id} removed`).to.not.include(id);
      }
      // raft applies it (and would have accepted the proposal: the same checks).
      const next = applyAsRaft(cs, toConfChange(step)!, input.self);
      for (const half of [next.voters, next.votersOutgoing]) {
        if (half.length === 0) continue;
        expect(liveMajority(input, half), `live majority of ${half.join(',')}`).to.equal(true);
      }
      // The leader never drops itself from the voters: it hands off first (rule 2).
      expect([...next.voters, ...next.votersOutgoing], 'the leader stays a voter').to.include(
        input.self,
      );
      return next;
    }

    function randomInput(
      rng: Prng,
      self: NodeId,
      cs: ConfState,
      target: NodeId[],
      lastIndex: number,
    ): RebalanceInput {
      const progress = new Map<NodeId, MemberProgress>();
      for (const id of membersOf(cs)) {
        const roll = rng.nextInt(10);
        progress.set(id, {
          match: Math.max(0, lastIndex - rng.nextInt(roll < 6 ? 64 : 500)),
          state: roll < 7 ? 'replicate' : roll < 9 ? 'probe' : 'snapshot',
        });
      }
      const maxMovesPerNode = 1 + rng.nextInt(4);
      return {
        self,
        confState: cs,
        confChangePending: rng.nextInt(10) === 0,
        leadTransferee: rng.nextInt(20) === 0 ? pick(rng, cs.voters) : null,
        target,
        progress,
        lastIndex,
        reachable: new Set(pool.filter(() => rng.nextInt(8) !== 0)),
        movesInProgress: movesInConfig(cs) + rng.nextInt(3),
        maxMovesPerNode,
      };
    }

    it('every step is one raft accepts, keeps a live majority and its leader a voter; planning is idempotent', () => {
      for (const seed of seeds) {
        const rng = mulberry32(seed);
        let self: NodeId = 'a';
        let cs = conf(['a']);
        let target = randomTarget(rng);
        let lastIndex = 10;
        const trace: string[] = [];
        try {
          for (let i = 0; i < 300; i++) {
            if (rng.nextInt(10) === 0) target = randomTarget(rng);
            lastIndex += rng.nextInt(50);
            const input = randomInput(rng, self, cs, target, lastIndex);
            const step = planReconfiguration(input);
            expect(planReconfiguration(input), 'same input, same step').to.deep.equal(step);
            trace.push(`${self} ${JSON.stringify(cs)} → ${target}: ${JSON.stringify(step)}`);
            cs = checkStep(input, step);
            if (step.kind === 'transferLeader' && rng.nextInt(5) !== 0) self = step.to;
            // Raft leaves an auto-leave joint configuration by itself, soon.
            if (cs.autoLeave && rng.nextInt(3) !== 0) cs = applyAsRaft(cs, leaveJoint, self);
            // Now and then another voter with a live majority wins an election.
            if (rng.nextInt(20) === 0) {
              const voters = [...new Set([...cs.voters, ...cs.votersOutgoing])];
              self = pick(rng, voters);
            }
          }
        } catch (e) {
          throw new Error(`seed ${seed}: ${(e as Error).message}\n${trace.slice(-8).join('\n')}`);
        }
      }
    });

    it('once everyone is reachable and caught up, planning converges to voters = target, no learners, not joint, within 3·|target| + 8 steps', () => {
      for (const seed of seeds) {
        const rng = mulberry32(seed * 7919);
        // A random starting configuration, reached by a random walk as above.
        let self: NodeId = 'a';
        let cs = conf(['a']);
        let target = randomTarget(rng);
        let lastIndex = 10;
        for (let i = 0; i < 40 + rng.nextInt(60); i++) {
          if (rng.nextInt(6) === 0) target = randomTarget(rng);
          lastIndex += rng.nextInt(50);
          const input = randomInput(rng, self, cs, target, lastIndex);
          const step = planReconfiguration(input);
          cs = checkStep(input, step);
          if (step.kind === 'transferLeader') self = step.to;
          if (cs.autoLeave && rng.nextInt(2) === 0) cs = applyAsRaft(cs, leaveJoint, self);
        }
        target = randomTarget(rng);
        const w: World = { self, cs, target, maxMovesPerNode: 1 + rng.nextInt(3) };
        const maxSteps = 3 * target.length + 8;
        try {
          const { last } = drive(w, maxSteps, () => {});
          expectInPlace(w, last);
        } catch (e) {
          throw new Error(
            `seed ${seed} (from ${self} ${JSON.stringify(cs)} to ${target}): ${(e as Error).message}`,
          );
        }
      }
    });
  });

  describe('driving real raft groups (the leader plans, proposes, and raft applies)', () => {
    /** Whether `n`'s log holds a configuration change it has not applied yet. */
    function confChangePending(n: TestNode): boolean {
      const last = n.storage.lastIndex();
      if (last <= n.appliedIndex) return false;
      const entries = n.storage.entries(n.appliedIndex + 1, last + 1, Number.MAX_SAFE_INTEGER);
      return entries.some((e) => e.type === EntryType.ConfChange);
    }

    /**
     * One host round: the leader plans one step and hands it to raft (a proposal raft drops
     * is planned again later), every node snapshots its applied state (the host duty after
     * a change that adds a node), then one tick. Returns the step planned, if any.
     */
    function round(
      net: Network,
      target: NodeId[],
      unreachable: NodeId[] = [],
    ): RebalanceStep | null {
      const leader = net.leader();
      let step: RebalanceStep | null = null;
      if (leader) {
        const status = leader.status;
        step = planReconfiguration({
          self: leader.id,
          confState: leader.confState,
          confChangePending: confChangePending(leader),
          leadTransferee: status.leadTransferee,
          target,
          progress: status.progress,
          lastIndex: status.lastIndex,
          reachable: new Set(net.liveIds().filter((id) => !unreachable.includes(id))),
          movesInProgress: movesInConfig(leader.confState),
          maxMovesPerNode: 4,
        });
        try {
          const cc = toConfChange(step);
          if (cc) leader.raw.proposeConfChange(cc);
          else if (step.kind === 'transferLeader') leader.raw.transferLeader(step.to);
        } catch (e) {
          if (!isRaftError(e, RaftErrorCode.ProposalDropped)) throw e;
        }
      }
      compactAll(net);
      net.tick();
      return step;
    }

    /** Rounds until the leader's configuration is the target and the planner says in place. */
    function rebalance(
      net: Network,
      target: NodeId[],
      unreachable: NodeId[] = [],
    ): RebalanceStep[] {
      const steps: RebalanceStep[] = [];
      for (let i = 0; i < 500; i++) {
        // Hand-offs are transfers, never a step-down: the group always has a leader.
        expect(
          net.leader(),
          `seed ${net.seed}: a leader after ${JSON.stringify(steps)}`,
        ).to.not.equal(undefined);
        const step = round(net, target, unreachable);
        if (step?.kind === 'none' && step.reason === 'in place') {
          const cs = net.leader()!.confState;
          expect(sorted(cs.voters)).to.deep.equal(sorted(target));
          expect(cs.learners).to.deep.equal([]);
          return steps;
        }
        if (step && step.kind !== 'none') steps.push(step);
      }
      throw new Error(`seed ${net.seed}: not in place within 500 rounds: ${JSON.stringify(steps)}`);
    }

    /** A write through the leader reaches every target member. */
    function expectServing(net: Network, target: NodeId[], value: string): void {
      // Blank and removed replicas follow no leader: wait for a leader of the target.
      net.tickUntil(() => target.includes(net.leader()?.id ?? ''));
      const leader = net.leader()!;
      net.propose(leader.id, value);
      net.tickUntil(() => target.every((id) => net.node(id).state.includes(value)));
    }

    for (const seed of [1, 2, 3]) {
      it(`bootstrap 1 → 3, a 4th joins, the leader's node leaves, a down voter is replaced (seed ${seed})`, () => {
        const net = new Network(['a'], { seed });
        net.electLeader();
        for (const id of ['b', 'c', 'd', 'e']) net.addBlank(id);
        net.propose('a', 'first');

        rebalance(net, ['a', 'b', 'c']);
        expectServing(net, ['a', 'b', 'c'], 'grown');

        rebalance(net, ['a', 'b', 'd']);
        expectServing(net, ['a', 'b', 'd'], 'joined');

        const leaving = net.leader()!.id;
        const withoutLeader = ['a', 'b', 'd', 'e'].filter((id) => id !== leaving).slice(0, 3);
        const steps = rebalance(net, withoutLeader);
        expect(
          steps.find((s) => s.kind === 'transferLeader'),
          'leadership handed off',
        ).to.not.equal(undefined);
        expect(net.leader()!.id).to.not.equal(leaving);
        expectServing(net, withoutLeader, 'left');

        // A voter other than the leader goes down; the placement replaces it by the spare.
        const leader = net.leader()!.id;
        const down = withoutLeader.find((id) => id !== leader)!;
        net.crash(down);
        const spare = ['a', 'b', 'c', 'd', 'e'].find(
          (id) => !withoutLeader.includes(id) && !net.isDown(id),
        )!;
        const replaced = [...withoutLeader.filter((id) => id !== down), spare];
        rebalance(net, replaced, [down]);
        expectServing(net, replaced, 'replaced');
      });
    }

    it('N = 1: the only replica moves to another node (learner, joint swap, hand-off, leave)', () => {
      const net = new Network(['a'], { seed: 7 });
      net.electLeader();
      net.addBlank('b');
      net.propose('a', 'before');
      const steps = rebalance(net, ['b']);
      expect(steps.map((s) => s.kind)).to.deep.equal([
        'addLearners',
        'enterJoint',
        'transferLeader',
        'leaveJoint',
      ]);
      expect(net.leader()!.id).to.equal('b');
      expectServing(net, ['b'], 'after');
      expect(net.node('b').state).to.deep.equal(['before', 'after']);
    });
  });
});
