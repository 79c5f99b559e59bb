/**
 * An HTTP client of a meshkv cluster (the peers' API, http.node.ts), for the CLI's put,
 * get, del and status.
 *
 * Contract:
 * - `endpoints` are peers' HTTP API base URLs, tried in order. A peer that cannot be
 *   reached (the connection was refused, or not made within CONNECT_TIMEOUT_MS: nothing
 *   was sent) is passed over for the next; when every one is, the members the registry
 *   (`signalingUrl`/status) lists `up` with an HTTP address are tried too. None reachable:
 *   UNAVAILABLE.
 * - Failing over after a request was sent happens only where it is safe: a read always; a
 *   write only if the peer answered that nothing was done (CLOSED, OVERLOADED, or
 *   `details.mayHaveApplied: false`). A write whose connection broke before an answer
 *   fails with OUTCOME_UNKNOWN, one that got no answer in time with TIMEOUT: both "may or
 *   may not have been applied", as the node's own TIMEOUT says.
 * - `timeoutMs` (default DEFAULT_TIMEOUT_MS) goes to the peer as the request's deadline
 *   (`?timeout=`); the client waits
 *   that long plus ANSWER_MARGIN_MS for an answer (the peer's own TIMEOUT comes first).
 * - Every failure is a ClientError with the peer's `{code, message, details}` or the
 *   client's own (UNAVAILABLE, TIMEOUT, OUTCOME_UNKNOWN, BAD_RESPONSE).
 */
import { request as httpRequest } from 'node:http';
import { ErrorCode } from './errors.ts';
import type { NodeStatus } from './mesh-node.ts';

/**
 * The request's deadline when none is given (sent as `?timeout=`, so the client knows how
 * long the peer may take): the node's default too.
 */
export const DEFAULT_TIMEOUT_MS = 5_000;
/** A peer that does not accept the connection within this is taken as unreachable. */
export const CONNECT_TIMEOUT_MS = 3_000;
/** How much longer than the request's deadline the client waits for the peer's answer. */
export const ANSWER_MARGIN_MS = 2_000;
/** The largest answer read: a value is at most 1 MiB; a /status of many partitions more. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;
/** Endpoints tried by one call, registry ones included. */
const MAX_ENDPOINTS = 64;

/** The client's own codes, beside the node's and the HTTP API's. */
export const ClientCode = {
  /** The answer was not what a meshkv peer sends (not JSON, an unexpected status). */
  BAD_RESPONSE: 'BAD_RESPONSE',
} as const;

/** `code`: the peer's (a MeshKvError or HTTP API code) or the client's own (above). */
export class ClientError extends Error {
  override readonly name = 'ClientError';
  constructor(
    readonly code: string,
    message: string,
    readonly details: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
  }
}

export interface ClientOptions {
  readonly endpoints: readonly string[];
  /** The registry, for more endpoints when none of `endpoints` is reachable. */
  readonly signalingUrl?: string;
  /** Sent as `Authorization: Bearer` (peers beyond loopback require it). */
  readonly token?: string;
  /** The request's deadline at the peer; default DEFAULT_TIMEOUT_MS. */
  readonly timeoutMs?: number;
}

/** The registry's record of a member, as the signaling server's /status lists it. */
export interface RegistryMember {
  readonly nodeId: string;
  readonly kind: string;
  readonly state: string;
  readonly httpAddress?: string;
  readonly connected?: boolean;
}

/** What `status()` gathers: the registry's members and each peer's own status. */
export interface ClusterStatus {
  /** Null without a signaling URL, or when it could not be read (`registryError`). */
  readonly members: readonly RegistryMember[] | null;
  readonly registryError?: string;
  readonly epoch?: number;
  readonly peers: readonly {
    readonly endpoint: string;
    readonly status?: NodeStatus;
    readonly error?: string;
  }[];
}

