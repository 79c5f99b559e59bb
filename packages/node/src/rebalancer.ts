/**
 * The rebalancing planner: one partition's Raft configuration → ONE step toward the
 * placement. Pure, deterministic and synchronous (no I/O, no clock, no state of its own):
 * the leader of the group calls `planReconfiguration` every few ticks and whenever the
 * placement or the group's configuration changes, and turns the step into one raft call
 * (`toConfChange` → `RawNode.proposeConfChange`, or `RawNode.transferLeader`). Raft stays
 * the authority: a step raft refuses (a proposal dropped because another change is
 * pending, a lost leadership) is simply planned again later.
 *
 * A move is a replica being added to a group: a learner, or a voter of the incoming half
 * that the outgoing half lacks while joint (`movesInConfig`). The sequence for one group
 * (README "Membership and rebalancing"): add the newcomers as learners → they catch up
 * (by snapshot) → one joint-consensus swap promotes them and removes the voters the
 * placement dropped → leave the joint configuration → an outgoing leader hands off its
 * leadership before it stops being a voter.
 *
 * Rules, in the order they are tried (the first that applies is the step):
 *
 * 1. Wait (`none`) while a configuration change is pending (raft refuses another until it
 *    is applied), while a leadership transfer is in progress (raft drops proposals then),
 *    when `self` is not a voter, and when the current configuration (each half, if joint)
 *    has no majority of live members: nothing it proposes could commit.
 * 2. Joint, and `self` is not a voter of the incoming half: transfer leadership to a
 *    caught-up live incoming voter (target order first), else wait. This is done BEFORE
 *    leaving the joint configuration, while `self` still votes in the outgoing half: a
 *    leader that left first would step down (`stepDownOnRemoval`) and leave the group
 *    without a leader for an election timeout. The transferee wins in the joint
 *    configuration because the outgoing leader votes for it (a transfer's forced election
 *    ignores leases), and the new leader (incoming) leaves the joint configuration.
 * 3. Joint otherwise: `leaveJoint` (an auto-leave joint configuration — raft's, after
 *    several learners were added in one change — is left by raft itself: wait).
 * 4. Not joint and `self` is not in the target: transfer leadership to a caught-up live
 *    voter of the target (etcd's and TiKV's order: the leader moves off before it is
 *    removed, so the outgoing node does as little as possible). Without one the plan goes
 *    on (learners, swap) and rule 2 hands off from inside the joint configuration.
 * 5. Learners not in the target (a newcomer the placement dropped again): remove them.
 * 6. Target members that are missing and live: add them as learners, as many as the
 *    node-wide move budget allows (`maxMovesPerNode − movesInProgress`). Unreachable
 *    target members are not added (they would hold a move and never catch up).
 * 7. While a live learner of the target is still catching up: wait (one swap for all).
 * 8. The swap (`enterJoint`, one ExplicitJoint ConfChangeV2): promote every caught-up live
 *    learner of the target, remove voters not in the target — unreachable ones first, then
 *    others, `self` last — but never below min(voters now, target size) voters (a voter
 *    leaves only when its replacement is promoted, unless the target itself shrank), and
 *    only if the new voters have a live majority (fewer removals are tried first). A
 *    learner is caught up when it is live, in state `replicate` and its match is within
 *    `catchUpLagEntries` of the leader's last index — or it acknowledged the whole log
 *    and is not receiving a snapshot (an idle group sends no append to move it out of
 *    `probe` after a snapshot).
 * 9. In place, and `self` is not the target's first replica: transfer leadership to it
 *    once it is live and caught up (leaders spread over the nodes as the ring spreads
 *    the partitions; without it the bootstrap member would lead every partition for ever)
 *    — unless `self` took the leadership by request in this term (`leadershipTaken`).
 * 10. Otherwise: `none` (in place, or why not: budget, unreachable members, majority).
 *
 * "Live" is `self`, or a member in `reachable` (registry up and transport link up). Raft's
 * `recentActive` is not used: CheckQuorum clears it for every member once per election
 * timeout, so a planner that runs right after (every few ticks, possibly in step with
 * the election timeout) would see no member active and never move.
 *
 * Why ExplicitJoint for the swap rather than Auto: (a) the planner, not raft, decides when
 * to leave, so an outgoing leader can transfer leadership while it is still a voter
 * (rule 2); with auto-leave raft would leave at once and the leader would step down; (b)
 * joint consensus is safe for any change (thesis §4.3), so even a one-voter swap never
 * relies on the single-server rule and its fix (a leader must commit an entry of its term
 * before changing membership, thesis §4.1 and Ongaro's 2015 raft-dev note). Learner
 * changes use Auto: one node is a simple change; several make raft enter an auto-leave
 * joint configuration whose halves have the same voters (so it commits exactly as the
 * current one does) and leave it on its own.
 *
 * Safety argument: every configuration proposed keeps a live majority in each half: the
 * outgoing half is the current configuration (checked by rule 1), the incoming half is
 * checked by rule 8, learner changes do not change voters. A leader never proposes a
 * configuration in which it is no voter: it only removes itself into the outgoing half of
 * a joint configuration, hands off from there (rule 2), and the new leader proposes the
 * leave. The tests apply every step with raft's own `applyConfChange`, on random walks
 * and on real raft groups.
 */
