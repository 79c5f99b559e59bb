/**
 * The signaling wire protocol: the Socket.IO events between a member (browser tab or Node
 * peer) and the signaling server, which is also the cluster's configuration registry.
 * Shared by the server (`signaling/`) and the client (`signaling-client.ts`); isomorphic.
 *
 * Transport: Socket.IO 4 over WebSocket only (no long-polling, so no CORS and one code
 * path). Every payload is a plain JSON object and carries `clusterId`; the receiver checks
 * it. Every received payload is validated with the parsers below; a malformed one is
 * answered with an error and counted, never thrown.
 *
 * Handshake: the Socket.IO connection's `auth` is a HandshakeAuth (version, cluster,
 * token). The server checks it before the connection counts as one (so connections
 * without the token take no place of a member's); a refusal arrives as the client's
 * `connect_error` whose `data` is an ErrorBody (`incompatible_version`, `invalid`,
 * `unauthorized`, `wrong_cluster`), and the server closes the connection.
 *
 * Member → server (each takes an acknowledgement callback, answered with a `Reply`):
 * - `join`   JoinRequest   → Reply<JoinAccepted>: binds the connection to a node id
 *                            (checking the member secret of a known id), returns the
 *                            registry. Must come first; anything else before it is
 *                            refused with `not_joined`.
 * - `signal` SignalRequest → Reply<SignalRelayed>: relays `payload` to member `to`. `ok`
 *                            means handed to the target's socket, not that it was handled.
 * - `leave`  LeaveRequest  → Reply<LeaveAccepted>: marks the member `left` (graceful leave).
 *                            The connection stays bound until it closes: signals to and
 *                            from the member are relayed while it hands its data off.
 *
 * Server → member:
 * - `registry`       RegistryDelta: each change, as the records it added, updated or
 *                    dropped (epoch e → e + 1; the join reply carries the whole registry).
 *                    Pushes arrive in order on one connection, so each applies to the
 *                    previous one's result; a member that missed one re-joins.
 * - `presence`       PresenceUpdate: a member's connection to the server came or went.
 *                    Not a registry change: a reload within the grace period shows as
 *                    offline → online with no epoch change. WebRTC uses it to re-signal.
 * - `signal`         SignalDelivery: a signal from another member of the same cluster.
 * - `probe`          ProbeRequest, with an acknowledgement the member answers with `{}`
 *                    at once: sent when another connection asks for this member's node
 *                    id, to tell a live duplicate (refused) from a dead connection the
 *                    server has not noticed yet (replaced).
 * - `protocol_error` ProtocolErrorNotice: an error for a message that had no
 *                    acknowledgement callback (or for the connection as a whole, e.g.
 *                    `server_full`, just before the server disconnects).
 *
 * Versioning: the handshake carries `protocolVersion`; the server refuses any other
 * version with `incompatible_version`. Any change to these shapes bumps PROTOCOL_VERSION.
 * Version 2: the token moved from `join` to the handshake; member secrets.
 */

import { MAX_NODE_ID_BYTES, RingError, type RingSettings, validateSettings } from '@meshkv/ring';

/** Version of this protocol, sent in the handshake. */
export const PROTOCOL_VERSION = 2;

/** Socket.IO event names, in one place. */
export const SignalingEvents = {
  join: 'join',
  signal: 'signal',
  leave: 'leave',
  registry: 'registry',
  presence: 'presence',
  probe: 'probe',
  protocolError: 'protocol_error',
} as const;

// ---------------------------------------------------------------------------------------
// Cluster settings: fixed when the registry is created; every node computes placement
// from them. The ring settings (Q, N, V), their defaults and bounds belong to
// @meshkv/ring (DEFAULT_SETTINGS, validateSettings); only the cluster id is added here.

export const DEFAULT_CLUSTER_ID = 'meshkv';

export interface ClusterSettings extends RingSettings {
  readonly clusterId: string;
}

// ---------------------------------------------------------------------------------------
// Registry

