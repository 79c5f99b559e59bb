/**
 * The WebRTC mesh: the Transport contract over one ordered, reliable data channel per
 * peer pair (plus an unordered one for heartbeats), negotiated through a `SignalChannel`.
 * Runs unchanged in browsers (native RTCPeerConnection) and in Node (node-datachannel's
 * polyfill, injected by `webrtc.node.ts`).
 *
 * Links:
 * - Opened on demand by `send` (or by the peer), closed after `linkIdleTimeoutMs` without
 *   frames either way, and at most `maxLinks` at once (the least recently used idle link
 *   is closed to make room; with none idle, the new frame is dropped and counted).
 * - Glare: one side of a pair always creates the offer: the one with the higher
 *   `offerRank`, and between equal ranks the smaller id. The other side asks for one with
 *   a `dial` signal. Every signal carries its sender's rank; until a side has heard the
 *   other's, it takes it for its own (the id decides), and a side that learns from a dial
 *   or an offer that the roles are the other way round answers with what its role sends
 *   (an offer, or a dial), once. Each attempt has a random session id; signals of another
 *   session are stale and ignored, and a new offer replaces whatever link existed (the
 *   initiator restarted or gave up on it).
 * - Failure detection: Chromium notices a dead peer only after 5-15 s, so both ends send
 *   a HEARTBEAT every `heartbeatIntervalMs` on the control channel (never behind bulk
 *   data), and a link that gave no sign of life for `peerTimeoutMs` is reported down.
 *   Signs of life: a valid message on either channel, or our `bufferedAmount` falling (the
 *   peer's SCTP is acknowledging data); a silent link whose connection still receives bytes
 *   (its RTC stack's count) gets up to `transportAliveTimeoutMs`, since the peer's messages
 *   may be waiting behind a busy thread. Liveness holds on a loaded machine: time our own
 *   event loop spent stalled (a timer firing late with no callback in between) is not
 *   blamed on the peer, and a timeout is judged one macrotask after the tick that saw it,
 *   once the data channel callbacks that were pending behind the tick have run. The same
 *   holds for `connectTimeoutMs`. A failed link that was used within
 *   `linkIdleTimeoutMs` is re-signalled with exponential backoff
 *   (`retryDelayMinMs`..`retryDelayMaxMs`), and at once when the peer rejoins signaling
 *   (so is an attempt still connecting then: its signals went to nobody).
 *   Frames queued for a failed attempt or a link that went down get one retry (the queue
 *   waits for the next connection, a chunked frame cut short starting over at its first
 *   chunk); then they, and frames sent while the link backs off, are dropped and counted.
 *
 * Sending: frames are queued per peer (at most `maxQueuedBytesPerPeer`) and flushed in a
 * microtask, so every frame queued in one event loop turn goes out together, packed into
 * as few messages as fit (see wire.ts). The channel's `bufferedAmount` is kept under
 * `bufferedHighWaterBytes`: above it, sending waits for `bufferedamountlow` or, since
 * some stacks never fire it, for a poll every `bufferedAmountPollMs`.
 *
 * Events (frame, peerUp, peerDown) are delivered in order from microtasks, never from
 * inside `send`. A handler that throws does not disturb the mesh: the exception is
 * rethrown asynchronously, as an uncaught error.
 */
import { RtcPeer, type RtcPeerConnectionClass } from './rtc-peer.ts';
import type { SignalChannel } from './signal-channel.ts';
import {
  checkFrameBytes,
  DEFAULT_MAX_FRAME_BYTES,
  type LinkStats,
  type PeerId,
  type Transport,
  type TransportHandlers,
} from './transport.ts';
import {
  CLOSE_MESSAGE,
  HEARTBEAT_MESSAGE,
  Inbox,
  isHeartbeatMessage,
  MIN_MESSAGE_BYTES,
  Outbox,
} from './wire.ts';

