/**
 * The registry's state transitions, as pure functions over immutable snapshots. The
 * server serializes them, persists each result before acting on it, and pushes it.
 *
 * Invariants (checked by `registryProblem` on every load and asserted after every change):
 * members sorted by unique node id; the epoch grows by exactly one per change and never
 * otherwise; a member's `changedAtEpoch` is the epoch of its last change.
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
  /** `left` records kept (a returning id keeps its `joinedAtEpoch`); oldest dropped first. */
  readonly maxLeftMembers: number;
}

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

export function emptyRegistry(settings: ClusterSettings): RegistrySnapshot {
  return { settings, epoch: 0, members: [] };
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
}

export type AdmitResult =
  | { readonly ok: true; readonly registry: RegistrySnapshot }
  | { readonly ok: false; readonly reason: string };

/**
 * Registers a new id, or brings a known one `up` with the given kind and address. Returns
 * the same snapshot (no epoch change) when nothing changes: an `up` member reconnecting
 * after a blip or a reload.
 */
export function admit(
  registry: RegistrySnapshot,
  admission: Admission,
  limits: MembershipLimits,
): AdmitResult {
  const existing = findMember(registry, admission.nodeId);
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
    if (same) return { ok: true, registry };
  }
  if (existing === undefined || existing.state === 'left') {
    const active = registry.members.filter((member) => member.state !== 'left').length;
    if (active >= limits.maxMembers) {
      return { ok: false, reason: `the cluster has its maximum of ${limits.maxMembers} members` };
    }
  }
  return { ok: true, registry: replace(registry, updated, limits) };
}

/**
 * Moves a member to `down` or `left`. Returns the same snapshot when it is already in
 * that state or unknown.
 */
export function setState(
  registry: RegistrySnapshot,
  nodeId: string,
  state: 'down' | 'left',
  limits: MembershipLimits,
): RegistrySnapshot {
  const existing = findMember(registry, nodeId);
  if (existing === undefined || existing.state === state) return registry;
  // `left` is final until the member joins again; a timer must not turn it into `down`.
  if (existing.state === 'left') return registry;
  return replace(registry, { ...existing, state, changedAtEpoch: registry.epoch + 1 }, limits);
}

/** The next epoch's snapshot with `member` inserted or replaced; prunes old `left` records. */
function replace(
  registry: RegistrySnapshot,
  member: Member,
  limits: MembershipLimits,
): RegistrySnapshot {
  let members = registry.members.filter((other) => other.nodeId !== member.nodeId);
  members.push(member);
  members.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  const left = members.filter((other) => other.state === 'left');
  if (left.length > limits.maxLeftMembers) {
    left.sort((a, b) => a.changedAtEpoch - b.changedAtEpoch);
    const dropped = new Set(left.slice(0, left.length - limits.maxLeftMembers));
    members = members.filter((other) => !dropped.has(other));
  }
  const next: RegistrySnapshot = { ...registry, epoch: registry.epoch + 1, members };
  const problem = registryProblem(next);
  if (problem) throw new Error(`registry invariant broken: ${problem}`);
  return next;
}