export type MemberKind = 'browser' | 'node';
/**
 * `up`: a member (connected, or disconnected for less than the grace period);
 * `down`: disconnected for longer than the grace period (its data is to be re-replicated);
 * `left`: left gracefully;
 * `retired`: `down` for longer than the server's retirement period (default 1 h): no
 * longer counted against the member limit, not placed (its replicas are re-placed, as a
 * `left` member's are).
 * A `down`, `left` or `retired` member that joins again (with its member secret) becomes
 * `up`. `left` and `retired` records are kept up to a bound, the oldest dropped first (a
 * delta's `removed`): a dropped id is gone for good, and a member registered later under
 * the same id is another storage (another `joinedAtEpoch`).
 */
export type MemberState = 'up' | 'down' | 'left' | 'retired';

export interface Member {
  readonly nodeId: string;
  readonly kind: MemberKind;
  readonly state: MemberState;
  /** Epoch of the change that first registered this node id. */
  readonly joinedAtEpoch: number;
  /** Epoch of the change that last changed this record (state, kind or address). */
  readonly changedAtEpoch: number;
  /** `http://host:port` of a Node peer's HTTP API, if it has one. */
  readonly httpAddress?: string;
}

/**
 * The registry: settings plus members, versioned by `epoch`, which grows by exactly one on
 * every change (join of a new id, up→down, down/left/retired→up, →left, down→retired (all
 * the members due at once), kind/address change).
 * Members are sorted by node id. Two snapshots with the same epoch and cluster are equal.
 */
export interface RegistrySnapshot {
  readonly settings: ClusterSettings;
  readonly epoch: number;
  readonly members: readonly Member[];
}

// ---------------------------------------------------------------------------------------
// Messages

/** The Socket.IO handshake's `auth`: checked before the connection counts. */
export interface HandshakeAuth {
  readonly protocolVersion: number;
  readonly clusterId: string;
  readonly token: string;
}

export interface JoinRequest {
  readonly clusterId: string;
  /**
   * Requested node id: registered if unknown; reclaimed if known, with its member secret,
   * and not connected (or bound to a connection that fails the `probe`); refused with
   * `duplicate_id` if bound to a live connection. Omitted: the server assigns a fresh id.
   */
  readonly nodeId?: string;
  readonly kind: MemberKind;
  readonly httpAddress?: string;
  /**
   * The `sessionKey` of an earlier join of this same client. With it, a join for a node id
   * still bound to another socket (the server has not noticed that socket die yet) takes
   * the id over instead of being refused as `duplicate_id`.
   */
  readonly sessionKey?: string;
  /**
   * The secret issued at `nodeId`'s first join (JoinAccepted.memberSecret). A known id is
   * bound to its secret: a join without it, or with another, is refused with
   * `wrong_secret`, and so is a secret for an id the registry does not know (retired or
   * pruned). Only with `nodeId`.
   */
  readonly memberSecret?: string;
}

export interface JoinAccepted {
  readonly nodeId: string;
  /** Opaque; valid while the server process runs. Send it back on re-joins. */
  readonly sessionKey: string;
  /**
   * The member secret `nodeId` is bound to: issued now if this join registered the id,
   * else the one the join presented. Only the server's hash of it is stored. Keep it with
   * the node's data: it is what lets this storage, and only it, use this id again.
   */
  readonly memberSecret: string;
  readonly registry: RegistrySnapshot;
  /** Node ids connected to the server now (this one included), sorted. */
  readonly online: readonly string[];
}

/**
 * Opaque WebRTC signalling data (offer, answer, candidates, ...): any plain JSON object
 * (finite numbers, nesting depth ≤ 8), at most the server's `maxMessageBytes` as JSON.
 */
export type SignalPayload = { readonly [key: string]: JsonValue };
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue };

export interface SignalRequest {
  readonly clusterId: string;
  readonly to: string;
  readonly payload: SignalPayload;
}
/** A relayed signal's reply has no fields besides `ok`. */
export type SignalRelayed = Record<never, never>;

export interface SignalDelivery {
  readonly clusterId: string;
  /** Set by the server from the sender's authenticated binding, never by the sender. */
  readonly from: string;
  readonly payload: SignalPayload;
}

export interface LeaveRequest {
  readonly clusterId: string;
}
export interface LeaveAccepted {
  readonly epoch: number;
}

/**
 * One registry change. Deltas keep a change's cost independent of the cluster's size:
 * the whole registry of 1000 members is ~150 KB, sent to each of them on every change.
 */
