/**
 * The registry's state transitions, as pure functions over immutable states: no clock, no
 * I/O, no randomness (the caller passes them in), so the simulation runs the same rules as
 * the server. The server serializes them, persists each result before acting on it, and
 * pushes the snapshot's change.
 *
 * Invariants (checked by `registryStateProblem` on every load and asserted after every
 * change): members sorted by unique node id; the epoch grows by exactly one per change and
 * never otherwise; a member's `changedAtEpoch` is the epoch of its last change; every
 * member, and only a member, has a secret hash.
 *
 * Identity is bound to storage: a node id is bound to the member secret issued at its first
 * join (the node keeps the secret with its data), and only a join presenting that secret
 * may use the id again. So `(nodeId, joinedAtEpoch)` always names one storage: an id
 * registered again after its record was dropped (a pruned `left` record) has a new
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

/** The registry as the server keeps it. */
export interface RegistryState {
  /** What members see: the join reply, the pushes, `/status`. */
  readonly snapshot: RegistrySnapshot;
  /**
   * Node id → sha256 (hex) of its member secret, for exactly the members of `snapshot`.
   * Never sent to anyone; the secrets themselves are not kept.
   */
  readonly secretHashes: ReadonlyMap<string, string>;
}

export function emptyRegistry(settings: ClusterSettings): RegistryState {
  return { snapshot: { settings, epoch: 0, members: [] }, secretHashes: new Map() };
}

const SECRET_HASH = /^[0-9a-f]{64}$/;

/** Problems of a registry state, or undefined (see the invariants above). */
export function registryStateProblem(state: {
  snapshot: unknown;
  secretHashes: ReadonlyMap<string, unknown>;
}): string | undefined {
  const problem = registryProblem(state.snapshot);
  if (problem) return problem;
  const members = (state.snapshot as RegistrySnapshot).members;
  if (state.secretHashes.size !== members.length) {
    return `${state.secretHashes.size} secret hashes for ${members.length} members`;
  }
  for (const member of members) {
    const hash = state.secretHashes.get(member.nodeId);
    if (typeof hash !== 'string' || !SECRET_HASH.test(hash)) {
      return `member ${member.nodeId} has no valid secret hash (64 hex digits)`;
    }
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
  if (existing === undefined || existing.state === 'left') {
    const active = registry.members.filter((member) => member.state !== 'left').length;
    if (active >= limits.maxMembers) {
      return {
        ok: false,
        code: 'cluster_full',
        reason: `the cluster has its maximum of ${limits.maxMembers} members`,
      };
    }
  }
  return { ok: true, state: replace(state, updated, admission.secretHash, limits) };
}

/**
 * Moves a member to `down` or `left`. Returns the same state when it is already in that
 * state or unknown.
 */
export function setState(
  state: RegistryState,
  nodeId: string,
  memberState: 'down' | 'left',
  limits: MembershipLimits,
): RegistryState {
  const registry = state.snapshot;
  const existing = findMember(registry, nodeId);
  if (existing === undefined || existing.state === memberState) return state;
  // `left` is final until the member joins again; a timer must not turn it into `down`.
  if (existing.state === 'left') return state;
  const updated = { ...existing, state: memberState, changedAtEpoch: registry.epoch + 1 };
  return replace(state, updated, state.secretHashes.get(nodeId)!, limits);
}

/**
 * The next epoch's state with `member` inserted or replaced (bound to `secretHash`);
 * prunes the oldest `left` records, and their secrets, beyond `maxLeftMembers`.
 */
function replace(
  state: RegistryState,
  member: Member,
  secretHash: string,
  limits: MembershipLimits,
): RegistryState {
  const registry = state.snapshot;
  let members = registry.members.filter((other) => other.nodeId !== member.nodeId);
  members.push(member);
  members.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  const secretHashes = new Map(state.secretHashes);
  secretHashes.set(member.nodeId, secretHash);
  const left = members.filter((other) => other.state === 'left');
  if (left.length > limits.maxLeftMembers) {
    left.sort((a, b) => a.changedAtEpoch - b.changedAtEpoch);
    const dropped = new Set(left.slice(0, left.length - limits.maxLeftMembers));
    for (const gone of dropped) secretHashes.delete(gone.nodeId);
    members = members.filter((other) => !dropped.has(other));
  }
  const next: RegistryState = {
    snapshot: { ...registry, epoch: registry.epoch + 1, members },
    secretHashes,
  };
  const problem = registryStateProblem(next);
  if (problem) throw new Error(`registry invariant broken: ${problem}`);
  return next;
}
