/**
 * The signaling server and configuration registry of one meshkv cluster.
 *
 * Contract (protocol: packages/transport/src/signaling-protocol.ts; summary: README.md):
 * - Holds the registry (settings fixed at creation, members, epoch), persists every change
 *   atomically before anyone hears of it, restores it on start, and pushes every change to
 *   every joined member as a delta.
 * - Checks the cluster token in the Socket.IO handshake, before a connection counts against
 *   `maxConnections`; binds each connection to one node id at a time.
 * - Binds each node id to the member secret issued at its first join; a later join for the
 *   id must present it.
 * - Relays signals only from a joined member to a connected member of the same cluster.
 * - A member whose connection drops stays `up` for `gracePeriodMs`; if it has not
 *   re-joined by then it is marked `down`. A graceful `leave` marks it `left`; its
 *   connection still relays signals until it disconnects (the hand-off may need links). A member
 *   `down` for `retirementPeriodMs` (wall clock, persisted, so restarts do not postpone
 *   it) is marked `retired` (registry.ts).
 * - Every incoming message is rate limited, size checked and validated; a bad one is
 *   answered with an error and counted, and no handler throws into Socket.IO.
 * - Membership changes run one at a time (a promise queue), so each is checked against
 *   the state the previous one left, and each bumps the epoch exactly once.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MAX_MEMBERS } from '@meshkv/ring';
import {
  type ClusterSettings,
  type ErrorBody,
  type JoinAccepted,
  type JoinRequest,
  type LeaveAccepted,
  MAX_TOKEN_BYTES,
  PROTOCOL_VERSION,
  type PresenceUpdate,
  type ProbeRequest,
  parseHandshakeAuth,
  parseJoinRequest,
  parseLeaveRequest,
  parseSignalRequest,
  type RegistrySnapshot,
  type Reply,
  registryDelta,
  type SignalDelivery,
  type SignalingErrorCode,
  SignalingEvents,
  type SignalRelayed,
} from '@meshkv/transport/signaling-protocol';
import { type Socket, Server as SocketServer } from 'socket.io';
import { type Clock, systemClock } from './clock.ts';
import { lockDataDir } from './data-dir-lock.ts';
import { createRequestHandler } from './http.ts';
import {
  admit,
  completeSettings,
  DEFAULT_RETIREMENT_PERIOD_MS,
  emptyRegistry,
  findMember,
  markDown,
  markLeft,
  nextRetirementMs,
  type RegistryState,
  retireDownMembers,
} from './registry.ts';
import { checkSettings, loadRegistry, registryFilePath, saveRegistry } from './registry-file.ts';
import { TokenBucket } from './token-bucket.ts';

export interface SignalingLimits {
  /** Largest accepted event payload, as JSON bytes; larger ones get `too_large`. */
  readonly maxMessageBytes: number;
  /**
   * Largest WebSocket frame (Socket.IO `maxHttpBufferSize`). A bigger frame closes the
   * connection at the transport level before any handler sees it (so it is not counted).
   */
  readonly maxFrameBytes: number;
  /** Members `up` or `down`; joins of new ids beyond it get `cluster_full`. */
  readonly maxMembers: number;
  /** `left` records kept; the oldest are dropped. */
  readonly maxLeftMembers: number;
  /**
   * Open connections that passed the handshake (token checked), joined or not; more are
   * told `server_full` and disconnected. Connections refused in the handshake never count.
   */
  readonly maxConnections: number;
  /** Per member, across its connections: signals relayed per second and burst. */
  readonly signalsPerSecond: number;
  readonly signalBurst: number;
  /** Per connection: events of any kind (malformed ones too) per second and burst. */
  readonly eventsPerSecond: number;
  readonly eventBurst: number;
}

export const DEFAULT_LIMITS: SignalingLimits = {
  maxMessageBytes: 64 * 1024,
  maxFrameBytes: 256 * 1024,
  maxMembers: 1000,
  maxLeftMembers: 1000,
  maxConnections: 2000,
  signalsPerSecond: 100,
  signalBurst: 300,
  eventsPerSecond: 200,
  eventBurst: 400,
};

export const DEFAULT_GRACE_PERIOD_MS = 15_000;
export const DEFAULT_JOIN_TIMEOUT_MS = 10_000;
export const DEFAULT_PROBE_TIMEOUT_MS = 3_000;
/** Socket.IO's defaults are 25 s and 20 s; detection within 20 s suits a 15 s grace period. */
export const DEFAULT_PING_INTERVAL_MS = 10_000;
export const DEFAULT_PING_TIMEOUT_MS = 10_000;