export interface RegistryDelta {
  readonly clusterId: string;
  /** The epoch this applies to; the result has epoch `fromEpoch + 1`. */
  readonly fromEpoch: number;
  /** Records added or replaced. */
  readonly changed: readonly Member[];
  /** Node ids whose records were dropped (the oldest `left` and `retired` ones). */
  readonly removed: readonly string[];
}

export interface ProbeRequest {
  readonly clusterId: string;
}

export interface PresenceUpdate {
  readonly clusterId: string;
  readonly nodeId: string;
  /** True: it joined (or re-joined); false: its connection closed (a left member's too). */
  readonly online: boolean;
}

/**
 * Stable error codes. Server-sent:
 * - `unauthorized`: missing or wrong cluster token.
 * - `wrong_cluster`: `clusterId` is not the cluster this server hosts.
 * - `incompatible_version`: `protocolVersion` differs from the server's.
 * - `duplicate_id`: the requested node id is bound to another live connection (it
 *   answered a probe): a duplicated tab, or two processes with one id.
 * - `wrong_secret`: the requested node id is bound to a member secret the join did not
 *   present (none, or another), or the join presented a secret for an id the registry
 *   does not know (retired or pruned). The id belongs to other storage: join under a new
 *   one.
 * - `cluster_full`: the member limit is reached (only new ids are refused).
 * - `server_full`: too many connections; the server disconnects.
 * - `invalid`: a malformed message (shape, type, id syntax, unknown event), a join on an
 *   already joined connection that differs from its first join (the same join again gets
 *   the same answer), a signal to oneself.
 * - `too_large`: a message above `maxMessageBytes`.
 * - `rate_limited`: over the per-connection event rate or the per-member signal rate.
 * - `not_joined`: `signal`/`leave` before a successful `join`; no join within the
 *   server's join timeout (then it disconnects).
 * - `unknown_target`: `signal` to a node id that is not a member.
 * - `target_unavailable`: `signal` to a member that is not connected now.
 * - `unavailable`: the server could not persist the change, or a join on this connection
 *   is still in progress; retry later.
 * Client-side only:
 * - `closed`: the client was closed or left.
 * - `timeout`: no answer in time.
 * - `disconnected`: not connected to the server now (the client is reconnecting).
 */
export type SignalingErrorCode =
  | 'unauthorized'
  | 'wrong_cluster'
  | 'incompatible_version'
  | 'duplicate_id'
  | 'wrong_secret'
  | 'cluster_full'
  | 'server_full'
  | 'invalid'
  | 'too_large'
  | 'rate_limited'
  | 'not_joined'
  | 'unknown_target'
  | 'target_unavailable'
  | 'unavailable'
  | 'closed'
  | 'timeout'
  | 'disconnected';

export interface ErrorBody {
  readonly code: SignalingErrorCode;
  readonly message: string;
}

/** An acknowledgement: `{ok: true, ...value}` or `{ok: false, error}`. */
export type Reply<T> =
  | ({ readonly ok: true } & T)
  | { readonly ok: false; readonly error: ErrorBody };

export interface ProtocolErrorNotice {
  readonly error: ErrorBody;
  /** The event that caused it, if it was one of ours (unknown names are not echoed). */
  readonly event?: string;
}

// ---------------------------------------------------------------------------------------
// Validation. Parsers return a tagged result and never throw.

export type Parsed<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly reason: string };

const ID_PATTERN = /^[A-Za-z0-9._:-]+$/;
/** Ids are ASCII, so characters = UTF-8 bytes; the ring's bound applies to all ids. */
export const MAX_ID_BYTES = MAX_NODE_ID_BYTES;
export const MAX_TOKEN_BYTES = 1024;
export const MAX_HTTP_ADDRESS_BYTES = 256;
/** Nesting bound for signal payloads (ICE candidates are two levels deep). */
const MAX_JSON_DEPTH = 8;

/**
 * A node id is at most this long: a node's Raft replica ids are `${nodeId}@${incarnation}`
 * (packages/node, replica-id.ts) with up to 12 more characters, within raft's 64 bytes.
 */
export const MAX_NODE_ID_CHARS = 52;

