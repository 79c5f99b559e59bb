/**
 * The registry's state transitions, as pure functions over immutable states: no clock, no
 * I/O, no randomness (the caller passes them in), so the simulation runs the same rules as
 * the server. The server serializes them, persists each result before acting on it, and
 * pushes the snapshot's change.
 *
 * Invariants (checked by `registryStateProblem` on every load and asserted after every
 * change): members sorted by unique node id; the epoch grows by exactly one per change and
 * never otherwise; a member's `changedAtEpoch` is the epoch of its last change; every
 * member, and only a member, has a secret hash; every `down` member, and only one, has the
 * time it was marked down.
 *
 * Retirement: a member `down` for at least the retirement period (time passed in by the
 * caller, wall-clock milliseconds, as persisted) becomes `retired`: it no longer counts
 * against `maxMembers` (dead tabs, whose ids are per tab, would fill it), and it is not
 * placed (its replicas are re-placed by rebalancing, like a `left` member's). Its record
 * and secret are kept, as `left` ones are, so its storage may still come back under its id
 * (a whole replica set down for longer than the period must not lose its data to
 * retirement): `left` and `retired` records are bounded together by `maxLeftMembers`, the
 * oldest dropped first.
 *
 * Identity is bound to storage: a node id is bound to the member secret issued at its first
 * join (the node keeps the secret with its data), and only a join presenting that secret
 * may use the id again. So `(nodeId, joinedAtEpoch)` always names one storage: an id
 * registered again after its record was dropped (a pruned departed record) has a new
 * `joinedAtEpoch`, and its old secret is refused.
 */
import { DEFAULT_SETTINGS } from '@meshkv/ring';
import {
  type ClusterSettings,
  DEFAULT_CLUSTER_ID,
  type Member,
  type MemberKind,
  type RegistrySnapshot,
  registryProblem,
  settingsProblem,
} from '@meshkv/transport/signaling-protocol';

export interface MembershipLimits {
  /** Members that are `up` or `down`; joins of new ids beyond it are refused. */
  readonly maxMembers: number;
  /**
   * Departed (`left` or `retired`) records kept (a returning id keeps its
   * `joinedAtEpoch`); the oldest are dropped first, with their secrets.
   */
  readonly maxLeftMembers: number;
}

/** Default retirement period: how long a member stays `down` before it is `retired`. */
export const DEFAULT_RETIREMENT_PERIOD_MS = 60 * 60 * 1000;

/** Fills the settings not given with the defaults, and validates the result. */
export function completeSettings(given: Partial<ClusterSettings>): ClusterSettings {
  const settings: ClusterSettings = {
    clusterId: given.clusterId ?? DEFAULT_CLUSTER_ID,
    partitions: given.partitions ?? DEFAULT_SETTINGS.partitions,
    replicationFactor: given.replicationFactor ?? DEFAULT_SETTINGS.replicationFactor,
    tokensPerNode: given.tokensPerNode ?? DEFAULT_SETTINGS.tokensPerNode,
  };
  const problem = settingsProblem(settings);
  if (problem) throw new RangeError(`invalid cluster settings: ${problem}`);
  return settings;
}

/** The registry as the server keeps it. */
export interface RegistryState {
  /** What members see: the join reply, the pushes, `/status`. */
  readonly snapshot: RegistrySnapshot;
  /**
   * Node id → sha256 (hex) of its member secret, for exactly the members of `snapshot`.
   * Never sent to anyone; the secrets themselves are not kept.
   */
  readonly secretHashes: ReadonlyMap<string, string>;
  /**
   * Node id → when it was marked down (wall-clock ms, as the caller passed it), for
   * exactly the `down` members: their retirement is due a retirement period later.
   */
  readonly downSinceMs: ReadonlyMap<string, number>;
}

export function emptyRegistry(settings: ClusterSettings): RegistryState {
  return {
    snapshot: { settings, epoch: 0, members: [] },
    secretHashes: new Map(),
    downSinceMs: new Map(),
  };
}

const SECRET_HASH = /^[0-9a-f]{64}$/;

