/**
 * The signaling client: a member's connection to the signaling server and registry
 * (protocol in `signaling-protocol.ts`). Isomorphic: runs in browsers and in Node.
 *
 * Contract:
 * - `SignalingClient.connect(options)` resolves once the server accepted the join, with
 *   the assigned node id, its member secret and the registry; it rejects with a
 *   `SignalingError` (stable `code`) if the server refuses (in the handshake: the token,
 *   cluster or version; or the join), or with `timeout` after `connectTimeoutMs`.
 * - Identity: a node id is bound to the member secret issued at its first join
 *   (`memberSecret`). To use the id again later (a restarted process, a reloaded tab),
 *   pass both `nodeId` and `memberSecret`; without the secret, or with another, the join
 *   is refused with `wrong_secret`. Keep the secret with the node's data, written durably
 *   before the id is used for anything durable: a node whose data is lost joins under a
 *   new id.
 * - Afterwards the client reconnects by itself whenever the connection drops (server
 *   restart, network blip) and re-joins with the same node id, so the server sees a
 *   blip, not a new member. While it is reconnecting `state` is `'reconnecting'` and
 *   `sendSignal` rejects with `disconnected`. If a re-join is refused for good
 *   (`unauthorized`, `duplicate_id`, `wrong_secret`, `wrong_cluster`, ...), in the
 *   handshake or the join, the client emits `error` and then `closed`.
 * - `registry` fires with each new registry (a pushed change, or a different one learnt on
 *   a re-join); never for the one `connect` resolved with. `signal` fires for each signal
 *   relayed to us, in order; signals that arrive while nobody listens (from the join on,
 *   until the first `signal` listener) are held, at most 256, and go to that listener
 *   after `on` returns. `error` events nobody listens to are dropped.
 * - `online` is the set of members connected to the server now (from the join reply, then
 *   kept by `presence` updates). `presence` fires when another member comes online
 *   (joins, re-joins after a reload or a server restart) or goes offline. While this
 *   client is reconnecting it hears nothing; on re-join it reports the differences.
 * - Every message from the server is validated; malformed ones are dropped and counted in
 *   `stats().malformedReceived`, never thrown.
 * - Handlers run one at a time from the socket's event loop turn. A handler that throws
 *   does not disturb the client; the exception is rethrown asynchronously (as an
 *   uncaught error, like an EventEmitter's listener bug).
 */
import { io, type Socket } from 'socket.io-client';
import {
  applyRegistryDelta,
  type ErrorBody,
  errorBodyProblem,
  type HandshakeAuth,
  idProblem,
  type JoinAccepted,
  type JoinRequest,
  joinAcceptedProblem,
  type LeaveAccepted,
  leaveAcceptedProblem,
  type MemberKind,
  PROTOCOL_VERSION,
  parsePresenceUpdate,
  parseProtocolErrorNotice,
  parseRegistryDelta,
  parseReply,
  parseSignalDelivery,
  type RegistrySnapshot,
  type SignalingErrorCode,
  SignalingEvents,
  type SignalPayload,
  type SignalRelayed,
  signalRelayedProblem,
} from './signaling-protocol.ts';