/** A node id: an id (below) of at most MAX_NODE_ID_CHARS characters. */
export function nodeIdProblem(value: unknown, what: string): string | undefined {
  const problem = idProblem(value, what);
  if (problem !== undefined) return problem;
  if ((value as string).length > MAX_NODE_ID_CHARS) {
    return `${what} is longer than ${MAX_NODE_ID_CHARS} characters (its replica ids must fit 64 bytes)`;
  }
  return undefined;
}

/**
 * Node and cluster ids: 1..64 characters of `A-Z a-z 0-9 . _ : -`. Excludes `#` (ring
 * token names are `${nodeId}#${i}`), `/` and whitespace (file names, logs, URLs).
 * Returns the reason it is not valid, or undefined.
 */
export function idProblem(value: unknown, what: string): string | undefined {
  if (typeof value !== 'string') return `${what} must be a string`;
  if (value.length === 0) return `${what} must not be empty`;
  if (value.length > MAX_ID_BYTES) return `${what} is longer than ${MAX_ID_BYTES} bytes`;
  if (!ID_PATTERN.test(value)) return `${what} may contain only A-Z a-z 0-9 . _ : -`;
  return undefined;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** A JSON tree of plain objects, arrays and finite numbers (rejects Buffers, Dates, ...). */
function isJsonValue(value: unknown, depth: number): value is JsonValue {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (depth >= MAX_JSON_DEPTH) return false;
  if (Array.isArray(value)) return value.every((item) => isJsonValue(item, depth + 1));
  if (!isPlainObject(value)) return false;
  return Object.values(value).every((item) => isJsonValue(item, depth + 1));
}

/** Checks that `value` is a plain object with no keys besides `allowed`. */
function objectProblem(
  value: unknown,
  what: string,
  allowed: readonly string[],
): string | undefined {
  if (!isPlainObject(value)) return `${what} must be a plain object`;
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) return `${what} has an unknown field '${key}'`;
  }
  return undefined;
}

function stringProblem(value: unknown, what: string, maxBytes: number): string | undefined {
  if (typeof value !== 'string') return `${what} must be a string`;
  // A UTF-16 code unit takes 1 to 3 UTF-8 bytes: encode only when the length is ambiguous.
  const tooLong =
    value.length > maxBytes ||
    (value.length * 3 > maxBytes && new TextEncoder().encode(value).length > maxBytes);
  if (tooLong) {
    return `${what} is longer than ${maxBytes} bytes`;
  }
  return undefined;
}

function httpAddressProblem(value: unknown): string | undefined {
  const problem = stringProblem(value, 'httpAddress', MAX_HTTP_ADDRESS_BYTES);
  if (problem) return problem;
  if (!/^https?:\/\/[^\s/]+$/.test(value as string)) {
    return 'httpAddress must look like http://host:port (no path)';
  }
  return undefined;
}

function kindProblem(value: unknown): string | undefined {
  return value === 'browser' || value === 'node' ? undefined : "kind must be 'browser' or 'node'";
}

function fail<T>(reason: string): Parsed<T> {
  return { ok: false, reason };
}

/**
 * Parses a handshake's `auth`. The version is checked first, by the caller, on
 * `protocolVersion` alone: other versions may have other shapes.
 */
export function parseHandshakeAuth(value: unknown): Parsed<HandshakeAuth> {
  const problem = objectProblem(value, 'handshake auth', ['protocolVersion', 'clusterId', 'token']);
  if (problem) return fail(problem);
  const v = value as Record<string, unknown>;
  const reason =
    (Number.isSafeInteger(v.protocolVersion) ? undefined : 'protocolVersion must be an integer') ??
    idProblem(v.clusterId, 'clusterId') ??
    stringProblem(v.token, 'token', MAX_TOKEN_BYTES);
  if (reason) return fail(reason);
  return { ok: true, value: v as unknown as HandshakeAuth };
}