export interface SignalingServerOptions {
  /** Directory of the registry file (created if missing). */
  readonly dataDir: string;
  /** The cluster token joiners must present: 1..1024 bytes. */
  readonly token: string;
  /**
   * Used when the registry is created (missing ones take the defaults). With an existing
   * registry, any given setting must equal the stored one, or `start` fails.
   */
  readonly settings?: Partial<ClusterSettings>;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 0 (any free port). */
  readonly port?: number;
  /** Folder served over HTTP for paths other than /health, /status and /socket.io/. */
  readonly staticDir?: string;
  /**
   * Serve `GET /demo-config.json` → `{clusterId, signalingUrl, token}` to loopback clients
   * (http.ts isLoopbackRequest; others get 403): how a page this server serves (the demo)
   * joins the cluster. Off by default: the token is a secret.
   */
  readonly serveDemoConfig?: boolean;
  /** How long a disconnected member stays `up` before it is marked `down`. */
  readonly gracePeriodMs?: number;
  /**
   * How long a member stays `down` before it is `retired` (no longer counted against
   * `maxMembers`, not placed; see registry.ts). Default 1 h.
   */
  readonly retirementPeriodMs?: number;
  /**
   * How long a connection may stay without joining before it is disconnected; also how
   * long a WebSocket may stay without completing the Socket.IO handshake.
   */
  readonly joinTimeoutMs?: number;
  /** How long a connection holding a requested node id has to answer a probe. */
  readonly probeTimeoutMs?: number;
  /**
   * Socket.IO heartbeat: a ping every `pingIntervalMs`; no pong within `pingTimeoutMs`
   * closes the connection. Bounds how long a silently dead member (a sleeping laptop)
   * looks connected; the grace period starts after that.
   */
  readonly pingIntervalMs?: number;
  readonly pingTimeoutMs?: number;
  readonly limits?: Partial<SignalingLimits>;
  readonly clock?: Clock;
  /** One line per notable event (joins, state changes, persist failures). */
  readonly log?: (line: string) => void;
}

export interface SignalingServerStats {
  /** Open Socket.IO connections. */
  readonly connections: number;
  /** Members bound to a connection now. */
  readonly connectedMembers: number;
  readonly signalsRelayed: number;
  /** Registry writes that failed (the change was not made). */
  readonly persistFailures: number;
  /** Refusals by error code: malformed (`invalid`), `too_large`, `rate_limited`, ... */
  readonly refused: Readonly<Partial<Record<SignalingErrorCode, number>>>;
}

/** Room of the joined members: registry changes go to it. */
const MEMBERS_ROOM = 'members';
const CLIENT_EVENTS: ReadonlySet<string> = new Set([
  SignalingEvents.join,
  SignalingEvents.signal,
  SignalingEvents.leave,
]);

interface Connection {
  readonly socket: Socket;
  /** Every event, malformed or not, takes a token. */
  readonly events: TokenBucket;
  nodeId?: string;
  sessionKey?: string;
  /** The member secret of `nodeId`, as the join reply carried it (for a repeated join). */
  memberSecret?: string;
  /** A join is being processed; a second one is refused. */
  joining: boolean;
  cancelJoinTimer?: () => void;
}

type Respond = (reply: Reply<object>) => void;
type Refusal = { readonly ok: false; readonly error: ErrorBody };

/** The change could not be persisted; nothing was changed. */
class PersistFailed extends Error {}

export class SignalingServer {
  /** `http://host:port`. */
  readonly url: string;
  readonly port: number;
  /** The cluster's settings (fixed at the registry's creation). */
  readonly settings: ClusterSettings;
  private readonly limits: SignalingLimits;
  private readonly clock: Clock;
  private readonly log: (line: string) => void;
  private readonly gracePeriodMs: number;
  private readonly retirementPeriodMs: number;
  private readonly joinTimeoutMs: number;
  private readonly probeTimeoutMs: number;
  private readonly tokenDigest: Buffer;
  private readonly connections = new Map<string, Connection>();
  /** Node id → the connection it is bound to now. */
  private readonly bindings = new Map<string, Connection>();
  /** Node id → cancels its pending grace timer. */
  private readonly graceTimers = new Map<string, () => void>();
  /** Cancels the timer of the next retirement. */
  private cancelRetirementTimer: (() => void) | undefined;
  /** Node id → its signal budget; kept across reconnects so a reconnect does not reset it. */
  private readonly signalBuckets = new Map<string, TokenBucket>();
  private readonly refused: Partial<Record<SignalingErrorCode, number>> = {};
  private signalsRelayed = 0;
  private persistFailures = 0;
  /** Tail of the membership-change queue. */
  private queue: Promise<void> = Promise.resolve();
  private closing = false;