export interface WebRtcMeshOptions {
  readonly localId: PeerId;
  readonly signal: SignalChannel;
  /**
   * The RTCPeerConnection implementation. Default: the global one (browsers); Node peers
   * pass node-datachannel's (`createNodeWebRtcMesh` in `webrtc.node.ts` does).
   */
  readonly RTCPeerConnection?: RtcPeerConnectionClass;
  /** Send a heartbeat this often (on the control channel). Default 500. */
  readonly heartbeatIntervalMs?: number;
  /**
   * Report a link down after this long without a sign of life (a valid message, or the
   * channel draining), not counting time our own event loop was stalled. Default 10 000:
   * Chromium was seen to deliver nothing for 2.4 s on a link carrying 24 MiB each way on
   * an idle machine (two meshes in one page), and a 2 s default reported such live links
   * down in about one run in four of the bulk tests.
   */
  readonly peerTimeoutMs?: number;
  /**
   * While the connection still receives bytes (the peer's RTC stack answers; its messages
   * may be waiting behind a busy thread, or SCTP is retransmitting), a link without a sign
   * of life is reported down only after this long. Default 30 000.
   */
  readonly transportAliveTimeoutMs?: number;
  /** Give up on a connection attempt after this long. Default 5 000. */
  readonly connectTimeoutMs?: number;
  /** First delay before re-signalling a failed link; doubles per failure. Default 250. */
  readonly retryDelayMinMs?: number;
  /** Default 5 000. */
  readonly retryDelayMaxMs?: number;
  /** Close a link after this long without frames either way. Default 60 000. */
  readonly linkIdleTimeoutMs?: number;
  /** Links connecting or up at once. Default 64. */
  readonly maxLinks?: number;
  /**
   * Largest frame sent (a longer one makes `send` throw) or accepted. Default
   * DEFAULT_MAX_FRAME_BYTES (16 MiB).
   */
  readonly maxFrameBytes?: number;
  /** Bound on frames queued for one peer and not yet handed to its channel. Default 64 MiB. */
  readonly maxQueuedBytesPerPeer?: number;
  /** Largest data channel message. Default 64 KiB (Chromium's limit is 256 KiB). */
  readonly maxMessageBytes?: number;
  /** Stop handing messages to a channel while its `bufferedAmount` is above. Default 1 MiB. */
  readonly bufferedHighWaterBytes?: number;
  /** Fallback poll of `bufferedAmount` while waiting for it to drain. Default 10. */
  readonly bufferedAmountPollMs?: number;
  /** Peers whose counters are kept after their link is gone. Default 4 096. */
  readonly maxTrackedPeers?: number;
  /** Passed to RTCPeerConnection. Default `{ iceServers: [] }`: host candidates only. */
  readonly rtcConfig?: RTCConfiguration;
  /**
   * Which side of a link makes the offer: the higher rank, then the smaller id (an integer,
   * 0 to MAX_OFFER_RANK). Default 0; node-datachannel's mesh takes 1 (webrtc.node.ts), for
   * a stack that connects as the offering side but not always as the answering one.
   */
  readonly offerRank?: number;
}

/** The highest `offerRank`. */
export const MAX_OFFER_RANK = 9;

type Settings = Required<Omit<WebRtcMeshOptions, 'localId' | 'signal' | 'RTCPeerConnection'>>;

const DEFAULTS: Settings = {
  heartbeatIntervalMs: 500,
  peerTimeoutMs: 10_000,
  transportAliveTimeoutMs: 30_000,
  connectTimeoutMs: 5_000,
  retryDelayMinMs: 250,
  retryDelayMaxMs: 5_000,
  linkIdleTimeoutMs: 60_000,
  maxLinks: 64,
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  maxQueuedBytesPerPeer: 64 * 1024 * 1024,
  maxMessageBytes: 64 * 1024,
  bufferedHighWaterBytes: 1024 * 1024,
  bufferedAmountPollMs: 10,
  maxTrackedPeers: 4_096,
  rtcConfig: { iceServers: [] },
  offerRank: 0,
};

/** Counters beyond the per-link ones. */
export interface MeshStats {
  /** Links connecting or up. */
  readonly activeLinks: number;
  /** Signals that failed validation (or broke the glare rule) and were ignored. */
  readonly malformedSignals: number;
  /** Valid signals of no current attempt (a stale session, or no link to match) ignored. */
  readonly staleSignals: number;
}

/**
 * What one link is doing now, for a failure message: a sender that stopped sending shows
 * whether it waits for the channel to drain (the stack holds `bufferedBytes`) or has
 * frames queued and no wait armed (a lost wake-up of ours).
 */
export interface LinkState {
  readonly state: 'connecting' | 'up' | 'backoff';
  /** Frames, and their payload bytes, not yet completely handed to the channel. */
  readonly queuedFrames: number;
  readonly queuedBytes: number;
  /** The frame channel's `bufferedAmount`. */
  readonly bufferedBytes: number;
  /** A wait for `bufferedamountlow` (or the poll) is armed. */
  readonly waitingForDrain: boolean;
  /** Since the last sign of life. */
  readonly silentMs: number;
  readonly failedAttempts: number;
  /** Why the last attempt or connection failed (null if none did since the link was made). */
  readonly lastFailure: string | null;
  /**
   * Signals (dial requests, SDP, candidates) sent to the peer and received from it since
   * the link was made: a side that never hears the other's points at signaling, not ICE.
   */
  readonly signalsSent: number;
  readonly signalsReceived: number;
}

type MutableLinkStats = { -readonly [K in keyof LinkStats]: LinkStats[K] };

interface Link {
  readonly peer: PeerId;
  state: 'connecting' | 'up' | 'backoff';
  /** Session of the current attempt; undefined while waiting for the peer's offer. */
  session: string | undefined;
  sp: RtcPeer | undefined;
  readonly outbox: Outbox;
  readonly inbox: Inbox;
  readonly stats: MutableLinkStats;
  startedMs: number;
  lastHeartbeatSentMs: number;
  /** Last sign of life: a valid message, the channel draining, or the link coming up. */
  lastHeardMs: number;
  /** `bufferedAmount` when last looked at: a fall since means the peer acknowledged data. */
  bufferedBytes: number;
  /** The connection's received bytes at the last verdict that asked (0 when up). */
  transportBytes: number;
  /** A verdict is waiting for the connection's stats. */
  statsPending: boolean;
  /** Last frame (not heartbeat) sent or received, or send attempted. */
  lastUsedMs: number;
  retryAtMs: number;
  retryDelayMs: number;
  /** Failed attempts since the link was last up. */
  failedAttempts: number;
  /** peerDown was reported since the link was last up (or created). */
  downReported: boolean;
  /** The peer's `offerRank`, from its signals; undefined until one carried it. */
  peerOfferRank: number | undefined;
  lastFailure: string | null;
  signalsSent: number;
  signalsReceived: number;
  flushScheduled: boolean;
  /** Cancels a wait for `bufferedAmount` to drain, if one is pending. */
  stopWaiting: (() => void) | undefined;
}