/** One HTTP exchange's end. */
type Outcome =
  | { readonly kind: 'answer'; readonly status: number; readonly body: Buffer }
  /** Nothing was sent: the connection was refused or not made. */
  | { readonly kind: 'unreachable'; readonly reason: string }
  /** Sent (maybe in part), then the connection broke before the whole answer came. */
  | { readonly kind: 'lost'; readonly reason: string }
  | { readonly kind: 'timeout' };

interface Call {
  readonly method: 'GET' | 'PUT' | 'DELETE';
  readonly path: string;
  readonly body: Uint8Array | null;
  readonly write: boolean;
}

export class MeshKvClient {
  private readonly timeoutMs: number;

  constructor(private readonly options: ClientOptions) {
    if (options.endpoints.length === 0 && options.signalingUrl === undefined) {
      throw new RangeError('a client needs an endpoint or a signaling URL');
    }
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  async put(key: string, value: Uint8Array, options: { ack?: 'all' } = {}): Promise<true> {
    const query = this.query(options.ack === undefined ? [] : [['ack', options.ack]]);
    await this.call({ method: 'PUT', path: kvPath(key, query), body: value, write: true });
    return true;
  }

  async get(key: string, options: { consistency?: 'local' } = {}): Promise<Uint8Array | null> {
    const params: [string, string][] =
      options.consistency === undefined ? [] : [['consistency', options.consistency]];
    return this.call({
      method: 'GET',
      path: kvPath(key, this.query(params)),
      body: null,
      write: false,
    });
  }

  async delete(key: string): Promise<boolean> {
    const answer = await this.call({
      method: 'DELETE',
      path: kvPath(key, this.query([])),
      body: null,
      write: true,
    });
    return answer !== null;
  }

  /** The registry and every peer's /status (peers that fail are listed with their error). */
  async status(): Promise<ClusterStatus> {
    const registry = await this.registry();
    const endpoints = new Set(this.options.endpoints.map(trimSlash));
    for (const member of registry.members ?? []) {
      if (member.state === 'up' && member.httpAddress !== undefined) {
        endpoints.add(trimSlash(member.httpAddress));
      }
    }
    const peers = await Promise.all(
      [...endpoints].slice(0, MAX_ENDPOINTS).map(async (endpoint) => {
        const outcome = await exchange(endpoint, 'GET', '/status', null, this.headers(), {
          answerMs: this.answerMs(),
        });
        if (outcome.kind !== 'answer') return { endpoint, error: describe(outcome) };
        if (outcome.status !== 200) return { endpoint, error: errorOf(outcome).message };
        const status = parseJson(outcome.body) as NodeStatus | undefined;
        if (typeof status !== 'object' || status === null || !Array.isArray(status.groups)) {
          return { endpoint, error: 'its /status is not a node status' };
        }
        return { endpoint, status };
      }),
    );
    if (peers.every((peer) => peer.status === undefined) && registry.members === null) {
      throw new ClientError(
        ErrorCode.UNAVAILABLE,
        `no peer answered: ${peers.map((p) => `${p.endpoint} (${p.error})`).join(', ')}; is the cluster running (meshkv start)?`,
      );
    }
    return { ...registry, peers };
  }

  private query(params: [string, string][]): string {
    params.push(['timeout', String(this.timeoutMs)]);
    return `?${new URLSearchParams(params)}`;
  }

  private headers(): Record<string, string> {
    return this.options.token === undefined
      ? {}
      : { authorization: `Bearer ${this.options.token}` };
  }

  private answerMs(): number {
    return this.timeoutMs + ANSWER_MARGIN_MS;
  }

  /** The registry's members, or null (and why) if it has no URL or could not be read. */
  private async registry(): Promise<Pick<ClusterStatus, 'members' | 'registryError' | 'epoch'>> {
    const url = this.options.signalingUrl;
    if (url === undefined) return { members: null };
    const outcome = await exchange(url, 'GET', '/status', null, {}, { answerMs: this.answerMs() });
    if (outcome.kind !== 'answer' || outcome.status !== 200) {
      const why = outcome.kind === 'answer' ? `HTTP ${outcome.status}` : describe(outcome);
      return { members: null, registryError: `registry ${url}: ${why}` };
    }
    const doc = parseJson(outcome.body) as { members?: unknown; epoch?: unknown } | undefined;
    if (!Array.isArray(doc?.members)) {
      return { members: null, registryError: `registry ${url}: its /status lists no members` };
    }
    return {
      members: doc.members as RegistryMember[],
      ...(typeof doc.epoch === 'number' ? { epoch: doc.epoch } : {}),
    };
  }

  /**
   * Runs `call` against the endpoints (see the file comment): the value of a 200 GET, an
   * empty buffer for another 200, null for a 404 KEY_NOT_FOUND.
   */
  private async call(call: Call): Promise<Uint8Array | null> {
    const tried = new Set<string>();
    const unreachable: string[] = [];
    let refusal: ClientError | null = null;
    let queue = this.options.endpoints.map(trimSlash);
    let askedRegistry = false;
    for (;;) {
      const endpoint = queue.shift();
      if (endpoint === undefined) {
        if (askedRegistry || this.options.signalingUrl === undefined) break;
        askedRegistry = true;
        const { members } = await this.registry();
        queue = (members ?? [])
          .filter((m) => m.state === 'up' && m.httpAddress !== undefined)
          .map((m) => trimSlash(m.httpAddress!))
          .filter((e) => !tried.has(e));
        continue;
      }
      if (tried.has(endpoint) || tried.size >= MAX_ENDPOINTS) continue;
      tried.add(endpoint);
      const outcome = await exchange(endpoint, call.method, call.path, call.body, this.headers(), {
        answerMs: this.answerMs(),
      });
      if (outcome.kind === 'unreachable') {
        unreachable.push(`${endpoint} (${outcome.reason})`);
        continue;
      }
      if (outcome.kind === 'answer') {
        if (outcome.status === 200) return call.method === 'GET' ? outcome.body : new Uint8Array();
        const error = errorOf(outcome);
        if (outcome.status === 404 && error.code === 'KEY_NOT_FOUND') return null;
        const nothingDone =
          error.code === ErrorCode.CLOSED ||
          error.code === ErrorCode.OVERLOADED ||
          error.details.mayHaveApplied === false;
        if (outcome.status === 503 && (!call.write || nothingDone)) {
          refusal = error;
          continue;
        }
        throw error;
      }
      if (!call.write) {
        unreachable.push(`${endpoint} (${describe(outcome)})`);
        continue;
      }
      throw outcome.kind === 'timeout'
        ? new ClientError(
            ErrorCode.TIMEOUT,
            `no answer from ${endpoint} within ${this.answerMs()} ms: the write may or may not have been applied`,
            { endpoint, deadlineMs: this.answerMs(), mayHaveApplied: true },
          )
        : new ClientError(
            ErrorCode.OUTCOME_UNKNOWN,
            `${endpoint} closed the connection before answering (${outcome.reason}): the write may or may not have been applied`,
            { endpoint, mayHaveApplied: true },
          );
    }
    if (refusal !== null) throw refusal;
    throw new ClientError(
      ErrorCode.UNAVAILABLE,
      `no peer reachable: ${unreachable.join(', ') || '(no endpoint known)'}; is the cluster running (meshkv start)?`,
      { mayHaveApplied: false, unreachable },
    );
  }
}

/** /kv/<key> with the key percent-encoded (a "/" in it too: one path segment). */
function kvPath(key: string, query: string): string {
  return `/kv/${encodeURIComponent(key)}${query}`;
}

function trimSlash(url: string): string {
  return url.endsWith('/') ? url.slice(0, -1) : url;
}

function describe(outcome: Exclude<Outcome, { kind: 'answer' }>): string {
  return outcome.kind === 'timeout' ? 'no answer in time' : outcome.reason;
}

/** The ClientError of a non-200 answer (`{code, message, details}` from the peer). */
function errorOf(answer: { status: number; body: Buffer }): ClientError {
  const doc = parseJson(answer.body) as
    | { code?: unknown; message?: unknown; details?: unknown }
    | undefined;
  if (typeof doc?.code !== 'string' || typeof doc.message !== 'string') {
    return new ClientError(
      ClientCode.BAD_RESPONSE,
      `HTTP ${answer.status} without a meshkv error body: ${answer.body.subarray(0, 200).toString()}`,
    );
  }
  const details =
    typeof doc.details === 'object' && doc.details !== null
      ? (doc.details as Record<string, unknown>)
      : {};
  return new ClientError(doc.code, doc.message, details);
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** One request to `base` + `path` (see `Outcome`); never rejects. */
function exchange(
  base: string,
  method: string,
  path: string,
  body: Uint8Array | null,
  headers: Record<string, string>,
  limits: { answerMs: number },
): Promise<Outcome> {
  return new Promise((resolve) => {
    let url: URL;
    try {
      url = new URL(path, `${base}/`);
    } catch {
      resolve({ kind: 'unreachable', reason: 'not a URL' });
      return;
    }
    let connected = false;
    let settled = false;
    const finish = (outcome: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      clearTimeout(answerTimer);
      req.destroy();
      resolve(outcome);
    };
    const req = httpRequest(url, {
      method,
      headers: { ...headers, 'content-length': String(body?.byteLength ?? 0) },
      agent: false,
    });
    const connectTimer = setTimeout(() => {
      if (!connected) finish({ kind: 'unreachable', reason: 'no connection in time' });
    }, CONNECT_TIMEOUT_MS);
    const answerTimer = setTimeout(() => finish({ kind: 'timeout' }), limits.answerMs);
    req.once('socket', (socket) => {
      if (!socket.connecting) connected = true;
      else socket.once('connect', () => (connected = true));
    });
    req.once('error', (error: NodeJS.ErrnoException) => {
      const reason = error.code ?? error.message;
      finish(connected ? { kind: 'lost', reason } : { kind: 'unreachable', reason });
    });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      let sizeBytes = 0;
      res.on('data', (chunk: Buffer) => {
        sizeBytes += chunk.byteLength;
        if (sizeBytes > MAX_RESPONSE_BYTES) {
          finish({ kind: 'lost', reason: `an answer over ${MAX_RESPONSE_BYTES} bytes` });
          return;
        }
        chunks.push(chunk);
      });
      res.once('end', () =>
        finish({ kind: 'answer', status: res.statusCode ?? 0, body: Buffer.concat(chunks) }),
      );
      res.once('error', (error: NodeJS.ErrnoException) =>
        finish({ kind: 'lost', reason: error.code ?? error.message }),
      );
    });
    req.end(body ?? undefined);
  });
}