  private constructor(
    private readonly options: SignalingServerOptions,
    private current: RegistryState,
    private readonly http: HttpServer,
    private readonly io: SocketServer,
    limits: SignalingLimits,
    private readonly unlock: () => Promise<void>,
  ) {
    this.settings = current.snapshot.settings;
    this.limits = limits;
    this.clock = options.clock ?? systemClock;
    this.log = options.log ?? (() => {});
    this.gracePeriodMs = options.gracePeriodMs ?? DEFAULT_GRACE_PERIOD_MS;
    this.retirementPeriodMs = options.retirementPeriodMs ?? DEFAULT_RETIREMENT_PERIOD_MS;
    this.joinTimeoutMs = options.joinTimeoutMs ?? DEFAULT_JOIN_TIMEOUT_MS;
    this.probeTimeoutMs = options.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
    this.tokenDigest = digest(options.token);
    const address = http.address() as AddressInfo;
    this.port = address.port;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    this.url = `http://${host}:${address.port}`;
    io.use((socket, next) => this.authenticate(socket, next));
    io.on('connection', (socket) => this.onConnection(socket));
    // After a restart nobody is connected: every `up` member gets its grace period to
    // come back before it is marked down.
    for (const member of current.snapshot.members) {
      if (member.state === 'up') this.armGraceTimer(member.nodeId);
    }
    this.armRetirementTimer(0);
  }

  /**
   * Locks the data dir, loads (or creates) the registry, then listens. Rejects with a
   * clear error for bad options, a data dir in use by another server, a corrupt registry
   * file, settings that differ from the stored ones, or a port in use.
   */
  static async start(options: SignalingServerOptions): Promise<SignalingServer> {
    const limits = { ...DEFAULT_LIMITS, ...options.limits };
    validateOptions(options, limits);
    const unlock = await lockDataDir(options.dataDir);
    try {
      return await SignalingServer.open(options, limits, unlock);
    } catch (error) {
      await unlock();
      throw error;
    }
  }