import {
  type ConfChangeSingle,
  ConfChangeTransition,
  ConfChangeType,
  type ConfChangeV2,
  type ConfState,
  type NodeId,
  type ProgressStatus,
} from '@meshkv/raft';
import { MAX_REPLICATION_FACTOR } from '@meshkv/ring';

/** What the planner reads of a member's replication progress (a subset of raft's ProgressStatus). */
export type MemberProgress = Pick<ProgressStatus, 'match' | 'state'>;

export interface RebalanceInput {
  /** This node's id: the leader of the group, the only node that plans for it. */
  readonly self: NodeId;
  /** The group's configuration as raft applied it (`Status.config`). */
  readonly confState: ConfState;
  /**
   * A configuration change is proposed or committed but not yet applied: raft refuses
   * another (ProposalDropped `conf-change-pending`), so the planner waits.
   */
  readonly confChangePending: boolean;
  /** Raft's `Status.leadTransferee`: a transfer in progress (proposals are dropped meanwhile). */
  readonly leadTransferee: NodeId | null;
  /**
   * The partition's replicas in the current placement (`placement.replicasOf(p)`): 1 to
   * MAX_REPLICATION_FACTOR distinct ids in ring walk order (the order transfers and
   * additions prefer).
   */
  readonly target: readonly NodeId[];
  /** The leader's view of every member (`Status.progress`; raft's ProgressStatus fits). */
  readonly progress: ReadonlyMap<NodeId, MemberProgress>;
  /** The leader's last log index (`Status.lastIndex`). */
  readonly lastIndex: number;
  /** Members known up: registry state `up` and a transport link up (`self` always counts). */
  readonly reachable: ReadonlySet<NodeId>;
  /** A learner or transferee is caught up within this many entries (default 256). */
  readonly catchUpLagEntries?: number;
  /** Moves in progress on this node, over every group it leads (sum of `movesInConfig`). */
  readonly movesInProgress: number;
  /** The node-wide bound on moves: learners are only added below it. */
  readonly maxMovesPerNode: number;
  /**
   * `self` leads by request in this term (`MeshNode.takeLeadership`): rule 9 does not hand
   * the leadership to the target's first replica (a move off `self` still does).
   */
  readonly leadershipTaken?: boolean;
}

/** One step; each kind is one raft call (`toConfChange`, or `transferLeader(to)`). */
export type RebalanceStep =
  /** Nothing to do now: in place, or waiting; `reason` is a short string for status. */
  | { readonly kind: 'none'; readonly reason: string }
  /** One ConfChangeV2 (Auto) of AddLearnerNode changes. */
  | { readonly kind: 'addLearners'; readonly nodes: readonly NodeId[] }
  /** One ConfChangeV2 (ExplicitJoint): AddNode for `promote`, RemoveNode for `remove`. */
  | {
      readonly kind: 'enterJoint';
      readonly promote: readonly NodeId[];
      readonly remove: readonly NodeId[];
    }
  /** The empty ConfChangeV2: leave the (explicit) joint configuration. */
  | { readonly kind: 'leaveJoint' }
  /** `RawNode.transferLeader(to)`. */
  | { readonly kind: 'transferLeader'; readonly to: NodeId }
  /** One ConfChangeV2 (Auto) of RemoveNode changes for learners. */
  | { readonly kind: 'removeLearners'; readonly nodes: readonly NodeId[] };

export const rebalanceDefaults = {
  /**
   * How far behind the leader's last index a caught-up learner (or transferee) may be, in
   * entries. State `replicate` already says the snapshot is installed and the log streams;
   * under load a streaming member trails by what is in flight (up to raft's
   * maxInflightMsgs, 256 appends), so a smaller bound could hold a promotion back for as
   * long as the writes go on.
   */
  catchUpLagEntries: 256,
} as const;

/**
 * Moves a group's configuration holds: its learners, and while joint the incoming voters
 * that the outgoing half lacks. A node's `movesInProgress` is the sum over the groups it
 * leads.
 */