/** A failure with a stable machine-readable `code` and a human-readable message. */
export class SignalingError extends Error {
  override readonly name = 'SignalingError';
  constructor(
    readonly code: SignalingErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface SignalingClientOptions {
  /** Server URL, e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  /** The cluster token. */
  readonly token: string;
  readonly clusterId: string;
  /** The node id to register or reclaim; omit to have the server assign one. */
  readonly nodeId?: string;
  /**
   * The member secret `nodeId` got at its first join (`client.memberSecret` then): needed
   * to use a registered id again. Only with `nodeId`.
   */
  readonly memberSecret?: string;
  readonly kind: MemberKind;
  /** A Node peer's HTTP API address, `http://host:port`. */
  readonly httpAddress?: string;
  /** Deadline for `connect` to be joined. Default 15 000. */
  readonly connectTimeoutMs?: number;
  /** Deadline for each acknowledgement (join, signal, leave). Default 10 000. */
  readonly requestTimeoutMs?: number;
  /** First reconnection delay; doubles up to `reconnectDelayMaxMs`. Default 250. */
  readonly reconnectDelayMs?: number;
  /** Default 5 000. */
  readonly reconnectDelayMaxMs?: number;
}

/**
 * `left`: the member left the cluster (`leave()`), and its connection still relays signals
 * and registry pushes until `close()` (a disconnect closes it: a left member never rejoins).
 */
export type SignalingClientState = 'joined' | 'left' | 'reconnecting' | 'closed';

export interface SignalingClientEvents {
  /** A newer registry (its epoch differs from the last one seen). */
  registry(registry: RegistrySnapshot): void;
  /** A signal from member `from`. */
  signal(from: string, payload: SignalPayload): void;
  /** Another member's connection to the server came (`online`) or went. */
  presence(nodeId: string, online: boolean): void;
  /** The connection state changed. */
  state(state: SignalingClientState): void;
  /** An asynchronous problem: a refused re-join, an error notice from the server. */
  error(error: SignalingError): void;
}

export interface SignalingClientStats {
  /** Server messages that failed validation and were dropped. */
  readonly malformedReceived: number;
  /** Successful joins after the first one. */
  readonly rejoins: number;
  /** Signals received before any `signal` listener, held for the first one. */
  readonly heldSignals: number;
}

/**
 * Signals held while nobody listens (between the join and the mesh's subscription): the
 * first offers to a new member arrive then. Beyond the bound the oldest go.
 */
const MAX_HELD_SIGNALS = 256;

const DEFAULT_CONNECT_TIMEOUT_MS = 15_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const DEFAULT_RECONNECT_DELAY_MS = 250;
const DEFAULT_RECONNECT_DELAY_MAX_MS = 5_000;

/** Error codes after which re-joining again cannot succeed. */
const FATAL_JOIN_CODES: ReadonlySet<SignalingErrorCode> = new Set([
  'unauthorized',
  'wrong_cluster',
  'incompatible_version',
  'duplicate_id',
  'wrong_secret',
  'cluster_full',
  'invalid',
]);

type Listeners = { [E in keyof SignalingClientEvents]: Set<SignalingClientEvents[E]> };

export class SignalingClient {
  /** The node id the server assigned or confirmed; fixed for the client's lifetime. */
  readonly nodeId: string;
  /**
   * The secret `nodeId` is bound to (issued at its first join, or the one passed in):
   * keep it with the node's data, and pass it with `nodeId` to join as this node again.
   */
  readonly memberSecret: string;
  readonly clusterId: string;
  private currentRegistry: RegistrySnapshot;
  private onlineMembers: Set<string>;
  private currentState: SignalingClientState = 'joined';
  private sessionKey: string;
  private readonly listeners: Listeners = {
    registry: new Set(),
    signal: new Set(),
    presence: new Set(),
    state: new Set(),
    error: new Set(),
  };
  private malformedReceived = 0;
  private rejoins = 0;
  /** Valid signal deliveries not yet emitted (no listener yet, or a flush is pending). */
  private readonly heldSignals: { from: string; payload: SignalPayload }[] = [];
  /** Pending re-join retry or delayed reconnection. */
  private retryTimer: ReturnType<typeof setTimeout> | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly options: SignalingClientOptions,
    accepted: JoinAccepted,
  ) {
    this.nodeId = accepted.nodeId;
    this.memberSecret = accepted.memberSecret;
    this.clusterId = options.clusterId;
    this.sessionKey = accepted.sessionKey;
    this.currentRegistry = accepted.registry;
    this.onlineMembers = new Set(accepted.online);
    socket.on(SignalingEvents.registry, (update: unknown) => this.onRegistry(update));
    socket.on(SignalingEvents.signal, (delivery: unknown) => this.onSignal(delivery));
    socket.on(SignalingEvents.presence, (update: unknown) => this.onPresence(update));
    // Answering proves this connection alive, so nobody can take our id over.
    socket.on(SignalingEvents.probe, (_request: unknown, ack: unknown) => {
      if (typeof ack === 'function') ack({});
    });
    socket.on(SignalingEvents.protocolError, (notice: unknown) => this.onProtocolError(notice));
    socket.on('disconnect', (reason) => this.onDisconnect(reason));
    socket.on('connect_error', (error) => this.onConnectError(error));
    socket.on('connect', () => this.rejoin());
  }

  /** Connects, joins and resolves with a joined client (see the contract above). */
  static async connect(options: SignalingClientOptions): Promise<SignalingClient> {
    const problem =
      idProblem(options.clusterId, 'clusterId') ??
      (options.nodeId === undefined ? undefined : idProblem(options.nodeId, 'nodeId')) ??
      (options.memberSecret === undefined
        ? undefined
        : (idProblem(options.memberSecret, 'memberSecret') ??
          (options.nodeId === undefined
            ? 'memberSecret goes with the nodeId it was issued for'
            : undefined)));
    if (problem) throw new SignalingError('invalid', problem);
    const auth: HandshakeAuth = {
      protocolVersion: PROTOCOL_VERSION,
      clusterId: options.clusterId,
      token: options.token,
    };
    const socket = io(options.url, {
      auth,
      transports: ['websocket'],
      reconnection: true,
      reconnectionDelay: options.reconnectDelayMs ?? DEFAULT_RECONNECT_DELAY_MS,
      reconnectionDelayMax: options.reconnectDelayMaxMs ?? DEFAULT_RECONNECT_DELAY_MAX_MS,
      // Listeners go on before the first connection attempt.
      autoConnect: false,
      forceNew: true,
    });
    // A signal may come before the join's answer (the server relays to us once we are
    // bound, which is before it answers) or before the client exists: keep it.
    const early: unknown[] = [];
    const holdEarly = (delivery: unknown) => {
      if (early.length === MAX_HELD_SIGNALS) early.shift();
      early.push(delivery);
    };
    socket.on(SignalingEvents.signal, holdEarly);
    try {
      const accepted = await firstJoin(socket, options);
      socket.off(SignalingEvents.signal, holdEarly);
      const client = new SignalingClient(socket, options, accepted);
      for (const delivery of early) client.onSignal(delivery);
      return client;
    } catch (error) {
      socket.removeAllListeners();
      socket.disconnect();
      throw error;
    }
  }

  /** The latest registry seen. */
  get registry(): RegistrySnapshot {
    return this.currentRegistry;
  }

  /** Members connected to the server now, as last heard (see the contract above). */
  get online(): ReadonlySet<string> {
    return this.onlineMembers;
  }

  get state(): SignalingClientState {
    return this.currentState;
  }

  stats(): SignalingClientStats {
    return {
      malformedReceived: this.malformedReceived,
      rejoins: this.rejoins,
      heldSignals: this.heldSignals.length,
    };
  }

  /** Subscribes a handler; returns a function that unsubscribes it. */
  on<E extends keyof SignalingClientEvents>(
    event: E,
    handler: SignalingClientEvents[E],
  ): () => void {
    const set = this.listeners[event] as Set<SignalingClientEvents[E]>;
    set.add(handler);
    if (event === 'signal' && this.heldSignals.length > 0 && set.size === 1) {
      // Delivered after `on` returns, in arrival order (later ones queue behind them).
      queueMicrotask(() => this.flushHeldSignals());
    }
    return () => set.delete(handler);
  }

  /**
   * Relays `payload` to member `to`. Resolves once the server handed it to the target's
   * connection (not a delivery receipt). Rejects with a `SignalingError`: `closed`,
   * `disconnected`, `unknown_target`, `target_unavailable`, `too_large`, `rate_limited`,
   * `invalid`, `timeout`. Nothing is queued while disconnected.
   */
  async sendSignal(to: string, payload: SignalPayload): Promise<void> {
    this.assertJoined();
    await this.request<SignalRelayed>(
      SignalingEvents.signal,
      { clusterId: this.clusterId, to, payload },
      signalRelayedProblem,
    );
  }

  /**
   * Leaves the cluster gracefully: the server marks this member `left`, and the client is
   * `left`: it still sends and receives signals (and registry pushes) until `close()`, so
   * the node can open the links its hand-off needs to members it never spoke to. A
   * disconnect then closes it. Rejects (and stays joined) if the server refused;
   * `unavailable` is worth retrying. Idempotent once left.
   */
  async leave(): Promise<void> {
    if (this.currentState === 'left') return;
    this.assertJoined();
    await this.request<LeaveAccepted>(
      SignalingEvents.leave,
      { clusterId: this.clusterId },
      leaveAcceptedProblem,
    );
    this.setState('left');
  }

  /**
   * Disconnects without leaving: the server keeps the member `up` for its grace period,
   * then marks it `down`. Idempotent.
   */
  async close(): Promise<void> {
    if (this.currentState === 'closed') return;
    clearTimeout(this.retryTimer);
    this.socket.disconnect();
    this.setState('closed');
  }

  private isClosed(): boolean {
    return this.currentState === 'closed';
  }

  private assertJoined(): void {
    if (this.currentState === 'closed') throw new SignalingError('closed', 'the client is closed');
    const state = this.currentState;
    if ((state !== 'joined' && state !== 'left') || !this.socket.connected) {
      throw new SignalingError('disconnected', 'not connected to the signaling server now');
    }
  }

  private async request<T>(
    event: string,
    payload: object,
    problem: (fields: Record<string, unknown>) => string | undefined,
  ): Promise<T> {
    const reply = await emitWithAck(
      this.socket,
      event,
      payload,
      this.options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    );
    const parsed = parseReply<T>(reply, problem);
    if (!parsed.ok) {
      this.malformedReceived++;
      throw new SignalingError('invalid', `malformed ${event} reply: ${parsed.reason}`);
    }
    if (!parsed.value.ok) throw errorFromBody(parsed.value.error);
    return parsed.value;
  }

  private async rejoin(): Promise<void> {
    clearTimeout(this.retryTimer);
    if (this.currentState === 'closed') return;
    try {
      const accepted = await this.request<JoinAccepted>(
        SignalingEvents.join,
        joinRequest(
          { ...this.options, nodeId: this.nodeId, memberSecret: this.memberSecret },
          this.sessionKey,
        ),
        joinAcceptedProblem,
      );
      // close() may have run while the join was in flight.
      if (this.isClosed()) return;
      this.sessionKey = accepted.sessionKey;
      this.rejoins++;
      this.setState('joined');
      this.replaceRegistry(accepted.registry);
      this.acceptOnline(accepted.online);
    } catch (error) {
      if (this.isClosed()) return;
      const failure =
        error instanceof SignalingError ? error : new SignalingError('invalid', String(error));
      this.emit('error', failure);
      if (FATAL_JOIN_CODES.has(failure.code)) {
        await this.close();
      } else if (this.socket.connected) {
        // Transient (unavailable, rate_limited, timeout): try again while connected.
        this.retryTimer = setTimeout(
          () => void this.rejoin(),
          this.options.reconnectDelayMs ?? DEFAULT_RECONNECT_DELAY_MS,
        );
      }
    }
  }

  private onDisconnect(reason: Socket.DisconnectReason): void {
    if (this.currentState === 'closed') return;
    if (this.currentState === 'left') {
      // A rejoin would make the member up again: a left member's connection ends here.
      void this.close();
      return;
    }
    this.setState('reconnecting');
    // Socket.IO reconnects by itself except after a server-side disconnect (e.g.
    // `server_full`); wait the longest backoff then, so a full server is not hammered.
    if (reason === 'io server disconnect') {
      this.retryTimer = setTimeout(
        () => this.socket.connect(),
        this.options.reconnectDelayMaxMs ?? DEFAULT_RECONNECT_DELAY_MAX_MS,
      );
    }
  }

  /**
   * A reconnection refused in the handshake (the token was rotated, another cluster or
   * version now listens here) is final: the handshake's checks do not change while a
   * server runs, and Socket.IO does not retry them. Other connection errors (the server
   * is unreachable) carry no refusal, and Socket.IO retries them.
   */
  private onConnectError(error: Error): void {
    const refusal = handshakeRefusal(error);
    if (refusal === undefined || this.isClosed()) return;
    this.emit('error', refusal);
    void this.close();
  }

  private onRegistry(update: unknown): void {
    const parsed = parseRegistryDelta(update);
    if (!parsed.ok) {
      this.malformedReceived++;
      return;
    }
    const next = applyRegistryDelta(this.currentRegistry, parsed.value);
    if (!next.ok) {
      // A delta we cannot apply means our copy is off; a re-join brings the whole registry.
      this.malformedReceived++;
      this.socket.disconnect();
      this.socket.connect();
      return;
    }
    this.currentRegistry = next.value;
    this.emit('registry', next.value);
  }

  /**
   * A re-join's registry is authoritative (a server restored from an older file may even
   * have a lower epoch): it replaces ours, and is reported if it differs.
   */
  private replaceRegistry(registry: RegistrySnapshot): void {
    const same = JSON.stringify(registry) === JSON.stringify(this.currentRegistry);
    this.currentRegistry = registry;
    if (!same) this.emit('registry', registry);
  }

  /** Replaces the online set with a re-join's, reporting each difference. */
  private acceptOnline(online: readonly string[]): void {
    const next = new Set(online);
    const previous = this.onlineMembers;
    this.onlineMembers = next;
    for (const nodeId of previous) {
      if (!next.has(nodeId) && nodeId !== this.nodeId) this.emit('presence', nodeId, false);
    }
    for (const nodeId of next) {
      if (!previous.has(nodeId) && nodeId !== this.nodeId) this.emit('presence', nodeId, true);
    }
  }

  private onPresence(update: unknown): void {
    const parsed = parsePresenceUpdate(update);
    if (!parsed.ok || parsed.value.clusterId !== this.clusterId) {
      this.malformedReceived++;
      return;
    }
    const { nodeId, online } = parsed.value;
    if (online) this.onlineMembers.add(nodeId);
    else this.onlineMembers.delete(nodeId);
    if (nodeId !== this.nodeId) this.emit('presence', nodeId, online);
  }

  private onSignal(delivery: unknown): void {
    const parsed = parseSignalDelivery(delivery);
    if (!parsed.ok || parsed.value.clusterId !== this.clusterId) {
      this.malformedReceived++;
      return;
    }
    const { from, payload } = parsed.value;
    if (this.listeners.signal.size > 0 && this.heldSignals.length === 0) {
      this.emit('signal', from, payload);
      return;
    }
    if (this.heldSignals.length === MAX_HELD_SIGNALS) this.heldSignals.shift();
    this.heldSignals.push({ from, payload });
  }

  private flushHeldSignals(): void {
    if (this.listeners.signal.size === 0) return;
    for (const { from, payload } of this.heldSignals.splice(0)) this.emit('signal', from, payload);
  }

  private onProtocolError(notice: unknown): void {
    const parsed = parseProtocolErrorNotice(notice);
    if (!parsed.ok) {
      this.malformedReceived++;
      return;
    }
    this.emit('error', errorFromBody(parsed.value.error));
  }

  private setState(state: SignalingClientState): void {
    if (this.currentState === state) return;
    this.currentState = state;
    this.emit('state', state);
  }

  private emit<E extends keyof SignalingClientEvents>(
    event: E,
    ...args: Parameters<SignalingClientEvents[E]>
  ): void {
    for (const handler of [...this.listeners[event]]) {
      try {
        (handler as (...a: Parameters<SignalingClientEvents[E]>) => void)(...args);
      } catch (error) {
        setTimeout(() => {
          throw error;
        }, 0);
      }
    }
  }
}

function joinRequest(options: SignalingClientOptions, sessionKey: string | undefined): JoinRequest {
  return {
    clusterId: options.clusterId,
    kind: options.kind,
    ...(options.nodeId === undefined ? {} : { nodeId: options.nodeId }),
    ...(options.httpAddress === undefined ? {} : { httpAddress: options.httpAddress }),
    ...(sessionKey === undefined ? {} : { sessionKey }),
    ...(options.memberSecret === undefined ? {} : { memberSecret: options.memberSecret }),
  };
}

function errorFromBody(body: ErrorBody): SignalingError {
  return new SignalingError(body.code, body.message);
}

/** The server's refusal in a `connect_error` (its `data`), or undefined for other errors. */
function handshakeRefusal(error: Error): SignalingError | undefined {
  const data = (error as Error & { data?: unknown }).data;
  if (data === undefined || errorBodyProblem(data) !== undefined) return undefined;
  return errorFromBody(data as ErrorBody);
}

/** Emits `event` and resolves with the acknowledgement, or rejects with `timeout`. */
function emitWithAck(
  socket: Socket,
  event: string,
  payload: object,
  timeoutMs: number,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    socket.timeout(timeoutMs).emit(event, payload, (error: Error | null, reply: unknown) => {
      if (error) {
        reject(new SignalingError('timeout', `no answer to ${event} within ${timeoutMs} ms`));
      } else {
        resolve(reply);
      }
    });
  });
}