  private static async open(
    options: SignalingServerOptions,
    limits: SignalingLimits,
    unlock: () => Promise<void>,
  ): Promise<SignalingServer> {
    let registry = await loadRegistry(options.dataDir);
    if (registry) {
      checkSettings(options.dataDir, registry.snapshot.settings, options.settings ?? {});
    } else {
      registry = emptyRegistry(completeSettings(options.settings ?? {}));
      // Written now so the settings are fixed from the very first start.
      await saveRegistry(options.dataDir, registry);
    }
    const staticDir = options.staticDir;
    let server: SignalingServer | undefined;
    const http = createServer(
      createRequestHandler({
        staticDir,
        status: () => server?.status() ?? {},
        demoConfig: options.serveDemoConfig ? () => server?.demoConfig() ?? {} : undefined,
      }),
    );
    const io = new SocketServer(http, {
      transports: ['websocket'],
      maxHttpBufferSize: limits.maxFrameBytes,
      pingInterval: options.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS,
      pingTimeout: options.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS,
      // A WebSocket that never completes the Socket.IO handshake is closed after this.
      connectTimeout: options.joinTimeoutMs ?? DEFAULT_JOIN_TIMEOUT_MS,
      serveClient: false,
    });
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
        http.off('error', reject);
        resolve();
      });
    }).catch(async (error: unknown) => {
      await new Promise((resolve) => io.close(resolve));
      throw error;
    });
    server = new SignalingServer(options, registry, http, io, limits, unlock);
    return server;
  }

  /** The registry as persisted now. */
  registry(): RegistrySnapshot {
    return this.current.snapshot;
  }

  /** Node ids bound to a connection now, sorted. */
  connectedMembers(): string[] {
    return [...this.bindings.keys()].sort();
  }

  stats(): SignalingServerStats {
    return {
      connections: this.connections.size,
      connectedMembers: this.bindings.size,
      signalsRelayed: this.signalsRelayed,
      persistFailures: this.persistFailures,
      refused: { ...this.refused },
    };
  }

  /** The `/status` document. */
  status(): unknown {
    const connected = new Set(this.bindings.keys());
    const { snapshot } = this.current;
    return {
      settings: snapshot.settings,
      epoch: snapshot.epoch,
      members: snapshot.members.map((member) => ({
        ...member,
        connected: connected.has(member.nodeId),
      })),
      registryFile: registryFilePath(this.options.dataDir),
      stats: this.stats(),
    };
  }

  /** The `/demo-config.json` document (options.serveDemoConfig). */
  demoConfig(): { clusterId: string; signalingUrl: string; token: string } {
    return {
      clusterId: this.settings.clusterId,
      signalingUrl: this.url,
      token: this.options.token,
    };
  }

  /**
   * Stops listening, disconnects everyone (members see a blip and reconnect to the next
   * server on this address) and waits for a registry write in progress. Members keep
   * their states: a restart must not mark anyone down. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const cancel of this.graceTimers.values()) cancel();
    this.graceTimers.clear();
    this.cancelRetirementTimer?.();
    for (const connection of this.connections.values()) connection.cancelJoinTimer?.();
    const closed = new Promise((resolve) => this.io.close(resolve));
    this.http.closeAllConnections();
    await closed;
    await this.queue;
    await this.unlock();
  }

  /**
   * The Socket.IO handshake's check (its `auth`: version, cluster, token), before the
   * connection exists for us: a refused one is answered with `connect_error` carrying the
   * ErrorBody as `data`, closed, and never counted against `maxConnections`.
   */
  private authenticate(socket: Socket, next: (error?: Error) => void): void {
    const refusal = this.handshakeProblem(socket.handshake.auth);
    if (refusal === undefined) {
      next();
      return;
    }
    const error = new Error(refusal.error.message) as Error & { data: ErrorBody };
    error.data = refusal.error;
    next(error);
    // Socket.IO sends the refusal on the next tick; the engine flushes it before closing.
    process.nextTick(() => socket.conn.close());
  }

  private handshakeProblem(auth: unknown): Refusal | undefined {
    const version = (auth as { protocolVersion?: unknown } | null)?.protocolVersion;
    if (version !== PROTOCOL_VERSION) {
      return this.refuse(
        'incompatible_version',
        `protocol version ${String(version)}; this server speaks ${PROTOCOL_VERSION}`,
      );
    }
    const parsed = parseHandshakeAuth(auth);
    if (!parsed.ok) return this.refuse('invalid', parsed.reason);
    const { token, clusterId } = parsed.value;
    if (!timingSafeEqual(digest(token), this.tokenDigest)) {
      return this.refuse(
        'unauthorized',
        token === '' ? 'missing cluster token' : 'wrong cluster token',
      );
    }
    return this.clusterProblem(clusterId);
  }

  private onConnection(socket: Socket): void {
    if (this.closing) {
      socket.disconnect(true);
      return;
    }
    if (this.connections.size >= this.limits.maxConnections) {
      const { error } = this.refuse(
        'server_full',
        `the server has its maximum of ${this.limits.maxConnections} connections`,
      );
      socket.emit(SignalingEvents.protocolError, { error });
      socket.disconnect(true);
      return;
    }
    const connection: Connection = {
      socket,
      events: new TokenBucket(
        this.limits.eventsPerSecond,
        this.limits.eventBurst,
        this.clock.now(),
      ),
      joining: false,
    };
    this.connections.set(socket.id, connection);
    this.armJoinTimer(connection);
    socket.onAny((event: unknown, ...args: unknown[]) => this.onEvent(connection, event, args));
    socket.on('disconnect', () => this.onDisconnect(connection));
  }

  /** Disconnects a connection that has not joined within `joinTimeoutMs`. */
  private armJoinTimer(connection: Connection): void {
    connection.cancelJoinTimer = this.clock.setTimer(this.joinTimeoutMs, () => {
      if (connection.nodeId !== undefined) return;
      // A join in progress (probe, registry write) may still fail: check again later.
      if (connection.joining) {
        this.armJoinTimer(connection);
        return;
      }
      connection.socket.emit(SignalingEvents.protocolError, {
        error: { code: 'not_joined', message: `no join within ${this.joinTimeoutMs} ms` },
      });
      connection.socket.disconnect(true);
    });
  }

  private onDisconnect(connection: Connection): void {
    this.connections.delete(connection.socket.id);
    connection.cancelJoinTimer?.();
    const nodeId = connection.nodeId;
    if (nodeId === undefined || this.bindings.get(nodeId) !== connection) return;
    this.bindings.delete(nodeId);
    if (this.closing) return;
    this.announcePresence(nodeId, false);
    // A member that left keeps its connection until its hand-off ends: nothing to mark down.
    if (findMember(this.current.snapshot, nodeId)?.state === 'left') {
      this.log(`member ${nodeId} (left) disconnected`);
      return;
    }
    this.log(`member ${nodeId} disconnected; grace period ${this.gracePeriodMs} ms`);
    this.armGraceTimer(nodeId);
  }

  /** The single entry point of every incoming event. Never throws. */
  private onEvent(connection: Connection, event: unknown, args: unknown[]): void {
    const last = args[args.length - 1];
    const ack = typeof last === 'function' ? (args.pop() as (reply: unknown) => void) : undefined;
    const known = typeof event === 'string' && CLIENT_EVENTS.has(event);
    const respond: Respond = (reply) => {
      if (ack) ack(reply);
      else if (!reply.ok) {
        connection.socket.emit(SignalingEvents.protocolError, {
          error: reply.error,
          ...(known ? { event } : {}),
        });
      }
    };
    try {
      if (!connection.events.take(this.clock.now())) {
        respond(
          this.refuse('rate_limited', `more than ${this.limits.eventsPerSecond} events per second`),
        );
      } else if (!known) {
        respond(this.refuse('invalid', 'unknown event'));
      } else if (args.length !== 1) {
        respond(this.refuse('invalid', `${event} takes exactly one payload argument`));
      } else if (jsonBytes(args[0]) > this.limits.maxMessageBytes) {
        respond(
          this.refuse('too_large', `${event} is larger than ${this.limits.maxMessageBytes} bytes`),
        );
      } else if (event === SignalingEvents.join) {
        this.onJoin(connection, args[0], respond);
      } else if (event === SignalingEvents.signal) {
        respond(this.onSignal(connection, args[0]));
      } else {
        this.onLeave(connection, args[0], respond);
      }
    } catch (error) {
      this.log(`error handling ${known ? event : 'an unknown event'}: ${String(error)}`);
      respond(this.refuse('unavailable', 'the server failed to handle this message'));
    }
  }

  private onJoin(connection: Connection, payload: unknown, respond: Respond): void {
    const checked = this.checkJoin(connection, payload);
    if (!checked.ok) {
      respond(checked);
      return;
    }
    if (connection.nodeId !== undefined) {
      respond(this.repeatJoin(connection, connection.nodeId, checked.request));
      return;
    }
    connection.joining = true;
    void this.replaceDeadHolder(connection, checked.request)
      .catch((error: unknown) => this.log(`probing failed: ${String(error)}`))
      .then(() =>
        this.serialize(async () => {
          try {
            respond(await this.admit(connection, checked.request));
          } finally {
            connection.joining = false;
          }
        }),
      );
  }

  /**
   * If the requested id is bound to another connection, probes it: a connection that does
   * not answer within `probeTimeoutMs` is dead but not yet noticed (a blip, a reload, a
   * killed process) and is dropped, so the join can proceed. A live one stays, and the
   * join is refused as a duplicate. Runs outside the queue: a probe must not hold up
   * other membership changes.
   */
  private async replaceDeadHolder(connection: Connection, request: JoinRequest): Promise<void> {
    if (request.nodeId === undefined) return;
    const holder = this.bindings.get(request.nodeId);
    if (holder === undefined || holder === connection) return;
    if (request.sessionKey !== undefined && request.sessionKey === holder.sessionKey) return;
    // Only the id's own storage may disturb its connection; `admit` refuses the others.
    const recorded = this.current.secretHashes.get(request.nodeId);
    if (request.memberSecret === undefined || recorded !== secretHash(request.memberSecret)) {
      return;
    }
    const probe: ProbeRequest = { clusterId: this.settings.clusterId };
    const alive = await holder.socket
      .timeout(this.probeTimeoutMs)
      .emitWithAck(SignalingEvents.probe, probe)
      .then(
        () => true,
        () => false,
      );
    if (alive || this.bindings.get(request.nodeId) !== holder) return;
    this.log(`member ${request.nodeId}: its connection did not answer a probe; replaced`);
    this.dropHolder(holder, request.nodeId);
  }

  /** Unbinds and disconnects `holder`; the member gets a grace period until it re-binds. */
  private dropHolder(holder: Connection, nodeId: string): void {
    this.unbind(holder);
    holder.socket.disconnect(true);
    this.armGraceTimer(nodeId);
  }

  /** The checks of a join that need no registry state: shape, cluster. */
  private checkJoin(
    connection: Connection,
    payload: unknown,
  ): { ok: true; request: JoinRequest } | Refusal {
    const parsed = parseJoinRequest(payload);
    if (!parsed.ok) return this.refuse('invalid', parsed.reason);
    const request = parsed.value;
    const clusterProblem = this.clusterProblem(request.clusterId);
    if (clusterProblem) return clusterProblem;
    if (connection.joining) {
      return this.refuse('unavailable', 'a join on this connection is in progress');
    }
    return { ok: true, request };
  }

  /**
   * A join on a connection already joined: the same join again (a client that timed out
   * waiting for the first answer and retried) gets the same answer, so retrying is safe;
   * anything else is refused.
   */
  private repeatJoin(
    connection: Connection,
    nodeId: string,
    request: JoinRequest,
  ): Reply<JoinAccepted> {
    const member = findMember(this.current.snapshot, nodeId);
    const same =
      (request.nodeId === undefined || request.nodeId === nodeId) &&
      (request.memberSecret === undefined || request.memberSecret === connection.memberSecret) &&
      member?.kind === request.kind &&
      member.httpAddress === request.httpAddress;
    if (!same || connection.sessionKey === undefined || connection.memberSecret === undefined) {
      return this.refuse('invalid', `this connection already joined as '${nodeId}'`);
    }
    return {
      ok: true,
      nodeId,
      sessionKey: connection.sessionKey,
      memberSecret: connection.memberSecret,
      registry: this.current.snapshot,
      online: this.connectedMembers(),
    };
  }

  /** Runs inside the queue: decides the node id, commits the registry, binds. */
  private async admit(connection: Connection, request: JoinRequest): Promise<Reply<JoinAccepted>> {
    const nodeId = request.nodeId ?? this.freshNodeId();
    // A join without a secret gets a fresh one, bound to the id if the join registers it.
    const memberSecret = request.memberSecret ?? randomBytes(32).toString('hex');
    const admission = admit(
      this.current,
      {
        nodeId,
        kind: request.kind,
        ...(request.httpAddress === undefined ? {} : { httpAddress: request.httpAddress }),
        secretHash: secretHash(memberSecret),
        secretPresented: request.memberSecret !== undefined,
      },
      this.limits,
    );
    if (!admission.ok) return this.refuse(admission.code, admission.reason);
    const holder = this.bindings.get(nodeId);
    if (holder !== undefined && holder !== connection) {
      if (request.sessionKey === undefined || request.sessionKey !== holder.sessionKey) {
        return this.refuse(
          'duplicate_id',
          `node id '${nodeId}' is in use by a live connection (a duplicated tab, or a second process with the same id?)`,
        );
      }
      // The same client on a new connection; the old one is dead but not noticed yet.
      this.log(`member ${nodeId} moved to a new connection`);
      this.dropHolder(holder, nodeId);
    }
    try {
      await this.commit(admission.state, `member ${nodeId} joined (${request.kind})`);
    } catch (error) {
      if (error instanceof PersistFailed) return this.refuse('unavailable', error.message);
      throw error;
    }
    if (!connection.socket.connected || this.closing) {
      // It went away while we were writing; it is `up` now, so it gets a grace period.
      this.armGraceTimer(nodeId);
      return this.refuse('unavailable', 'the connection closed during the join');
    }
    const sessionKey = this.bind(connection, nodeId);
    connection.memberSecret = memberSecret;
    return {
      ok: true,
      nodeId,
      sessionKey,
      memberSecret,
      registry: this.current.snapshot,
      online: this.connectedMembers(),
    };
  }

  /** Binds `connection` to `nodeId` and announces it online; returns the session key. */
  private bind(connection: Connection, nodeId: string): string {
    const sessionKey = randomBytes(16).toString('hex');
    connection.nodeId = nodeId;
    connection.sessionKey = sessionKey;
    connection.cancelJoinTimer?.();
    this.bindings.set(nodeId, connection);
    this.cancelGraceTimer(nodeId);
    if (!this.signalBuckets.has(nodeId)) {
      this.signalBuckets.set(
        nodeId,
        new TokenBucket(this.limits.signalsPerSecond, this.limits.signalBurst, this.clock.now()),
      );
    }
    this.announcePresence(nodeId, true);
    connection.socket.join(MEMBERS_ROOM);
    return sessionKey;
  }

  private onSignal(connection: Connection, payload: unknown): Reply<SignalRelayed> {
    const parsed = parseSignalRequest(payload);
    if (!parsed.ok) return this.refuse('invalid', parsed.reason);
    const from = connection.nodeId;
    if (from === undefined) return this.refuse('not_joined', 'join before sending signals');
    const { clusterId, to, payload: signal } = parsed.value;
    const clusterProblem = this.clusterProblem(clusterId);
    if (clusterProblem) return clusterProblem;
    if (!this.signalBuckets.get(from)!.take(this.clock.now())) {
      return this.refuse(
        'rate_limited',
        `more than ${this.limits.signalsPerSecond} signals per second`,
      );
    }
    if (to === from) return this.refuse('invalid', 'a member cannot signal itself');
    const member = findMember(this.current.snapshot, to);
    if (member === undefined)
      return this.refuse('unknown_target', `no member '${to}' in this cluster`);
    const target = this.bindings.get(to);
    if (target === undefined) {
      return this.refuse('target_unavailable', `member '${to}' (${member.state}) is not connected`);
    }
    const delivery: SignalDelivery = { clusterId, from, payload: signal };
    target.socket.emit(SignalingEvents.signal, delivery);
    this.signalsRelayed++;
    return { ok: true };
  }

  private onLeave(connection: Connection, payload: unknown, respond: Respond): void {
    const parsed = parseLeaveRequest(payload);
    const nodeId = connection.nodeId;
    const refusal = !parsed.ok
      ? this.refuse('invalid', parsed.reason)
      : (this.clusterProblem(parsed.value.clusterId) ??
        (nodeId === undefined ? this.refuse('not_joined', 'join before leaving') : undefined));
    if (refusal || nodeId === undefined) {
      respond(refusal ?? this.refuse('not_joined', 'join before leaving'));
      return;
    }
    this.serialize(async () => respond(await this.markLeft(connection, nodeId)));
  }

  /** Runs inside the queue. */
  private async markLeft(connection: Connection, nodeId: string): Promise<Reply<LeaveAccepted>> {
    // A takeover may have moved the id to another connection meanwhile.
    if (connection.nodeId !== nodeId) return this.refuse('not_joined', 'no longer joined');
    try {
      await this.commit(markLeft(this.current, nodeId, this.limits), `member ${nodeId} left`);
    } catch (error) {
      if (error instanceof PersistFailed) return this.refuse('unavailable', error.message);
      throw error;
    }
    // The connection stays bound until it disconnects: signals to and from the member are
    // still relayed while it hands its data off, over links it may have to open first
    // (a new replica it never spoke to). Its disconnect starts no grace period (onDisconnect).
    return { ok: true, epoch: this.current.snapshot.epoch };
  }

  /** Undoes `bind` (leave, takeover) and announces the member offline. */
  private unbind(connection: Connection): void {
    const nodeId = connection.nodeId;
    connection.nodeId = undefined;
    connection.sessionKey = undefined;
    connection.memberSecret = undefined;
    connection.socket.leave(MEMBERS_ROOM);
    if (nodeId !== undefined && this.bindings.get(nodeId) === connection) {
      this.bindings.delete(nodeId);
      this.announcePresence(nodeId, false);
    }
  }

  private announcePresence(nodeId: string, online: boolean): void {
    const update: PresenceUpdate = { clusterId: this.settings.clusterId, nodeId, online };
    this.io.to(MEMBERS_ROOM).emit(SignalingEvents.presence, update);
  }

  private armGraceTimer(nodeId: string): void {
    if (this.closing || this.graceTimers.has(nodeId)) return;
    const cancel = this.clock.setTimer(this.gracePeriodMs, () => {
      this.graceTimers.delete(nodeId);
      this.serialize(() => this.markDown(nodeId));
    });
    this.graceTimers.set(nodeId, cancel);
  }

  private cancelGraceTimer(nodeId: string): void {
    this.graceTimers.get(nodeId)?.();
    this.graceTimers.delete(nodeId);
  }

  private async markDown(nodeId: string): Promise<void> {
    // It may have re-joined, or left, since the timer was armed.
    if (this.bindings.has(nodeId) || findMember(this.current.snapshot, nodeId)?.state !== 'up') {
      return;
    }
    try {
      await this.commit(
        markDown(this.current, nodeId, this.clock.wallClockMs(), this.limits),
        `member ${nodeId} down after ${this.gracePeriodMs} ms`,
      );
    } catch (error) {
      if (!(error instanceof PersistFailed)) throw error;
      // Still up and absent: try again after another grace period.
      this.armGraceTimer(nodeId);
    }
  }

  /**
   * Arms one timer for the next retirement due, at least `minDelayMs` from now (a failed
   * write is retried after a grace period, not in a loop). Re-armed after every change.
   */
  private armRetirementTimer(minDelayMs: number): void {
    this.cancelRetirementTimer?.();
    this.cancelRetirementTimer = undefined;
    const dueMs = nextRetirementMs(this.current, this.retirementPeriodMs);
    if (this.closing || dueMs === undefined) return;
    const delayMs = Math.max(minDelayMs, dueMs - this.clock.wallClockMs());
    this.cancelRetirementTimer = this.clock.setTimer(delayMs, () => {
      this.cancelRetirementTimer = undefined;
      this.serialize(() => this.retire());
    });
  }

  private async retire(): Promise<void> {
    const next = retireDownMembers(
      this.current,
      this.clock.wallClockMs(),
      this.retirementPeriodMs,
      this.limits,
    );
    const retired = [...this.current.downSinceMs.keys()].filter((id) => !next.downSinceMs.has(id));
    if (retired.length === 0) {
      // Not due after all (the wall clock moved back): wait for it again.
      this.armRetirementTimer(0);
      return;
    }
    try {
      await this.commit(
        next,
        `members ${retired.join(', ')} retired after ${this.retirementPeriodMs} ms down`,
      );
    } catch (error) {
      if (!(error instanceof PersistFailed)) throw error;
      this.armRetirementTimer(this.gracePeriodMs);
      return;
    }
    for (const nodeId of retired) this.signalBuckets.delete(nodeId);
  }

  /**
   * Persists `next` and only then makes it current and pushes it to the members. Does
   * nothing if `next` is the current snapshot. Throws PersistFailed, leaving all as it was.
   */
  private async commit(next: RegistryState, what: string): Promise<void> {
    if (next === this.current) return;
    try {
      await saveRegistry(this.options.dataDir, next);
    } catch (error) {
      this.persistFailures++;
      this.log(`could not persist the registry (${what}): ${String(error)}`);
      throw new PersistFailed(`the registry could not be written; try again later`);
    }
    const delta = registryDelta(this.current.snapshot, next.snapshot);
    this.current = next;
    this.log(`${what}; epoch ${next.snapshot.epoch}`);
    this.io.to(MEMBERS_ROOM).emit(SignalingEvents.registry, delta);
    this.armRetirementTimer(0);
  }

  /** Queues a membership change behind the previous ones; failures are logged, not thrown. */
  private serialize(change: () => Promise<void>): void {
    this.queue = this.queue.then(change).catch((error: unknown) => {
      this.log(`membership change failed: ${String(error)}`);
    });
  }

  private clusterProblem(clusterId: string): Refusal | undefined {
    if (clusterId === this.settings.clusterId) return undefined;
    return this.refuse(
      'wrong_cluster',
      `this server hosts cluster '${this.settings.clusterId}', not '${clusterId}'`,
    );
  }

  private freshNodeId(): string {
    for (;;) {
      const nodeId = `n${randomBytes(6).toString('hex')}`;
      if (findMember(this.current.snapshot, nodeId) === undefined) return nodeId;
    }
  }

  private refuse(code: SignalingErrorCode, message: string): Refusal {
    this.refused[code] = (this.refused[code] ?? 0) + 1;
    return { ok: false, error: { code, message } };
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** What the registry keeps of a member secret. */
function secretHash(memberSecret: string): string {
  return digest(memberSecret).toString('hex');
}

/** JSON size of a payload; what cannot be serialized counts as too large. */
function jsonBytes(value: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8');
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

function validateOptions(options: SignalingServerOptions, limits: SignalingLimits): void {
  if (typeof options.token !== 'string' || options.token.length === 0) {
    throw new RangeError('a cluster token is required (--token or MESHKV_TOKEN)');
  }
  if (Buffer.byteLength(options.token) > MAX_TOKEN_BYTES) {
    throw new RangeError(`the cluster token is longer than ${MAX_TOKEN_BYTES} bytes`);
  }
  const positive: [string, number | undefined][] = [
    ['gracePeriodMs', options.gracePeriodMs],
    ['retirementPeriodMs', options.retirementPeriodMs],
    ['joinTimeoutMs', options.joinTimeoutMs],
    ['probeTimeoutMs', options.probeTimeoutMs],
    ['pingIntervalMs', options.pingIntervalMs],
    ['pingTimeoutMs', options.pingTimeoutMs],
    ...Object.entries(limits),
  ];
  for (const [name, value] of positive) {
    if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
      throw new RangeError(`${name} must be a positive number, not ${value}`);
    }
  }
  if (limits.maxMembers > MAX_MEMBERS) {
    throw new RangeError(`maxMembers must be at most ${MAX_MEMBERS}, the ring's limit`);
  }
  if (limits.maxFrameBytes < limits.maxMessageBytes) {
    throw new RangeError('maxFrameBytes must be at least maxMessageBytes');
  }
}