export function parseJoinRequest(value: unknown): Parsed<JoinRequest> {
  const problem = objectProblem(value, 'join', [
    'clusterId',
    'nodeId',
    'kind',
    'httpAddress',
    'sessionKey',
    'memberSecret',
  ]);
  if (problem) return fail(problem);
  const v = value as Record<string, unknown>;
  const reason =
    idProblem(v.clusterId, 'clusterId') ??
    (v.nodeId === undefined ? undefined : nodeIdProblem(v.nodeId, 'nodeId')) ??
    kindProblem(v.kind) ??
    (v.httpAddress === undefined ? undefined : httpAddressProblem(v.httpAddress)) ??
    (v.sessionKey === undefined ? undefined : idProblem(v.sessionKey, 'sessionKey')) ??
    (v.memberSecret === undefined ? undefined : idProblem(v.memberSecret, 'memberSecret')) ??
    (v.memberSecret !== undefined && v.nodeId === undefined
      ? 'memberSecret goes with the nodeId it was issued for'
      : undefined);
  if (reason) return fail(reason);
  return { ok: true, value: v as unknown as JoinRequest };
}

export function parseSignalRequest(value: unknown): Parsed<SignalRequest> {
  const problem = objectProblem(value, 'signal', ['clusterId', 'to', 'payload']);
  if (problem) return fail(problem);
  const v = value as Record<string, unknown>;
  const reason =
    idProblem(v.clusterId, 'clusterId') ?? idProblem(v.to, 'to') ?? payloadProblem(v.payload);
  if (reason) return fail(reason);
  return { ok: true, value: v as unknown as SignalRequest };
}

export function parseSignalDelivery(value: unknown): Parsed<SignalDelivery> {
  const problem = objectProblem(value, 'signal', ['clusterId', 'from', 'payload']);
  if (problem) return fail(problem);
  const v = value as Record<string, unknown>;
  const reason =
    idProblem(v.clusterId, 'clusterId') ?? idProblem(v.from, 'from') ?? payloadProblem(v.payload);
  if (reason) return fail(reason);
  return { ok: true, value: v as unknown as SignalDelivery };
}

function payloadProblem(value: unknown): string | undefined {
  if (!isPlainObject(value)) return 'payload must be a plain object';
  if (!isJsonValue(value, 0)) {
    return `payload must be JSON (finite numbers, plain objects, depth ≤ ${MAX_JSON_DEPTH})`;
  }
  return undefined;
}

export function parseLeaveRequest(value: unknown): Parsed<LeaveRequest> {
  const problem =
    objectProblem(value, 'leave', ['clusterId']) ??
    idProblem((value as Record<string, unknown>).clusterId, 'clusterId');
  if (problem) return fail(problem);
  return { ok: true, value: value as LeaveRequest };
}

/** Settings problems, or undefined. Shared by the server's config, file and the client. */
export function settingsProblem(value: unknown): string | undefined {
  const problem = objectProblem(value, 'settings', [
    'clusterId',
    'partitions',
    'replicationFactor',
    'tokensPerNode',
  ]);
  if (problem) return problem;
  const v = value as Record<string, unknown>;
  const clusterIdProblem = idProblem(v.clusterId, 'clusterId');
  if (clusterIdProblem) return clusterIdProblem;
  try {
    validateSettings(v as unknown as RingSettings);
    return undefined;
  } catch (error) {
    return error instanceof RingError ? error.message : String(error);
  }
}

function integerProblem(
  value: unknown,
  what: string,
  min: number,
  max: number,
): string | undefined {
  if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max) {
    return `${what} must be an integer in ${min}..${max}`;
  }
  return undefined;
}

/** Member record problems, or undefined. */
export function memberProblem(value: unknown): string | undefined {
  const problem = objectProblem(value, 'member', [
    'nodeId',
    'kind',
    'state',
    'joinedAtEpoch',
    'changedAtEpoch',
    'httpAddress',
  ]);
  if (problem) return problem;
  const v = value as Record<string, unknown>;
  return (
    nodeIdProblem(v.nodeId, 'nodeId') ??
    kindProblem(v.kind) ??
    (v.state === 'up' || v.state === 'down' || v.state === 'left' || v.state === 'retired'
      ? undefined
      : "state must be 'up', 'down', 'left' or 'retired'") ??
    integerProblem(v.joinedAtEpoch, 'joinedAtEpoch', 1, Number.MAX_SAFE_INTEGER) ??
    integerProblem(
      v.changedAtEpoch,
      'changedAtEpoch',
      v.joinedAtEpoch as number,
      Number.MAX_SAFE_INTEGER,
    ) ??
    (v.httpAddress === undefined ? undefined : httpAddressProblem(v.httpAddress))
  );
}