/**
 * Connects and performs the first join. Connection errors are retried by Socket.IO until
 * the deadline; a refused join or an error notice fails at once (a wrong token will not
 * become right).
 */
function firstJoin(socket: Socket, options: SignalingClientOptions): Promise<JoinAccepted> {
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    let lastProblem = 'no connection yet';
    let settled = false;
    const finish = (error: SignalingError | undefined, accepted?: JoinAccepted) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      socket.off('connect', onConnect);
      socket.off('connect_error', onConnectError);
      socket.off(SignalingEvents.protocolError, onProtocolError);
      if (error) reject(error);
      else resolve(accepted!);
    };
    const deadline = setTimeout(
      () =>
        finish(
          new SignalingError(
            'timeout',
            `not joined to ${options.url} within ${connectTimeoutMs} ms (${lastProblem})`,
          ),
        ),
      connectTimeoutMs,
    );
    const onConnectError = (error: Error) => {
      // Refused in the handshake (token, cluster, version): no retry will be accepted.
      const refusal = handshakeRefusal(error);
      if (refusal) finish(refusal);
      else lastProblem = error.message;
    };
    // E.g. `server_full` just before the server disconnects: no join will follow.
    const onProtocolError = (notice: unknown) => {
      const parsed = parseProtocolErrorNotice(notice);
      if (parsed.ok) finish(errorFromBody(parsed.value.error));
    };
    const onConnect = async () => {
      try {
        const reply = await emitWithAck(
          socket,
          SignalingEvents.join,
          joinRequest(options, undefined),
          requestTimeoutMs,
        );
        const parsed = parseReply<JoinAccepted>(reply, joinAcceptedProblem);
        if (!parsed.ok) {
          finish(new SignalingError('invalid', `malformed join reply: ${parsed.reason}`));
        } else if (!parsed.value.ok) {
          finish(errorFromBody(parsed.value.error));
        } else {
          finish(undefined, parsed.value);
        }
      } catch (error) {
        // A timed-out join on a live connection: wait for a reconnect or the deadline.
        lastProblem = error instanceof Error ? error.message : String(error);
      }
    };
    socket.on('connect', onConnect);
    socket.on('connect_error', onConnectError);
    socket.on(SignalingEvents.protocolError, onProtocolError);
    socket.connect();
  });
}