// ---- The status table ---------------------------------------------------------------------

type GroupView = NodeStatus['groups'][number];

/** Each partition as its leader reports it, else as any replica does. */
function partitionViews(statuses: Iterable<NodeStatus>): Map<number, { group: GroupView }> {
  const partitions = new Map<number, { group: GroupView }>();
  for (const status of statuses) {
    for (const group of status.groups) {
      const known = partitions.get(group.partition);
      if (known === undefined || (group.role === 'leader' && known.group.role !== 'leader')) {
        partitions.set(group.partition, { group });
      }
    }
  }
  return partitions;
}

/**
 * Partitions whose leader reports them where the ring places them: its replicas are the
 * placement's, no learner is being caught up, no joint configuration (`meshkv start`'s
 * progress line while a new cluster grows from one voter per partition to N).
 */
export function partitionsInPlace(doc: ClusterStatus): number {
  const statuses: NodeStatus[] = [];
  for (const peer of doc.peers) if (peer.status) statuses.push(peer.status);
  let placed = 0;
  for (const { group } of partitionViews(statuses).values()) {
    if (
      group.role === 'leader' &&
      group.learners.length === 0 &&
      group.votersOutgoing.length === 0 &&
      group.placement.startsWith('in place')
    ) {
      placed++;
    }
  }
  return placed;
}