/** A signal, with its sender's offer rank (undefined if it did not say). */
type Signal = { rank: number | undefined } & (
  | { kind: 'dial' }
  | { kind: 'rtc'; session: string; rtc: { [key: string]: unknown } }
);

/** 2: both data channels are negotiated out of band (rtc-peer.ts); 1 announced them in band. */
const SIGNAL_VERSION = 2;
const MAX_SESSION_ID_CHARS = 32;

export class WebRtcMesh implements Transport {
  readonly localId: PeerId;
  private readonly signal: SignalChannel;
  private readonly PeerConnection: RtcPeerConnectionClass;
  private readonly settings: Settings;
  private readonly links = new Map<PeerId, Link>();
  /** Counters of peers without a link, oldest first (Map keeps insertion order). */
  private readonly retiredStats = new Map<PeerId, MutableLinkStats>();
  private readonly handlers: { [E in keyof TransportHandlers]: Set<TransportHandlers[E]> } = {
    frame: new Set(),
    peerUp: new Set(),
    peerDown: new Set(),
  };
  private readonly unsubscribe: (() => void)[];
  private readonly ticker: ReturnType<typeof setInterval>;
  private readonly tickIntervalMs: number;
  /** When the loop last showed it was running: a tick, a verdict or a channel callback. */
  private lastLoopMs: number;
  private verdictScheduled = false;
  private malformedSignals = 0;
  private staleSignals = 0;
  private closed = false;

  constructor(options: WebRtcMeshOptions) {
    this.localId = options.localId;
    this.signal = options.signal;
    const { localId: _, signal: __, RTCPeerConnection: PeerConnection, ...rest } = options;
    const global = (globalThis as { RTCPeerConnection?: RtcPeerConnectionClass }).RTCPeerConnection;
    const chosen = PeerConnection ?? global;
    if (chosen === undefined) {
      throw new TypeError('WebRtcMesh: no RTCPeerConnection here; pass options.RTCPeerConnection');
    }
    this.PeerConnection = chosen;
    this.settings = { ...DEFAULTS, ...rest };
    validateSettings(this.settings);
    this.unsubscribe = [
      this.signal.onSignal((from, data) => this.onSignal(from, data)),
      this.signal.onPeerOnline((peer) => this.onPeerOnline(peer)),
    ];
    this.tickIntervalMs = this.settings.heartbeatIntervalMs / 2;
    this.lastLoopMs = nowMs();
    this.ticker = setInterval(() => this.tick(), this.tickIntervalMs);
    // In Node, a mesh alone must not keep the process alive.
    (this.ticker as { unref?: () => void }).unref?.();
  }

  get maxFrameBytes(): number {
    return this.settings.maxFrameBytes;
  }

  send(to: PeerId, frame: Uint8Array): void {
    checkFrameBytes(frame, this.settings.maxFrameBytes);
    const now = nowMs();
    let link = this.links.get(to);
    if (this.closed || to === this.localId) {
      this.countDropped(to, link);
      return;
    }
    if (link === undefined) {
      link = this.createLink(to);
      if (link === undefined) {
        this.countDropped(to, undefined);
        return;
      }
      this.dial(link, now);
    } else if (link.state === 'backoff') {
      link.lastUsedMs = now;
      if (now >= link.retryAtMs) {
        this.dial(link, now);
      } else if (link.failedAttempts > 1) {
        link.stats.framesDropped += 1;
        return;
      }
    }
    if (link.outbox.queuedBytes + frame.length > this.settings.maxQueuedBytesPerPeer) {
      link.stats.framesDropped += 1;
      return;
    }
    link.outbox.push(frame);
    link.lastUsedMs = now;
    if (link.state === 'up') this.scheduleFlush(link);
  }

  on<E extends keyof TransportHandlers>(event: E, handler: TransportHandlers[E]): () => void {
    const set = this.handlers[event] as Set<TransportHandlers[E]>;
    set.add(handler);
    return () => set.delete(handler);
  }

  peers(): readonly PeerId[] {
    return [...this.links.values()].filter((link) => link.state === 'up').map((link) => link.peer);
  }

  stats(peer: PeerId): LinkStats {
    const stats = this.links.get(peer)?.stats ?? this.retiredStats.get(peer);
    return stats === undefined ? zeroStats() : { ...stats };
  }

  meshStats(): MeshStats {
    let activeLinks = 0;
    for (const link of this.links.values()) if (link.state !== 'backoff') activeLinks += 1;
    return {
      activeLinks,
      malformedSignals: this.malformedSignals,
      staleSignals: this.staleSignals,
    };
  }