/** Problems of a registry state, or undefined (see the invariants above). */
export function registryStateProblem(state: {
  snapshot: unknown;
  secretHashes: ReadonlyMap<string, unknown>;
  downSinceMs: ReadonlyMap<string, unknown>;
}): string | undefined {
  const problem = registryProblem(state.snapshot);
  if (problem) return problem;
  const members = (state.snapshot as RegistrySnapshot).members;
  if (state.secretHashes.size !== members.length) {
    return `${state.secretHashes.size} secret hashes for ${members.length} members`;
  }
  let down = 0;
  for (const member of members) {
    const hash = state.secretHashes.get(member.nodeId);
    if (typeof hash !== 'string' || !SECRET_HASH.test(hash)) {
      return `member ${member.nodeId} has no valid secret hash (64 hex digits)`;
    }
    if (member.state !== 'down') continue;
    down++;
    const sinceMs = state.downSinceMs.get(member.nodeId);
    if (!Number.isSafeInteger(sinceMs) || (sinceMs as number) < 0) {
      return `down member ${member.nodeId} has no valid down time (ms)`;
    }
  }
  if (state.downSinceMs.size !== down) {
    return `${state.downSinceMs.size} down times for ${down} down members`;
  }
  return undefined;
}

export function findMember(registry: RegistrySnapshot, nodeId: string): Member | undefined {
  // Members are sorted: binary search keeps a lookup O(log M) for every signal relayed.
  let low = 0;
  let high = registry.members.length - 1;
  while (low <= high) {
    const middle = (low + high) >>> 1;
    const member = registry.members[middle]!;
    if (member.nodeId === nodeId) return member;
    if (member.nodeId < nodeId) low = middle + 1;
    else high = middle - 1;
  }
  return undefined;
}

export interface Admission {
  readonly nodeId: string;
  readonly kind: MemberKind;
  readonly httpAddress?: string;
  /**
   * sha256 (hex) of a member secret: the one the join presented (`secretPresented`), or,
   * for a join that presented none, a fresh one the caller drew, bound to the id if this
   * join registers it.
   */
  readonly secretHash: string;
  readonly secretPresented: boolean;
}

export type AdmitResult =
  | { readonly ok: true; readonly state: RegistryState }
  | {
      readonly ok: false;
      readonly code: 'wrong_secret' | 'cluster_full';
      readonly reason: string;
    };

/**
 * Registers a new id (bound to the fresh secret), or brings a known one `up` with the
 * given kind and address if the join presented its secret. Returns the same state (no
 * epoch change) when nothing changes: an `up` member reconnecting after a blip or a
 * reload. Refuses (`wrong_secret`) a known id without its secret, and a secret for an
 * unknown id: the storage that holds it belongs to an id the registry forgot.
 */
export function admit(
  state: RegistryState,
  admission: Admission,
  limits: MembershipLimits,
): AdmitResult {
  const { nodeId } = admission;
  const registry = state.snapshot;
  const existing = findMember(registry, nodeId);
  // Hashes of 256-bit random secrets: comparing them in variable time reveals nothing
  // that helps find a secret.
  if (existing === undefined && admission.secretPresented) {
    return {
      ok: false,
      code: 'wrong_secret',
      reason: `node id '${nodeId}' is not registered (retired or dropped): its member secret is void; join under a new id`,
    };
  }
  if (existing !== undefined && !admission.secretPresented) {
    return {
      ok: false,
      code: 'wrong_secret',
      reason: `node id '${nodeId}' is bound to a member secret and this join has none: join with the secret kept with its data, or under a new id`,
    };
  }
  if (existing !== undefined && state.secretHashes.get(nodeId) !== admission.secretHash) {
    return {
      ok: false,
      code: 'wrong_secret',
      reason: `wrong member secret for node id '${nodeId}': the id belongs to other storage; join under a new id`,
    };
  }
  const epoch = registry.epoch + 1;
  const updated: Member = {
    nodeId: admission.nodeId,
    kind: admission.kind,
    state: 'up',
    joinedAtEpoch: existing?.joinedAtEpoch ?? epoch,
    changedAtEpoch: epoch,
    ...(admission.httpAddress === undefined ? {} : { httpAddress: admission.httpAddress }),
  };
  if (existing) {
    const same =
      existing.state === 'up' &&
      existing.kind === updated.kind &&
      existing.httpAddress === updated.httpAddress;
    if (same) return { ok: true, state };
  }
  if (existing === undefined || departed(existing)) {
    const active = registry.members.filter((member) => !departed(member)).length;
    if (active >= limits.maxMembers) {
      return {
        ok: false,
        code: 'cluster_full',
        reason: `the cluster has its maximum of ${limits.maxMembers} members`,
      };
    }
  }
  const secretHashes = new Map(state.secretHashes).set(nodeId, admission.secretHash);
  const downSinceMs = new Map(state.downSinceMs);
  downSinceMs.delete(nodeId);
  return { ok: true, state: next(state, [updated], secretHashes, downSinceMs, limits) };
}