export function movesInConfig(cs: ConfState): number {
  let moves = cs.learners.length;
  if (cs.votersOutgoing.length > 0) {
    for (const id of cs.voters) if (!cs.votersOutgoing.includes(id)) moves++;
  }
  return moves;
}

/** The ConfChangeV2 to propose for `step`, or null for `none` and `transferLeader`. */
export function toConfChange(step: RebalanceStep): ConfChangeV2 | null {
  switch (step.kind) {
    case 'none':
    case 'transferLeader':
      return null;
    case 'addLearners':
      return autoChange(step.nodes, ConfChangeType.AddLearnerNode);
    case 'removeLearners':
      return autoChange(step.nodes, ConfChangeType.RemoveNode);
    case 'enterJoint': {
      const changes: ConfChangeSingle[] = [];
      for (const nodeId of step.promote) changes.push({ type: ConfChangeType.AddNode, nodeId });
      for (const nodeId of step.remove) changes.push({ type: ConfChangeType.RemoveNode, nodeId });
      return { transition: ConfChangeTransition.Explicit, changes };
    }
    case 'leaveJoint':
      return { transition: ConfChangeTransition.Auto, changes: [] };
  }
}

function autoChange(nodes: readonly NodeId[], type: ConfChangeType): ConfChangeV2 {
  return {
    transition: ConfChangeTransition.Auto,
    changes: nodes.map((nodeId) => ({ type, nodeId })),
  };
}

/** One step of `input.self`'s group toward `input.target` (see the module comment for the rules). */
export function planReconfiguration(input: RebalanceInput): RebalanceStep {
  checkInput(input);
  const { self, confState: cs, target } = input;
  if (input.confChangePending) return none('configuration change pending');
  if (input.leadTransferee !== null) {
    return none(`leadership transfer to ${input.leadTransferee} in progress`);
  }
  const joint = cs.votersOutgoing.length > 0;
  if (!cs.voters.includes(self) && !cs.votersOutgoing.includes(self)) {
    return none(`${self} is not a voter`);
  }
  const live = (id: NodeId): boolean => isLive(input, id);
  for (const half of joint ? [cs.voters, cs.votersOutgoing] : [cs.voters]) {
    if (!hasLiveMajority(half, live)) {
      return none(`no live majority of voters ${half.join(', ')}`);
    }
  }

  if (joint) {
    if (!cs.voters.includes(self)) {
      const to = transferee(input, cs.voters, true);
      if (to === null)
        return none('waiting for an incoming voter to catch up to hand off leadership');
      return { kind: 'transferLeader', to };
    }
    if (cs.autoLeave) return none('raft leaves the joint configuration by itself');
    return { kind: 'leaveJoint' };
  }

  if (!target.includes(self)) {
    const to = transferee(input, cs.voters, false);
    if (to !== null) return { kind: 'transferLeader', to };
  }

  const strayLearners = cs.learners.filter((id) => !target.includes(id)).sort();
  if (strayLearners.length > 0) return { kind: 'removeLearners', nodes: strayLearners };

  const missing = target.filter((id) => !cs.voters.includes(id) && !cs.learners.includes(id));
  const liveMissing = missing.filter(live);
  const budget = input.maxMovesPerNode - input.movesInProgress;
  if (liveMissing.length > 0 && budget > 0) {
    return { kind: 'addLearners', nodes: liveMissing.slice(0, budget) };
  }

  const promote: NodeId[] = [];
  const catchingUp: NodeId[] = [];
  for (const id of target) {
    if (!cs.learners.includes(id) || !live(id)) continue;
    if (isCaughtUp(input, id)) promote.push(id);
    else catchingUp.push(id);
  }
  if (catchingUp.length > 0) return none(`waiting for ${catchingUp.join(', ')} to catch up`);

  const swap = planSwap(input, promote, live);
  if (swap !== null) return swap;

  const unreachable = target.filter((id) => !cs.voters.includes(id) && !live(id));
  if (unreachable.length > 0) return none(`target members ${unreachable.join(', ')} unreachable`);
  if (liveMissing.length > 0) {
    return none(`move budget exhausted (${input.movesInProgress} of ${input.maxMovesPerNode})`);
  }
  const extra = cs.voters.filter((id) => !target.includes(id));
  if (extra.length > 0 || promote.length > 0) {
    return none(`removing ${extra.join(', ')} would leave no live majority`);
  }
  // In place: leadership goes to the target's first replica, so leaders spread over the
  // nodes as the ring spreads partitions (one transfer per placement change; a leader
  // elected elsewhere after a failure hands back once the preferred one is caught up).
  const preferred = target[0]!;
  if (preferred !== self && input.leadershipTaken === true) {
    return none(`in place; leads by request instead of ${preferred}`);
  }
  if (preferred !== self && cs.voters.includes(preferred) && isCaughtUp(input, preferred)) {
    return { kind: 'transferLeader', to: preferred };
  }
  return none('in place');
}