  /** The link to `peer` now (undefined without one). */
  linkState(peer: PeerId): LinkState | undefined {
    const link = this.links.get(peer);
    return link === undefined ? undefined : this.stateOf(link);
  }

  /** Every link now, by peer (for a failure message or a status page). */
  linkStates(): Map<PeerId, LinkState> {
    const states = new Map<PeerId, LinkState>();
    for (const link of this.links.values()) states.set(link.peer, this.stateOf(link));
    return states;
  }

  private stateOf(link: Link): LinkState {
    return {
      state: link.state,
      queuedFrames: link.outbox.queuedFrames,
      queuedBytes: link.outbox.queuedBytes,
      bufferedBytes: link.sp?.bufferedAmount ?? 0,
      waitingForDrain: link.stopWaiting !== undefined,
      silentMs: Math.round(nowMs() - link.lastHeardMs),
      failedAttempts: link.failedAttempts,
      lastFailure: link.lastFailure,
      signalsSent: link.signalsSent,
      signalsReceived: link.signalsReceived,
    };
  }

  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      clearInterval(this.ticker);
      for (const unsubscribe of this.unsubscribe) unsubscribe();
      for (const link of [...this.links.values()]) this.removeLink(link, 'transport closed');
    }
  }

  // ---- links ----------------------------------------------------------------------------

  private createLink(peer: PeerId): Link | undefined {
    if (this.meshStats().activeLinks >= this.settings.maxLinks && !this.evictIdleLink()) {
      return undefined;
    }
    const stats = this.retiredStats.get(peer) ?? zeroStats();
    this.retiredStats.delete(peer);
    const now = nowMs();
    const link: Link = {
      peer,
      state: 'connecting',
      session: undefined,
      sp: undefined,
      outbox: new Outbox(this.settings.maxMessageBytes),
      inbox: new Inbox(this.settings.maxFrameBytes),
      stats,
      startedMs: now,
      lastHeartbeatSentMs: now,
      lastHeardMs: now,
      bufferedBytes: 0,
      transportBytes: 0,
      statsPending: false,
      lastUsedMs: now,
      retryAtMs: 0,
      retryDelayMs: this.settings.retryDelayMinMs,
      failedAttempts: 0,
      downReported: false,
      peerOfferRank: undefined,
      lastFailure: null,
      signalsSent: 0,
      signalsReceived: 0,
      flushScheduled: false,
      stopWaiting: undefined,
    };
    this.links.set(peer, link);
    return link;
  }

  /** Closes the least recently used link that is up with nothing queued. */
  private evictIdleLink(): boolean {
    let victim: Link | undefined;
    for (const link of this.links.values()) {
      if (link.state !== 'up' || link.outbox.queuedFrames > 0) continue;
      if (victim === undefined || link.lastUsedMs < victim.lastUsedMs) victim = link;
    }
    if (victim === undefined) return false;
    this.removeLink(victim, 'evicted: too many links');
    return true;
  }

  /** Starts a connection attempt: an offer if we initiate, else a request for one. */
  private dial(link: Link, now: number, reason = 'redial'): void {
    this.detach(link, reason);
    link.state = 'connecting';
    link.startedMs = now;
    if (this.initiates(link.peer, link.peerOfferRank)) {
      this.attach(link, newSessionId(), true);
    } else {
      link.signalsSent += 1;
      this.signal.sendSignal(link.peer, {
        v: SIGNAL_VERSION,
        kind: 'dial',
        rank: this.settings.offerRank,
      });
    }
  }

  /**
   * Whether this side offers to `peer`: the higher offer rank, then the smaller id. A peer
   * whose rank is not known yet is taken to have ours.
   */
  private initiates(peer: PeerId, peerOfferRank: number | undefined): boolean {
    const ours = this.settings.offerRank;
    const theirs = peerOfferRank ?? ours;
    return theirs === ours ? this.localId < peer : ours > theirs;
  }

  private attach(link: Link, session: string, initiator: boolean): void {
    const peer = link.peer;
    let sp: RtcPeer | undefined;
    const current = () => sp !== undefined && link.sp === sp;
    try {
      sp = new RtcPeer(this.PeerConnection, this.settings.rtcConfig, initiator, {
        signal: (rtc) => {
          if (!current()) return;
          link.signalsSent += 1;
          this.signal.sendSignal(peer, {
            v: SIGNAL_VERSION,
            kind: 'rtc',
            session,
            rtc,
            rank: this.settings.offerRank,
          });
        },
        open: () => {
          if (current()) this.onConnect(link);
        },
        message: (message) => {
          if (current()) this.onMessage(link, message);
        },
        control: (message) => {
          if (current()) this.onControl(link, message);
        },
        close: (reason) => {
          if (current()) this.fail(link, reason);
        },
      });
    } catch (error) {
      this.fail(link, `cannot create a peer connection: ${describe(error)}`);
      return;
    }
    link.sp = sp;
    link.session = session;
  }

  /**
   * Drops the link's connection (if any): the peer connection is destroyed, the partial
   * frame forgotten, and, if the link was up, peerDown reported. The queue waits for the
   * next connection (`fail` and `removeLink` decide when it is dropped), a chunked frame
   * cut short starting over at its first chunk (the peer's new link holds no partial
   * frame). Frames already handed to the old channel are lost with it.
   */
  private detach(link: Link, reason: string, notifyPeer = false, failed = true): void {
    const sp = link.sp;
    link.sp = undefined;
    link.session = undefined;
    link.stopWaiting?.();
    link.inbox.reset();
    if (sp !== undefined) {
      if (notifyPeer && link.state === 'up') {
        try {
          sp.send(CLOSE_MESSAGE);
        } catch {
          // The channel is already failing; the peer will notice by itself.
        }
      }
      sp.destroy();
    }
    // Whatever the next connection carries starts with a whole frame.
    link.outbox.restartHead();
    if (link.state === 'up') {
      link.state = 'connecting';
      this.reportDown(link, reason, failed);
    }
  }

  /** peerDown, once per outage: until the link is up again, later failures say nothing. */
  private reportDown(link: Link, reason: string, failed: boolean): void {
    if (link.downReported) return;
    link.downReported = true;
    this.emit('peerDown', link.peer, reason, failed);
  }

  /**
   * The attempt or link failed: back off, and retry later if the link is still wanted.
   * Frames queued for a failed attempt or link are kept for ONE retry (first connections
   * between node-datachannel peers fail now and then, e.g. "remote candidate without ICE
   * transport"; a live peer replacing the connection closes the old one first); after a
   * second failure in a row they are dropped, and so are new ones until the link is up,
   * so a dead peer does not collect a backlog.
   */
  private fail(link: Link, reason: string): void {
    const wasUp = link.state === 'up';
    link.lastFailure = reason;
    this.detach(link, reason);
    link.failedAttempts = wasUp ? 1 : link.failedAttempts + 1;
    // A link never up says so on its first failure, as one that was up did in detach:
    // callers would otherwise take a peer they never reached for live (the contract).
    this.reportDown(link, reason, true);
    if (link.failedAttempts > 1) link.stats.framesDropped += link.outbox.clear();
    link.retryDelayMs =
      link.failedAttempts === 1
        ? this.settings.retryDelayMinMs
        : Math.min(link.retryDelayMs * 2, this.settings.retryDelayMaxMs);
    link.state = 'backoff';
    link.retryAtMs = nowMs() + link.retryDelayMs;
  }

  /** Closes the link on purpose and forgets it (its counters are kept). */
  private removeLink(link: Link, reason: string): void {
    this.detach(link, reason, true, false);
    link.stats.framesDropped += link.outbox.clear();
    this.links.delete(link.peer);
    this.retiredStats.set(link.peer, link.stats);
    while (this.retiredStats.size > this.settings.maxTrackedPeers) {
      const oldest = this.retiredStats.keys().next().value as PeerId;
      this.retiredStats.delete(oldest);
    }
  }

  private onConnect(link: Link): void {
    if (link.state === 'up') return;
    const now = nowMs();
    link.state = 'up';
    link.lastHeardMs = now;
    link.bufferedBytes = 0;
    link.transportBytes = 0;
    // A new link counts as used: a slow setup must not make it idle on arrival.
    link.lastUsedMs = now;
    link.retryDelayMs = this.settings.retryDelayMinMs;
    link.failedAttempts = 0;
    link.downReported = false;
    this.emit('peerUp', link.peer);
    // A heartbeat at once: the peer may be waiting for a sign that our side is up too.
    link.lastHeartbeatSentMs = Number.NEGATIVE_INFINITY;
    this.heartbeatIfDue(link, now);
    this.scheduleFlush(link);
  }

  // ---- receiving ------------------------------------------------------------------------

  private onMessage(link: Link, message: Uint8Array): void {
    const now = nowMs();
    this.forgiveStall(now);
    // The peer may send as soon as its side is connected, before ours says so.
    if (link.state !== 'up') this.onConnect(link);
    const decoded = link.inbox.decode(message);
    if (!decoded.ok) {
      // Only valid messages are signs of life: a peer sending garbage is not up.
      link.stats.malformedReceived += 1;
      return;
    }
    link.lastHeardMs = now;
    for (const record of decoded.records) {
      if (record.kind === 'frame') {
        link.stats.framesReceived += 1;
        link.stats.bytesReceived += record.frame.length;
        link.lastUsedMs = now;
        this.emit('frame', link.peer, record.frame);
      } else if (record.kind === 'close') {
        this.removeLink(link, 'closed by peer');
        return;
      }
    }
    // Answering from the message handler keeps heartbeats flowing both ways while only one
    // side's timers run on time (hidden tabs run timers once per second; handlers are not
    // throttled).
    this.heartbeatIfDue(link, now);
  }

  /** A message on the control channel: a heartbeat, or malformed (the data stream untouched). */
  private onControl(link: Link, message: Uint8Array): void {
    const now = nowMs();
    this.forgiveStall(now);
    if (!isHeartbeatMessage(message)) {
      link.stats.malformedReceived += 1;
      return;
    }
    // Only the frame channel opening (or carrying a message) brings the link up: this
    // channel may open first, and frames cannot leave before the other one does.
    if (link.state !== 'up') return;
    link.lastHeardMs = now;
    this.heartbeatIfDue(link, now);
  }

  /** Sends a heartbeat on the control channel if none left for `heartbeatIntervalMs`. */
  private heartbeatIfDue(link: Link, now: number): void {
    if (link.state !== 'up' || now - link.lastHeartbeatSentMs < this.settings.heartbeatIntervalMs)
      return;
    try {
      link.sp?.sendControl(HEARTBEAT_MESSAGE);
      link.lastHeartbeatSentMs = now;
    } catch {
      // No channel open yet (a message can arrive before our side's open event), or closing:
      // the close event or the peer timeout ends a link that is really gone.
    }
  }

  /** A fall of `bufferedAmount` since last looked at is a sign of life (the peer acknowledges). */
  private noteDrain(link: Link, now: number): void {
    const bufferedBytes = link.sp?.bufferedAmount ?? 0;
    if (bufferedBytes < link.bufferedBytes) link.lastHeardMs = now;
    link.bufferedBytes = bufferedBytes;
  }

  private onSignal(from: PeerId, data: unknown): void {
    if (this.closed || from === this.localId) return;
    const signal = parseSignal(data);
    if (signal === undefined) {
      this.malformedSignals += 1;
      return;
    }
    const weInitiate = this.initiates(from, signal.rank);
    // A dial or an offer the other way round from the glare rule is a peer that took our
    // rank for its own (it had not heard from us): it learns ours from what we send back.
    // Without a rank to explain it, a dial to the side that does not offer breaks the rule.
    const tookOurRank = signal.rank !== undefined && signal.rank !== this.settings.offerRank;
    if (signal.kind === 'dial' && !weInitiate && !tookOurRank) {
      this.malformedSignals += 1;
      return;
    }
    const now = nowMs();
    let link = this.links.get(from);
    if (link !== undefined) {
      link.signalsReceived += 1;
      link.peerOfferRank = signal.rank ?? link.peerOfferRank;
    }
    if (signal.kind === 'dial') {
      // An offer of ours crossed the request: it is on its way, let it land.
      if (weInitiate && link?.state === 'connecting' && link.sp !== undefined) {
        if (now - link.startedMs < this.settings.connectTimeoutMs) return;
      }
      link ??= this.createLinkOnSignal(from, signal.rank);
      if (link === undefined) return;
      // The peer is alive and wants the link: its earlier failures do not count against
      // the queue.
      link.failedAttempts = 0;
      // Ours is the offer, or (the peer offers, it did not know) a dial that says so.
      this.dial(link, now, weInitiate ? 'peer asked to reconnect' : 'peer asked for its own offer');
      return;
    }
    if (link?.sp !== undefined && link.session === signal.session) {
      link.sp.signal(signal.rtc);
      return;
    }
    // Answers and candidates of another session are stale. A new offer means the
    // initiator started over (restart, or it gave up on the old link): replace ours.
    if (!weInitiate && signal.rtc.type === 'offer') {
      link ??= this.createLinkOnSignal(from, signal.rank);
      if (link === undefined) return;
      this.detach(link, 'peer reconnected');
      // The peer is alive and wants the link: its earlier failures do not count against
      // the queue.
      link.failedAttempts = 0;
      link.state = 'connecting';
      link.startedMs = now;
      link.lastUsedMs = now;
      this.attach(link, signal.session, false);
      link.sp?.signal(signal.rtc);
      return;
    }
    // An offer from a peer that should have asked for ours: we offer instead, unless an
    // offer of ours is already on its way (it replaces the peer's when it lands).
    if (weInitiate && tookOurRank && signal.rtc.type === 'offer') {
      const oursOnItsWay =
        link?.state === 'connecting' &&
        link.sp !== undefined &&
        now - link.startedMs < this.settings.connectTimeoutMs;
      if (!oursOnItsWay) {
        link ??= this.createLinkOnSignal(from, signal.rank);
        if (link === undefined) return;
        link.failedAttempts = 0;
        this.dial(link, now, 'peer offered; the higher offer rank offers');
        return;
      }
    }
    this.staleSignals += 1;
  }

  /** A link made for the peer's signal, which counts as its first received. */
  private createLinkOnSignal(peer: PeerId, peerOfferRank: number | undefined): Link | undefined {
    const link = this.createLink(peer);
    if (link !== undefined) {
      link.signalsReceived = 1;
      link.peerOfferRank = peerOfferRank;
    }
    return link;
  }

  /**
   * The peer (re)joined signaling: a link backing off is re-signalled now, and so is an
   * attempt still connecting, whose signals went to a member that was not connected (the
   * server refuses them; a new member is in the registry a moment before it can be
   * signalled) or to the previous incarnation of a restarted one: waiting out
   * `connectTimeoutMs` for an answer that cannot come would cost every new member's
   * first link 5 s.
   */
  private onPeerOnline(peer: PeerId): void {
    const link = this.links.get(peer);
    if (this.closed || link === undefined || link.state === 'up') return;
    link.retryAtMs = 0;
    const now = nowMs();
    if (link.state === 'connecting' || this.isWanted(link, now)) {
      this.dial(link, now, 'peer back online');
    }
  }

  // ---- sending --------------------------------------------------------------------------

  private scheduleFlush(link: Link): void {
    if (link.flushScheduled) return;
    link.flushScheduled = true;
    queueMicrotask(() => {
      link.flushScheduled = false;
      this.flush(link);
    });
  }

  private flush(link: Link): void {
    const sp = link.sp;
    if (link.state !== 'up' || sp === undefined || link.stopWaiting !== undefined) return;
    const now = nowMs();
    this.noteDrain(link, now);
    while (link.outbox.queuedFrames > 0) {
      if (sp.bufferedAmount > this.settings.bufferedHighWaterBytes) {
        link.bufferedBytes = sp.bufferedAmount;
        this.waitForDrain(link, sp);
        return;
      }
      let frames = 0;
      let bytes = 0;
      const message = link.outbox.nextMessage((frameBytes) => {
        frames += 1;
        bytes += frameBytes;
      });
      if (message === undefined) return;
      try {
        sp.send(message);
      } catch (error) {
        link.stats.framesDropped += frames;
        this.fail(link, `send failed: ${describe(error)}`);
        return;
      }
      link.stats.framesSent += frames;
      link.stats.bytesSent += bytes;
    }
    link.bufferedBytes = sp.bufferedAmount;
  }

  /** Resumes `flush` once the channel drained below half the high-water mark. */
  private waitForDrain(link: Link, sp: RtcPeer): void {
    const lowWaterBytes = this.settings.bufferedHighWaterBytes / 2;
    const channel = sp.dataChannel;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const resume = () => {
      link.stopWaiting?.();
      this.flush(link);
    };
    const poll = () => {
      if (sp.bufferedAmount <= lowWaterBytes) resume();
      else timer = setTimeout(poll, this.settings.bufferedAmountPollMs);
    };
    link.stopWaiting = () => {
      link.stopWaiting = undefined;
      clearTimeout(timer);
      channel.removeEventListener('bufferedamountlow', resume);
    };
    channel.bufferedAmountLowThreshold = lowWaterBytes;
    channel.addEventListener('bufferedamountlow', resume);
    timer = setTimeout(poll, this.settings.bufferedAmountPollMs);
  }

  // ---- timers ---------------------------------------------------------------------------

  private tick(): void {
    const now = nowMs();
    this.forgiveStall(now);
    let overdue = false;
    for (const link of [...this.links.values()]) {
      if (link.state === 'up') {
        this.noteDrain(link, now);
        if (this.isSilent(link, now)) {
          overdue = true;
        } else if (this.isIdle(link, now)) {
          this.removeLink(link, 'idle');
        } else {
          this.heartbeatIfDue(link, now);
        }
      } else if (link.state === 'connecting') {
        if (this.isConnectOverdue(link, now)) overdue = true;
      } else if (!this.isWanted(link, now)) {
        this.removeLink(link, 'idle');
      } else if (now >= link.retryAtMs) {
        this.dial(link, now);
      }
    }
    if (overdue) this.scheduleVerdict();
  }

  /**
   * Our own event loop stalled (a busy turn, a GC pause, a synchronous stall) if it shows
   * up (a tick, a verdict, a channel callback) more than a tick interval after it last
   * did: the peer cannot be blamed for that time, and its messages of that time may still
   * be waiting behind us. Every link's deadlines move forward by the stall. (A hidden tab's
   * throttled timers look the same while nothing arrives, so there failure detection takes
   * up to 4× as long.)
   */
  private forgiveStall(now: number): void {
    const stallMs = now - this.lastLoopMs - this.tickIntervalMs;
    this.lastLoopMs = now;
    if (stallMs <= 0) return;
    for (const link of this.links.values()) {
      link.lastHeardMs = Math.min(now, link.lastHeardMs + stallMs);
      link.startedMs = Math.min(now, link.startedMs + stallMs);
    }
  }

  /**
   * Judges the links a tick found overdue one macrotask later, after the data channel
   * callbacks that were already pending behind the tick (timers run before I/O callbacks in
   * Node's loop): a message that arrived in time must count.
   */
  private scheduleVerdict(): void {
    if (this.verdictScheduled) return;
    this.verdictScheduled = true;
    setTimeout(() => {
      this.verdictScheduled = false;
      if (this.closed) return;
      const now = nowMs();
      this.forgiveStall(now);
      for (const link of [...this.links.values()]) {
        if (link.state === 'up') {
          this.noteDrain(link, now);
          if (this.isSilent(link, now)) this.judgeSilence(link, now);
        } else if (link.state === 'connecting' && this.isConnectOverdue(link, now)) {
          const negotiation =
            link.sp === undefined ? 'no offer from the peer yet' : link.sp.describe();
          this.fail(
            link,
            `not connected after ${this.settings.connectTimeoutMs} ms (${negotiation})`,
          );
        }
      }
    }, 0);
  }

  /**
   * A silent link is down unless its connection still receives bytes (and has not for
   * longer than `transportAliveTimeoutMs`): a killed peer sends nothing at all, a live one
   * whose messages wait behind a busy thread (or SCTP retransmissions) still does.
   */
  private judgeSilence(link: Link, now: number): void {
    const sp = link.sp;
    const silentMs = Math.round(now - link.lastHeardMs);
    if (sp === undefined || silentMs > this.settings.transportAliveTimeoutMs) {
      this.fail(link, `no sign of life for ${silentMs} ms`);
      return;
    }
    if (link.statsPending) return;
    link.statsPending = true;
    void sp.bytesReceived().then((bytes) => {
      link.statsPending = false;
      if (link.sp !== sp || link.state !== 'up' || !this.isSilent(link, nowMs())) return;
      if (bytes !== undefined && bytes > link.transportBytes) {
        link.transportBytes = bytes;
        return;
      }
      this.fail(link, `no sign of life for ${Math.round(nowMs() - link.lastHeardMs)} ms`);
    });
  }

  private isSilent(link: Link, now: number): boolean {
    return now - link.lastHeardMs > this.settings.peerTimeoutMs;
  }

  private isConnectOverdue(link: Link, now: number): boolean {
    return now - link.startedMs > this.settings.connectTimeoutMs;
  }

  /** Up, unused for `linkIdleTimeoutMs`, and nothing left to send (closing loses no frame). */
  private isIdle(link: Link, now: number): boolean {
    return (
      now - link.lastUsedMs > this.settings.linkIdleTimeoutMs &&
      link.outbox.queuedFrames === 0 &&
      (link.sp?.bufferedAmount ?? 0) === 0
    );
  }

  private isWanted(link: Link, now: number): boolean {
    return now - link.lastUsedMs <= this.settings.linkIdleTimeoutMs;
  }

  // ---- helpers --------------------------------------------------------------------------

  private countDropped(peer: PeerId, link: Link | undefined): void {
    if (link !== undefined) {
      link.stats.framesDropped += 1;
      return;
    }
    let stats = this.retiredStats.get(peer);
    if (stats === undefined) {
      if (this.retiredStats.size >= this.settings.maxTrackedPeers) return;
      stats = zeroStats();
      this.retiredStats.set(peer, stats);
    }
    stats.framesDropped += 1;
  }

  private emit<E extends keyof TransportHandlers>(
    event: E,
    ...args: Parameters<TransportHandlers[E]>
  ): void {
    queueMicrotask(() => {
      for (const handler of this.handlers[event]) {
        try {
          (handler as (...a: Parameters<TransportHandlers[E]>) => void)(...args);
        } catch (error) {
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    });
  }
}

function parseSignal(data: unknown): Signal | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const record = data as { [key: string]: unknown };
  if (record.v !== SIGNAL_VERSION) return undefined;
  const { session, rtc, rank } = record;
  if (rank !== undefined && !isOfferRank(rank)) return undefined;
  if (record.kind === 'dial') return { kind: 'dial', rank };
  if (
    record.kind !== 'rtc' ||
    typeof session !== 'string' ||
    session.length === 0 ||
    session.length > MAX_SESSION_ID_CHARS ||
    typeof rtc !== 'object' ||
    rtc === null ||
    Array.isArray(rtc)
  ) {
    return undefined;
  }
  return { kind: 'rtc', session, rtc: rtc as { [key: string]: unknown }, rank };
}