/**
 * Marks an `up` member `down` at `nowMs` (wall clock; its retirement is due a retirement
 * period later). Returns the same state for a member not `up`, or unknown: a departed
 * member stays departed until it joins again, whatever a timer says.
 */
export function markDown(
  state: RegistryState,
  nodeId: string,
  nowMs: number,
  limits: MembershipLimits,
): RegistryState {
  const existing = findMember(state.snapshot, nodeId);
  if (existing?.state !== 'up') return state;
  const updated: Member = { ...existing, state: 'down', changedAtEpoch: state.snapshot.epoch + 1 };
  const downSinceMs = new Map(state.downSinceMs).set(nodeId, nowMs);
  return next(state, [updated], new Map(state.secretHashes), downSinceMs, limits);
}

/** Marks a member `left` (a graceful leave). Returns the same state if it is left or unknown. */
export function markLeft(
  state: RegistryState,
  nodeId: string,
  limits: MembershipLimits,
): RegistryState {
  const existing = findMember(state.snapshot, nodeId);
  if (existing === undefined || existing.state === 'left') return state;
  const updated: Member = { ...existing, state: 'left', changedAtEpoch: state.snapshot.epoch + 1 };
  const downSinceMs = new Map(state.downSinceMs);
  downSinceMs.delete(nodeId);
  return next(state, [updated], new Map(state.secretHashes), downSinceMs, limits);
}

/**
 * Retires every member `down` for at least `retirementPeriodMs` at `nowMs` (see the file
 * comment), all in one change. Returns the same state when none is due.
 */
export function retireDownMembers(
  state: RegistryState,
  nowMs: number,
  retirementPeriodMs: number,
  limits: MembershipLimits,
): RegistryState {
  const epoch = state.snapshot.epoch + 1;
  const retired: Member[] = [];
  const downSinceMs = new Map(state.downSinceMs);
  for (const [nodeId, sinceMs] of state.downSinceMs) {
    if (nowMs - sinceMs < retirementPeriodMs) continue;
    retired.push({
      ...findMember(state.snapshot, nodeId)!,
      state: 'retired',
      changedAtEpoch: epoch,
    });
    downSinceMs.delete(nodeId);
  }
  if (retired.length === 0) return state;
  return next(state, retired, new Map(state.secretHashes), downSinceMs, limits);
}

/** When the next retirement is due (wall-clock ms), or undefined if nobody is `down`. */
export function nextRetirementMs(
  state: RegistryState,
  retirementPeriodMs: number,
): number | undefined {
  let earliestMs: number | undefined;
  for (const sinceMs of state.downSinceMs.values()) {
    if (earliestMs === undefined || sinceMs < earliestMs) earliestMs = sinceMs;
  }
  return earliestMs === undefined ? undefined : earliestMs + retirementPeriodMs;
}

/** `left` or `retired`: not counted against `maxMembers`, not placed. */
function departed(member: Member): boolean {
  return member.state === 'left' || member.state === 'retired';
}

/**
 * The next epoch's state with the `changed` records inserted or replaced, and the given
 * side tables (owned by this call); drops the oldest departed records, and their
 * secrets, beyond `maxLeftMembers`.
 */
function next(
  state: RegistryState,
  changed: readonly Member[],
  secretHashes: Map<string, string>,
  downSinceMs: Map<string, number>,
  limits: MembershipLimits,
): RegistryState {
  const registry = state.snapshot;
  const replaced = new Set(changed.map((member) => member.nodeId));
  let members = registry.members.filter((other) => !replaced.has(other.nodeId));
  members.push(...changed);
  members.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  const gone = members.filter(departed);
  if (gone.length > limits.maxLeftMembers) {
    gone.sort((a, b) => a.changedAtEpoch - b.changedAtEpoch);
    const dropped = new Set(gone.slice(0, gone.length - limits.maxLeftMembers));
    for (const member of dropped) secretHashes.delete(member.nodeId);
    members = members.filter((other) => !dropped.has(other));
  }
  const result: RegistryState = {
    snapshot: { ...registry, epoch: registry.epoch + 1, members },
    secretHashes,
    downSinceMs,
  };
  const problem = registryStateProblem(result);
  if (problem) throw new Error(`registry invariant broken: ${problem}`);
  return result;
}