/**
 * Rule 8: the largest removal (a prefix of: unreachable, then live others, then self) that
 * keeps at least min(|voters|, |target|) voters and a live majority of the new voters;
 * null if neither a promotion nor a removal remains.
 */
function planSwap(
  input: RebalanceInput,
  promote: readonly NodeId[],
  live: (id: NodeId) => boolean,
): RebalanceStep | null {
  const { self, confState: cs, target } = input;
  const extra = cs.voters.filter((id) => !target.includes(id)).sort();
  const removable = [
    ...extra.filter((id) => !live(id)),
    ...extra.filter((id) => live(id) && id !== self),
    ...extra.filter((id) => id === self),
  ];
  const votersAfterPromotion = cs.voters.length + promote.length;
  const minVoters = Math.min(cs.voters.length, target.length);
  const maxRemovals = Math.min(removable.length, votersAfterPromotion - minVoters);
  for (let removals = maxRemovals; removals >= 0; removals--) {
    if (promote.length === 0 && removals === 0) return null;
    const remove = removable.slice(0, removals);
    const next = [...cs.voters.filter((id) => !remove.includes(id)), ...promote];
    if (hasLiveMajority(next, live)) return { kind: 'enterJoint', promote: [...promote], remove };
  }
  return null;
}

/**
 * A caught-up live voter among `candidates` other than self to hand leadership to: target
 * order first; with `anyVoter`, then the other candidates in id order.
 */
function transferee(
  input: RebalanceInput,
  candidates: readonly NodeId[],
  anyVoter: boolean,
): NodeId | null {
  const ok = (id: NodeId) => id !== input.self && candidates.includes(id) && isCaughtUp(input, id);
  for (const id of input.target) if (ok(id)) return id;
  if (!anyVoter) return null;
  for (const id of [...candidates].sort()) if (ok(id)) return id;
  return null;
}

function isLive(input: RebalanceInput, id: NodeId): boolean {
  return id === input.self || input.reachable.has(id);
}

function isCaughtUp(input: RebalanceInput, id: NodeId): boolean {
  if (!isLive(input, id)) return false;
  const pr = input.progress.get(id);
  const lag = input.catchUpLagEntries ?? rebalanceDefaults.catchUpLagEntries;
  if (pr === undefined) return false;
  // A member that acknowledged the whole log is caught up in any state but snapshot: after
  // installing one it stays in `probe` until the next append, and an idle (quiesced) group
  // sends none.
  if (pr.match >= input.lastIndex && pr.state !== 'snapshot') return true;
  return pr.state === 'replicate' && pr.match >= input.lastIndex - lag;
}

function hasLiveMajority(voters: readonly NodeId[], live: (id: NodeId) => boolean): boolean {
  let up = 0;
  for (const id of voters) if (live(id)) up++;
  return up > voters.length / 2;
}

function none(reason: string): RebalanceStep {
  return { kind: 'none', reason };
}

function checkInput(input: RebalanceInput): void {
  const { target } = input;
  if (target.length < 1 || target.length > MAX_REPLICATION_FACTOR) {
    throw new RangeError(`target has ${target.length} replicas (1 to ${MAX_REPLICATION_FACTOR})`);
  }
  if (new Set(target).size !== target.length || target.some((id) => id.length === 0)) {
    throw new RangeError(`target replicas must be distinct non-empty ids: ${target.join(', ')}`);
  }
  if (!Number.isSafeInteger(input.lastIndex) || input.lastIndex < 0) {
    throw new RangeError(`lastIndex ${input.lastIndex} is not an index`);
  }
  if (!Number.isSafeInteger(input.maxMovesPerNode) || input.maxMovesPerNode < 1) {
    throw new RangeError(`maxMovesPerNode ${input.maxMovesPerNode} must be a positive integer`);
  }
  if (!Number.isSafeInteger(input.movesInProgress) || input.movesInProgress < 0) {
    throw new RangeError(`movesInProgress ${input.movesInProgress} must be a non-negative integer`);
  }
  const lag = input.catchUpLagEntries ?? rebalanceDefaults.catchUpLagEntries;
  if (!Number.isSafeInteger(lag) || lag < 0) {
    throw new RangeError(`catchUpLagEntries ${lag} must be a non-negative integer`);
  }
}