function isOfferRank(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= MAX_OFFER_RANK;
}

function validateSettings(s: Settings): void {
  const positive: (keyof Settings)[] = [
    'heartbeatIntervalMs',
    'peerTimeoutMs',
    'transportAliveTimeoutMs',
    'connectTimeoutMs',
    'retryDelayMinMs',
    'retryDelayMaxMs',
    'linkIdleTimeoutMs',
    'maxLinks',
    'maxFrameBytes',
    'maxQueuedBytesPerPeer',
    'bufferedHighWaterBytes',
    'bufferedAmountPollMs',
    'maxTrackedPeers',
  ];
  for (const key of positive) {
    const value = s[key];
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw new RangeError(`WebRtcMesh: ${key} must be a positive number, got ${String(value)}`);
    }
  }
  if (!isOfferRank(s.offerRank)) {
    throw new RangeError(
      `WebRtcMesh: offerRank must be an integer from 0 to ${MAX_OFFER_RANK}, got ${String(s.offerRank)}`,
    );
  }
  if (s.peerTimeoutMs <= s.heartbeatIntervalMs) {
    throw new RangeError('WebRtcMesh: peerTimeoutMs must exceed heartbeatIntervalMs');
  }
  if (s.transportAliveTimeoutMs < s.peerTimeoutMs) {
    throw new RangeError('WebRtcMesh: transportAliveTimeoutMs must be at least peerTimeoutMs');
  }
  if (s.maxMessageBytes < MIN_MESSAGE_BYTES || s.maxMessageBytes > 256 * 1024) {
    throw new RangeError(`WebRtcMesh: maxMessageBytes must be in ${MIN_MESSAGE_BYTES}..262144`);
  }
  if (s.maxQueuedBytesPerPeer < s.maxFrameBytes) {
    throw new RangeError('WebRtcMesh: maxQueuedBytesPerPeer must be at least maxFrameBytes');
  }
}

function zeroStats(): MutableLinkStats {
  return {
    framesSent: 0,
    framesReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    framesDropped: 0,
    malformedReceived: 0,
  };
}

function newSessionId(): string {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return [...words].map((word) => word.toString(16).padStart(8, '0')).join('');
}

function nowMs(): number {
  return performance.now();
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