/**
 * `meshkv status` as text: the members (registry state, HTTP address, what each peer
 * says of itself) and the partitions (leader, term, replicas, each follower's lag as its
 * leader sees it, learners being caught up, why a group is not where the ring places it).
 */
export function formatStatus(doc: ClusterStatus): string {
  const out: string[] = [];
  const byNode = new Map<string, NodeStatus>();
  for (const peer of doc.peers) if (peer.status) byNode.set(peer.status.nodeId, peer.status);
  const rows: string[][] = [
    ['MEMBER', 'KIND', 'STATE', 'HTTP', 'GROUPS', 'LEADS', 'MOVES', 'PEERS'],
  ];
  const seen = new Set<string>();
  for (const member of doc.members ?? []) {
    seen.add(member.nodeId);
    rows.push(memberRow(member, byNode.get(member.nodeId)));
  }
  for (const peer of doc.peers) {
    const id = peer.status?.nodeId;
    if (id !== undefined && seen.has(id)) continue;
    if (id !== undefined) seen.add(id);
    rows.push(
      peer.status
        ? memberRow(
            { nodeId: id!, kind: 'node', state: '?', httpAddress: peer.endpoint },
            peer.status,
          )
        : ['?', 'node', 'unreachable', peer.endpoint, '-', '-', '-', peer.error ?? ''],
    );
  }
  const epoch = doc.epoch === undefined ? '' : ` (registry epoch ${doc.epoch})`;
  out.push(`Members${epoch}:`, ...table(rows), '');
  if (doc.registryError) out.push(`(registry not read: ${doc.registryError})`, '');
  for (const peer of doc.peers) {
    if (peer.error && doc.members !== null) out.push(`(${peer.endpoint}: ${peer.error})`);
  }

  const partitions = partitionViews(byNode.values());
  const prows: string[][] = [['PARTITION', 'LEADER', 'TERM', 'COMMIT', 'REPLICAS', 'LAG', 'MOVES']];
  for (const [partition, { group }] of [...partitions].sort((a, b) => a[0] - b[0])) {
    const leader = group.role === 'leader' ? group.leader : null;
    const lag = group.followers.map((f) => `${f.id}:${f.lag}`).join(' ');
    const moves = [
      ...group.learners.map((l) => `+${l} (learner)`),
      ...(group.votersOutgoing.length > 0 ? ['joint config'] : []),
      ...(group.placement && group.placement !== 'in place' ? [group.placement] : []),
    ].join('; ');
    prows.push([
      String(partition),
      leader === null ? (group.leader === null ? '(none)' : `${group.leader}?`) : leader,
      String(group.term),
      String(group.commit),
      group.voters.join(' '),
      leader === null ? '-' : lag || '-',
      moves || '-',
    ]);
  }
  const moving = [...byNode.values()].reduce((n, s) => n + s.movesInProgress, 0);
  out.push(`Partitions (${partitions.size}; moves in progress: ${moving}):`, ...table(prows));
  return `${out.join('\n')}\n`;
}

function memberRow(member: RegistryMember, status: NodeStatus | undefined): string[] {
  const state =
    member.connected === false && member.state === 'up' ? 'up (disconnected)' : member.state;
  return [
    member.nodeId,
    member.kind,
    state,
    member.httpAddress ?? '-',
    status ? String(status.groups.length) : '-',
    status ? String(status.groups.filter((g) => g.role === 'leader').length) : '-',
    status ? String(status.movesInProgress) : '-',
    status ? linksCell(status) : '-',
  ];
}

/** Links up, and the members this peer has no link to (its requests to them are relayed). */
function linksCell(status: NodeStatus): string {
  const unreachable = status.unreachable ?? []; // A peer of an earlier version has none.
  const up = String(status.peers.length);
  return unreachable.length === 0 ? up : `${up} (no link to ${unreachable.join(', ')})`;
}

/** Rows as left-aligned columns two spaces apart. */
function table(rows: readonly string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows.map((row) =>
    row
      .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
}