/**
 * Registry problems, or undefined: settings and members valid, members sorted by unique
 * node id, no member changed after the registry's epoch.
 */
export function registryProblem(value: unknown): string | undefined {
  const problem = objectProblem(value, 'registry', ['settings', 'epoch', 'members']);
  if (problem) return problem;
  const v = value as Record<string, unknown>;
  const settings = settingsProblem(v.settings);
  if (settings) return settings;
  const epoch = integerProblem(v.epoch, 'epoch', 0, Number.MAX_SAFE_INTEGER);
  if (epoch) return epoch;
  if (!Array.isArray(v.members)) return 'members must be an array';
  let previous: string | undefined;
  for (const [index, member] of v.members.entries()) {
    const memberIssue = memberProblem(member);
    if (memberIssue) return `members[${index}]: ${memberIssue}`;
    const record = member as Member;
    if (previous !== undefined && !(previous < record.nodeId)) {
      return `members must be sorted by unique nodeId (at members[${index}])`;
    }
    if (record.changedAtEpoch > (v.epoch as number)) {
      return `members[${index}] changed at epoch ${record.changedAtEpoch} > epoch ${v.epoch}`;
    }
    previous = record.nodeId;
  }
  return undefined;
}

export function parseRegistryDelta(value: unknown): Parsed<RegistryDelta> {
  const problem = objectProblem(value, 'registry delta', [
    'clusterId',
    'fromEpoch',
    'changed',
    'removed',
  ]);
  if (problem) return fail(problem);
  const v = value as Record<string, unknown>;
  const reason =
    idProblem(v.clusterId, 'clusterId') ??
    integerProblem(v.fromEpoch, 'fromEpoch', 0, Number.MAX_SAFE_INTEGER - 1) ??
    (Array.isArray(v.changed) ? undefined : 'changed must be an array') ??
    (v.changed as unknown[]).map(memberProblem).find((issue) => issue !== undefined) ??
    idListProblem(v.removed, 'removed');
  if (reason) return fail(reason);
  return { ok: true, value: v as unknown as RegistryDelta };
}

/** The delta that turns `from` into `to`, whose epoch must be `from.epoch + 1`. */
export function registryDelta(from: RegistrySnapshot, to: RegistrySnapshot): RegistryDelta {
  const before = new Map(from.members.map((member) => [member.nodeId, member]));
  const after = new Set(to.members.map((member) => member.nodeId));
  return {
    clusterId: to.settings.clusterId,
    fromEpoch: from.epoch,
    changed: to.members.filter((member) => !sameMember(before.get(member.nodeId), member)),
    removed: from.members.map((member) => member.nodeId).filter((nodeId) => !after.has(nodeId)),
  };
}

function sameMember(a: Member | undefined, b: Member): boolean {
  return (
    a !== undefined &&
    a.nodeId === b.nodeId &&
    a.kind === b.kind &&
    a.state === b.state &&
    a.joinedAtEpoch === b.joinedAtEpoch &&
    a.changedAtEpoch === b.changedAtEpoch &&
    a.httpAddress === b.httpAddress
  );
}

/**
 * Applies `delta` to `registry`: the next registry, or the reason it does not apply (another
 * epoch, another cluster, or a result that breaks the registry's invariants).
 */
export function applyRegistryDelta(
  registry: RegistrySnapshot,
  delta: RegistryDelta,
): Parsed<RegistrySnapshot> {
  if (delta.clusterId !== registry.settings.clusterId) return fail('delta of another cluster');
  if (delta.fromEpoch !== registry.epoch) {
    return fail(`delta from epoch ${delta.fromEpoch} to a registry at epoch ${registry.epoch}`);
  }
  const members = new Map(registry.members.map((member) => [member.nodeId, member]));
  for (const nodeId of delta.removed) members.delete(nodeId);
  for (const member of delta.changed) members.set(member.nodeId, member);
  const next: RegistrySnapshot = {
    settings: registry.settings,
    epoch: registry.epoch + 1,
    members: [...members.values()].sort((a, b) =>
      a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0,
    ),
  };
  const problem = registryProblem(next);
  return problem ? fail(problem) : { ok: true, value: next };
}

const ERROR_CODES: ReadonlySet<string> = new Set<SignalingErrorCode>([
  'unauthorized',
  'wrong_cluster',
  'incompatible_version',
  'duplicate_id',
  'wrong_secret',
  'cluster_full',
  'server_full',
  'invalid',
  'too_large',
  'rate_limited',
  'not_joined',
  'unknown_target',
  'target_unavailable',
  'unavailable',
  'closed',
  'timeout',
  'disconnected',
]);

/** Checks an ErrorBody (a reply's `error`, a handshake refusal's `data`). */
export function errorBodyProblem(value: unknown): string | undefined {
  const problem = objectProblem(value, 'error', ['code', 'message']);
  if (problem) return problem;
  const v = value as Record<string, unknown>;
  if (typeof v.code !== 'string' || !ERROR_CODES.has(v.code)) return 'error.code is unknown';
  return stringProblem(v.message, 'error.message', 4096);
}

/**
 * Parses an acknowledgement. `parseValue` checks the fields of a successful one (the `ok`
 * field already removed).
 */
export function parseReply<T>(
  value: unknown,
  parseValue: (fields: Record<string, unknown>) => string | undefined,
): Parsed<Reply<T>> {
  if (!isPlainObject(value)) return fail('reply must be a plain object');
  if (value.ok === false) {
    const problem = objectProblem(value, 'reply', ['ok', 'error']) ?? errorBodyProblem(value.error);
    return problem ? fail(problem) : { ok: true, value: value as Reply<T> };
  }
  if (value.ok !== true) return fail('reply.ok must be a boolean');
  const { ok: _ok, ...fields } = value;
  const problem = parseValue(fields);
  return problem ? fail(problem) : { ok: true, value: value as Reply<T> };
}

export function joinAcceptedProblem(fields: Record<string, unknown>): string | undefined {
  return (
    objectProblem(fields, 'join reply', [
      'nodeId',
      'sessionKey',
      'memberSecret',
      'registry',
      'online',
    ]) ??
    nodeIdProblem(fields.nodeId, 'nodeId') ??
    idProblem(fields.sessionKey, 'sessionKey') ??
    idProblem(fields.memberSecret, 'memberSecret') ??
    registryProblem(fields.registry) ??
    idListProblem(fields.online, 'online')
  );
}

function idListProblem(value: unknown, what: string): string | undefined {
  if (!Array.isArray(value)) return `${what} must be an array`;
  for (const [index, id] of value.entries()) {
    const problem = idProblem(id, `${what}[${index}]`);
    if (problem) return problem;
  }
  return undefined;
}

export function parsePresenceUpdate(value: unknown): Parsed<PresenceUpdate> {
  const problem = objectProblem(value, 'presence', ['clusterId', 'nodeId', 'online']);
  if (problem) return fail(problem);
  const v = value as Record<string, unknown>;
  const reason =
    idProblem(v.clusterId, 'clusterId') ??
    nodeIdProblem(v.nodeId, 'nodeId') ??
    (typeof v.online === 'boolean' ? undefined : 'online must be a boolean');
  if (reason) return fail(reason);
  return { ok: true, value: v as unknown as PresenceUpdate };
}

export function signalRelayedProblem(fields: Record<string, unknown>): string | undefined {
  return objectProblem(fields, 'signal reply', []);
}

export function leaveAcceptedProblem(fields: Record<string, unknown>): string | undefined {
  return (
    objectProblem(fields, 'leave reply', ['epoch']) ??
    integerProblem(fields.epoch, 'epoch', 0, Number.MAX_SAFE_INTEGER)
  );
}

export function parseProtocolErrorNotice(value: unknown): Parsed<ProtocolErrorNotice> {
  const problem =
    objectProblem(value, 'protocol error', ['error', 'event']) ??
    errorBodyProblem((value as Record<string, unknown>).error);
  if (problem) return fail(problem);
  const event = (value as Record<string, unknown>).event;
  if (event !== undefined && typeof event !== 'string') return fail('event must be a string');
  return { ok: true, value: value as ProtocolErrorNotice };
}
