/**
 * A simulated network in virtual time, for deterministic simulation of many nodes in one
 * process (TigerBeetle's packet simulator is the model). Nothing here reads a clock or
 * schedules a timer: the harness drives time with `step()` / `advanceTo()`, and every
 * random choice comes from the injected PRNG in call order, so one seed replays the same
 * run bit for bit.
 *
 * Faults, per directed link (from → to): a delay drawn from a range, loss, duplication,
 * reordering, clogging (the link holds everything for a while, then releases it in
 * order), and blocking (symmetric and asymmetric partitions, an isolated node). A node
 * that is down neither sends nor receives. Each link holds at most `maxInFlight` packets.
 * A fault call changes reachability at once but only queues the news: link listeners hear
 * of it from `step()`, in time order with the packets, never from inside the call.
 *
 * The network is generic over the payload: the Raft simulation carries Message objects
 * without encoding them, and `SimTransport` wraps a `SimNetwork<Uint8Array>` as a
 * `Transport` for code written against the contract.
 */
import type { NodeId, Prng } from '@meshkv/raft';
import {
  checkFrameBytes,
  DEFAULT_MAX_FRAME_BYTES,
  type LinkStats,
  type PeerId,
  type Transport,
  type TransportHandlers,
} from './transport.ts';

/** How one directed link treats the packets sent over it. */
export interface LinkFaults {
  /** The one-way delay is drawn uniformly from [minDelayMs, maxDelayMs] (integers). */
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  /** Probability that a packet is lost. */
  readonly lossProbability: number;
  /** Probability that a packet is delivered twice (the copy with its own delay). */
  readonly duplicateProbability: number;
  /**
   * Probability that a packet may overtake earlier ones. Otherwise a packet is delivered
   * no earlier than the packet sent before it on the same link (FIFO).
   */
  readonly reorderProbability: number;
  /** Packets in flight on the link beyond which newly sent ones are dropped. */
  readonly maxInFlight: number;
}

export const defaultLinkFaults: LinkFaults = Object.freeze({
  minDelayMs: 1,
  maxDelayMs: 1,
  lossProbability: 0,
  duplicateProbability: 0,
  reorderProbability: 0,
  maxInFlight: 10_000,
});

export type SimDropReason = 'loss' | 'blocked' | 'down' | 'capacity' | 'closed';

/** What happened to a packet; `packetId` identifies it across its events (copies share it). */
export type SimNetworkEvent<P> =
  | {
      readonly kind: 'send';
      readonly atMs: number;
      readonly packetId: number;
      readonly from: NodeId;
      readonly to: NodeId;
      readonly payload: P;
      readonly deliverAtMs: number;
    }
  | {
      readonly kind: 'duplicate';
      readonly atMs: number;
      readonly packetId: number;
      readonly from: NodeId;
      readonly to: NodeId;
      readonly deliverAtMs: number;
    }
  | {
      readonly kind: 'deliver';
      readonly atMs: number;
      readonly packetId: number;
      readonly from: NodeId;
      readonly to: NodeId;
      readonly payload: P;
    }
  | {
      readonly kind: 'hold';
      readonly atMs: number;
      readonly packetId: number;
      readonly from: NodeId;
      readonly to: NodeId;
      readonly untilMs: number;
    }
  | {
      readonly kind: 'drop';
      readonly atMs: number;
      readonly packetId: number;
      readonly from: NodeId;
      readonly to: NodeId;
      readonly reason: SimDropReason;
    };

/** Counters of one directed link. */
export interface SimLinkCounters {
  sent: number;
  delivered: number;
  dropped: number;
  duplicated: number;
  bytesSent: number;
  bytesDelivered: number;
}

export interface SimNetworkOptions<P> {
  /** All randomness (delays, loss, duplication, reordering) comes from here. */
  readonly prng: Prng;
  /** Faults of every link not configured otherwise. */
  readonly defaults?: Partial<LinkFaults>;
  /** Payload size for byte counters; 0 if not given. */
  readonly sizeBytes?: (payload: P) => number;
  /** Copies a payload for a duplicate delivery; the same object is delivered if not given. */
  readonly clone?: (payload: P) => P;
  /** Sees every packet event, in order (for traces). */
  readonly onEvent?: (event: SimNetworkEvent<P>) => void;
}

/** Receives the payloads delivered to one node. */
export type SimReceiver<P> = (from: NodeId, payload: P) => void;

/**
 * Called from `step()` for a change of a link's reachability (blocked, unblocked, node down
 * or up, added or removed) made by a fault call since; `reachable` is the state the call
 * left, which a later call may have changed again.
 */
export type SimLinkListener = (from: NodeId, to: NodeId, reachable: boolean) => void;

/** A reachability change waiting for `step()` to tell the listeners. */
interface LinkChange {
  readonly atMs: number;
  readonly sequence: number;
  readonly from: NodeId;
  readonly to: NodeId;
  readonly reachable: boolean;
}

interface Packet<P> {
  readonly atMs: number;
  /** Tie-break among packets due at the same time: the order they were scheduled in. */
  readonly sequence: number;
  readonly packetId: number;
  readonly from: NodeId;
  readonly to: NodeId;
  readonly payload: P;
}

interface Link {
  faults: LinkFaults;
  blocked: boolean;
  clogUntilMs: number;
  /** Delivery time of the last FIFO packet: the next one is not delivered before it. */
  lastDeliverAtMs: number;
  inFlight: number;
  readonly counters: SimLinkCounters;
}

/** Probabilities are drawn at this resolution. */
const PROBABILITY_SCALE = 1_000_000;

export class SimNetwork<P> {
  private readonly prng: Prng;
  private readonly sizeBytes: (payload: P) => number;
  private readonly clone: (payload: P) => P;
  private readonly onEvent: ((event: SimNetworkEvent<P>) => void) | undefined;
  private defaults: LinkFaults;
  private readonly links = new Map<string, Link>();
  private readonly receivers = new Map<NodeId, SimReceiver<P>>();
  private readonly down = new Set<NodeId>();
  private readonly linkListeners = new Set<SimLinkListener>();
  private readonly queue = new PacketHeap<P>();
  /** In the order made (so in time order): the clock never goes back. */
  private linkChanges: LinkChange[] = [];
  private linkChangesHead = 0;
  private clockMs = 0;
  private nextSequence = 0;
  private nextPacketId = 0;

  constructor(options: SimNetworkOptions<P>) {
    this.prng = options.prng;
    this.sizeBytes = options.sizeBytes ?? (() => 0);
    this.clone = options.clone ?? ((payload) => payload);
    this.onEvent = options.onEvent;
    this.defaults = validFaults({ ...defaultLinkFaults, ...options.defaults });
  }

  /** Virtual time in integer milliseconds; starts at 0. */
  get nowMs(): number {
    return this.clockMs;
  }

  /** Registers `node` and where its packets go. A node registers once. */
  addNode(node: NodeId, receive: SimReceiver<P>): void {
    if (this.receivers.has(node)) throw new Error(`SimNetwork: node ${node} is already added`);
    const before = this.reachability();
    this.receivers.set(node, receive);
    this.announceChanges(before);
  }

  /** Unregisters `node`; packets to it are dropped from now on ('closed'). */
  removeNode(node: NodeId): void {
    const before = this.reachability();
    this.receivers.delete(node);
    this.announceChanges(before);
  }

  nodes(): NodeId[] {
    return [...this.receivers.keys()];
  }

  /**
   * Sends `payload` from → to. Never throws for an unknown or unreachable node: the packet
   * is dropped and counted. Delivery happens only inside `step()`/`advanceTo()`.
   */
  send(from: NodeId, to: NodeId, payload: P): void {
    const link = this.link(from, to);
    const packetId = this.nextPacketId++;
    const bytes = this.sizeBytes(payload);
    link.counters.sent++;
    link.counters.bytesSent += bytes;
    // Every send draws the same number of random values whatever the faults are, so one
    // fault setting changing does not reshuffle every later random choice of a seed.
    const lossRoll = this.prng.nextInt(PROBABILITY_SCALE);
    const duplicateRoll = this.prng.nextInt(PROBABILITY_SCALE);
    const reorderRoll = this.prng.nextInt(PROBABILITY_SCALE);
    const delayMs = this.drawDelayMs(link.faults);
    const copyDelayMs = this.drawDelayMs(link.faults);

    const dropReason = this.dropReasonAtSend(from, to, link, lossRoll);
    if (dropReason !== undefined) {
      link.counters.dropped++;
      this.onEvent?.({ kind: 'drop', atMs: this.clockMs, packetId, from, to, reason: dropReason });
      return;
    }
    const reorders = reorderRoll < link.faults.reorderProbability * PROBABILITY_SCALE;
    let deliverAtMs = this.clockMs + delayMs;
    if (!reorders) {
      deliverAtMs = Math.max(deliverAtMs, link.lastDeliverAtMs);
      link.lastDeliverAtMs = deliverAtMs;
    }
    this.schedule(link, { atMs: deliverAtMs, packetId, from, to, payload });
    this.onEvent?.({ kind: 'send', atMs: this.clockMs, packetId, from, to, payload, deliverAtMs });
    const duplicates = duplicateRoll < link.faults.duplicateProbability * PROBABILITY_SCALE;
    if (duplicates && link.inFlight < link.faults.maxInFlight) {
      const copyAtMs = this.clockMs + copyDelayMs;
      link.counters.duplicated++;
      this.schedule(link, { atMs: copyAtMs, packetId, from, to, payload: this.clone(payload) });
      this.onEvent?.({
        kind: 'duplicate',
        atMs: this.clockMs,
        packetId,
        from,
        to,
        deliverAtMs: copyAtMs,
      });
    }
  }

  /** Time of the next event (a packet, or news of a reachability change), if any. */
  nextEventAtMs(): number | undefined {
    return this.nextLinkChange()?.atMs ?? this.queue.peek()?.atMs;
  }

  /** Packets in flight (held ones included). */
  inFlight(): number {
    return this.queue.size;
  }

  /**
   * Handles the earliest event: tells the link listeners of a reachability change, or moves
   * time forward to the next packet and delivers, drops or holds (clogged link) it. Returns
   * false when there is nothing to handle.
   */
  step(): boolean {
    const change = this.nextLinkChange();
    const next = this.queue.peek();
    if (change !== undefined && (next === undefined || !before(next, change))) {
      this.linkChangesHead += 1;
      if (this.linkChangesHead === this.linkChanges.length) {
        this.linkChanges = [];
        this.linkChangesHead = 0;
      }
      for (const listener of this.linkListeners) listener(change.from, change.to, change.reachable);
      return true;
    }
    const packet = this.queue.pop();
    if (packet === undefined) return false;
    this.clockMs = Math.max(this.clockMs, packet.atMs);
    const { from, to, packetId } = packet;
    const link = this.link(from, to);
    if (link.clogUntilMs > this.clockMs) {
      // Held, not lost: released in order when the clog ends.
      this.queue.push({ ...packet, atMs: link.clogUntilMs, sequence: this.nextSequence++ });
      this.onEvent?.({
        kind: 'hold',
        atMs: this.clockMs,
        packetId,
        from,
        to,
        untilMs: link.clogUntilMs,
      });
      return true;
    }
    link.inFlight--;
    const receive = this.receivers.get(to);
    const reason: SimDropReason | undefined =
      receive === undefined
        ? 'closed'
        : this.down.has(to)
          ? 'down'
          : link.blocked
            ? 'blocked'
            : undefined;
    if (reason !== undefined || receive === undefined) {
      link.counters.dropped++;
      this.onEvent?.({
        kind: 'drop',
        atMs: this.clockMs,
        packetId,
        from,
        to,
        reason: reason ?? 'closed',
      });
      return true;
    }
    link.counters.delivered++;
    link.counters.bytesDelivered += this.sizeBytes(packet.payload);
    this.onEvent?.({
      kind: 'deliver',
      atMs: this.clockMs,
      packetId,
      from,
      to,
      payload: packet.payload,
    });
    receive(from, packet.payload);
    return true;
  }

  /**
   * Handles every event due at or before `timeMs`, in order, then sets the clock to
   * `timeMs`. Packets sent by receivers meanwhile are handled too if due by then. Throws
   * if more than `maxEvents` events are due (a livelock guard). Returns the event count.
   */
  advanceTo(timeMs: number, maxEvents = 1_000_000): number {
    if (!Number.isInteger(timeMs) || timeMs < this.clockMs) {
      throw new RangeError(
        `advanceTo: ${timeMs} is not an integer time ≥ now (${this.clockMs} ms)`,
      );
    }
    let events = 0;
    for (
      let at = this.nextEventAtMs();
      at !== undefined && at <= timeMs;
      at = this.nextEventAtMs()
    ) {
      if (++events > maxEvents) {
        throw new Error(`advanceTo(${timeMs}): more than ${maxEvents} packet events; livelock?`);
      }
      this.step();
    }
    this.clockMs = timeMs;
    return events;
  }

  // ---- Faults ----

  /** Sets the faults of every link not configured individually (and resets those that were). */
  configureAll(faults: Partial<LinkFaults>): void {
    this.defaults = validFaults({ ...this.defaults, ...faults });
    for (const link of this.links.values()) link.faults = this.defaults;
  }

  /** Sets the faults of the directed link from → to. */
  configureLink(from: NodeId, to: NodeId, faults: Partial<LinkFaults>): void {
    const link = this.link(from, to);
    link.faults = validFaults({ ...link.faults, ...faults });
  }

  /** Blocks (or unblocks) the directed link from → to: an asymmetric partition. */
  setBlocked(from: NodeId, to: NodeId, blocked: boolean): void {
    const before = this.reachability();
    this.link(from, to).blocked = blocked;
    this.announceChanges(before);
  }

  /**
   * A symmetric partition: nodes in different sides cannot reach each other, nodes in the
   * same side can. Nodes in no side form one more side together. Replaces all blocks.
   */
  partition(sides: readonly (readonly NodeId[])[]): void {
    const sideOf = new Map<NodeId, number>();
    sides.forEach((side, i) => {
      for (const node of side) {
        if (sideOf.has(node)) throw new Error(`partition: ${node} is in two sides`);
        sideOf.set(node, i);
      }
    });
    const before = this.reachability();
    const all = this.nodes();
    for (const from of all) {
      for (const to of all) {
        if (from !== to)
          this.link(from, to).blocked = (sideOf.get(from) ?? -1) !== (sideOf.get(to) ?? -1);
      }
    }
    this.announceChanges(before);
  }

  /** Cuts `node` off from every other node, both ways. Other blocks stay. */
  isolate(node: NodeId): void {
    const before = this.reachability();
    for (const other of this.nodes()) {
      if (other === node) continue;
      this.link(node, other).blocked = true;
      this.link(other, node).blocked = true;
    }
    this.announceChanges(before);
  }

  /** Removes every block (partitions, isolation); clogs and link faults stay. */
  heal(): void {
    const before = this.reachability();
    for (const link of this.links.values()) link.blocked = false;
    this.announceChanges(before);
  }

  /** Holds every packet on from → to until `durationMs` from now, then releases them in order. */
  clog(from: NodeId, to: NodeId, durationMs: number): void {
    if (!Number.isInteger(durationMs) || durationMs < 0) {
      throw new RangeError(`clog: durationMs must be a non-negative integer, got ${durationMs}`);
    }
    const link = this.link(from, to);
    link.clogUntilMs = Math.max(link.clogUntilMs, this.clockMs + durationMs);
  }

  /**
   * A node that is down (crashed) sends nothing and receives nothing: packets to it are
   * dropped when due, including those already in flight.
   */
  setDown(node: NodeId, down: boolean): void {
    const before = this.reachability();
    if (down) this.down.add(node);
    else this.down.delete(node);
    this.announceChanges(before);
  }

  /** Whether a packet sent now from → to could arrive (blocks and down nodes; not loss). */
  isReachable(from: NodeId, to: NodeId): boolean {
    return (
      this.receivers.has(from) &&
      this.receivers.has(to) &&
      !this.down.has(from) &&
      !this.down.has(to) &&
      !(this.links.get(linkKey(from, to))?.blocked ?? false)
    );
  }

  /** Subscribes to reachability changes (told from `step()`); returns the unsubscribe function. */
  onLinkChange(listener: SimLinkListener): () => void {
    this.linkListeners.add(listener);
    return () => this.linkListeners.delete(listener);
  }

  /** Counters of the directed link from → to (a live view). */
  counters(from: NodeId, to: NodeId): Readonly<SimLinkCounters> {
    return this.link(from, to).counters;
  }

  // ---- Internals ----

  private link(from: NodeId, to: NodeId): Link {
    const key = linkKey(from, to);
    let link = this.links.get(key);
    if (link === undefined) {
      link = {
        faults: this.defaults,
        blocked: false,
        clogUntilMs: 0,
        lastDeliverAtMs: 0,
        inFlight: 0,
        counters: {
          sent: 0,
          delivered: 0,
          dropped: 0,
          duplicated: 0,
          bytesSent: 0,
          bytesDelivered: 0,
        },
      };
      this.links.set(key, link);
    }
    return link;
  }

  private drawDelayMs(faults: LinkFaults): number {
    return faults.minDelayMs + this.prng.nextInt(faults.maxDelayMs - faults.minDelayMs + 1);
  }

  private dropReasonAtSend(
    from: NodeId,
    to: NodeId,
    link: Link,
    lossRoll: number,
  ): SimDropReason | undefined {
    if (!this.receivers.has(from) || !this.receivers.has(to)) return 'closed';
    if (this.down.has(from) || this.down.has(to)) return 'down';
    if (link.blocked) return 'blocked';
    if (lossRoll < link.faults.lossProbability * PROBABILITY_SCALE) return 'loss';
    if (link.inFlight >= link.faults.maxInFlight) return 'capacity';
    return undefined;
  }

  private schedule(link: Link, packet: Omit<Packet<P>, 'sequence'>): void {
    link.inFlight++;
    this.queue.push({ ...packet, sequence: this.nextSequence++ });
  }

  /** Reachable directed pairs, to diff around a fault change (fault changes are rare). */
  private reachability(): Set<string> {
    const reachable = new Set<string>();
    if (this.linkListeners.size === 0) return reachable;
    const all = this.nodes();
    for (const from of all) {
      for (const to of all)
        if (from !== to && this.isReachable(from, to)) reachable.add(linkKey(from, to));
    }
    return reachable;
  }

  /** Queues news of every pair whose reachability differs from `before`, for `step()`. */
  private announceChanges(before: Set<string>): void {
    if (this.linkListeners.size === 0) return;
    const after = this.reachability();
    const queue = (key: string, reachable: boolean) => {
      const [from, to] = splitLinkKey(key);
      const sequence = this.nextSequence++;
      this.linkChanges.push({ atMs: this.clockMs, sequence, from, to, reachable });
    };
    for (const key of before) if (!after.has(key)) queue(key, false);
    for (const key of after) if (!before.has(key)) queue(key, true);
  }

  private nextLinkChange(): LinkChange | undefined {
    return this.linkChanges[this.linkChangesHead];
  }
}

function validFaults(faults: LinkFaults): LinkFaults {
  const { minDelayMs, maxDelayMs, maxInFlight } = faults;
  if (
    !Number.isInteger(minDelayMs) ||
    minDelayMs < 0 ||
    !Number.isInteger(maxDelayMs) ||
    maxDelayMs < minDelayMs
  ) {
    throw new RangeError(
      `link faults: need integers 0 ≤ minDelayMs ≤ maxDelayMs, got ${minDelayMs}, ${maxDelayMs}`,
    );
  }
  for (const name of ['lossProbability', 'duplicateProbability', 'reorderProbability'] as const) {
    const p = faults[name];
    if (!(p >= 0 && p <= 1))
      throw new RangeError(`link faults: ${name} must be in [0, 1], got ${p}`);
  }
  if (!Number.isInteger(maxInFlight) || maxInFlight < 1) {
    throw new RangeError(`link faults: maxInFlight must be a positive integer, got ${maxInFlight}`);
  }
  return Object.freeze({ ...faults });
}

// Node ids never contain a NUL, so it separates the two ends unambiguously.
function linkKey(from: NodeId, to: NodeId): string {
  return `${from}\u0000${to}`;
}
function splitLinkKey(key: string): [NodeId, NodeId] {
  const at = key.indexOf('\u0000');
  return [key.slice(0, at), key.slice(at + 1)];
}

/** A binary min-heap of packets by (atMs, sequence). */
class PacketHeap<P> {
  private readonly items: Packet<P>[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): Packet<P> | undefined {
    return this.items[0];
  }

  push(packet: Packet<P>): void {
    const items = this.items;
    items.push(packet);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  pop(): Packet<P> | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (top === undefined || last === undefined || items.length === 0) return top;
    items[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < items.length && before(items[left]!, items[smallest]!)) smallest = left;
      if (right < items.length && before(items[right]!, items[smallest]!)) smallest = right;
      if (smallest === i) break;
      [items[i], items[smallest]] = [items[smallest]!, items[i]!];
      i = smallest;
    }
    return top;
  }
}

function before(
  a: { readonly atMs: number; readonly sequence: number },
  b: { readonly atMs: number; readonly sequence: number },
): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.sequence < b.sequence);
}

export interface SimTransportOptions {
  /** The largest frame `send` accepts. Default DEFAULT_MAX_FRAME_BYTES (16 MiB), as the mesh. */
  readonly maxFrameBytes?: number;
}

/**
 * One node's `Transport` over a `SimNetwork<Uint8Array>`. Frames may be lost, duplicated
 * or reordered as the network is configured to (the contract lets the simulated network
 * break its ordering guarantees on purpose). Each delivery hands the handlers a copy of
 * the frame, as a real link would: the receiver owns it, the sender's array is never
 * shared. `peerUp`/`peerDown` follow reachability in both directions, as of when the
 * network's `step()` tells of a change (a fault undone before then shows no event);
 * `peers()` changes with them. Handlers run only from `step()`, never inside `send` or
 * a fault call. A frame above `maxFrameBytes` makes `send` throw, as on the WebRTC mesh.
 */
export class SimTransport implements Transport {
  readonly localId: PeerId;
  readonly maxFrameBytes: number;
  private readonly network: SimNetwork<Uint8Array>;
  private readonly handlers: { [E in keyof TransportHandlers]: Set<TransportHandlers[E]> } = {
    frame: new Set(),
    peerUp: new Set(),
    peerDown: new Set(),
  };
  private readonly up = new Set<PeerId>();
  private closed = false;
  private readonly unsubscribe: () => void;

  constructor(network: SimNetwork<Uint8Array>, localId: PeerId, options: SimTransportOptions = {}) {
    const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes <= 0) {
      throw new RangeError(
        `SimTransport: maxFrameBytes must be a positive integer, got ${maxFrameBytes}`,
      );
    }
    this.network = network;
    this.localId = localId;
    this.maxFrameBytes = maxFrameBytes;
    network.addNode(localId, (from, frame) => {
      const copy = frame.slice();
      for (const handler of this.handlers.frame) handler(from, copy);
    });
    for (const peer of network.nodes()) if (this.linkUp(peer)) this.up.add(peer);
    this.unsubscribe = network.onLinkChange((from, to) => {
      if (from === localId) this.refresh(to);
      else if (to === localId) this.refresh(from);
    });
  }

  send(to: PeerId, frame: Uint8Array): void {
    checkFrameBytes(frame, this.maxFrameBytes);
    if (this.closed) return;
    this.network.send(this.localId, to, frame);
  }

  on<E extends keyof TransportHandlers>(event: E, handler: TransportHandlers[E]): () => void {
    const set = this.handlers[event] as Set<TransportHandlers[E]>;
    set.add(handler);
    return () => set.delete(handler);
  }

  peers(): readonly PeerId[] {
    return [...this.up];
  }

  stats(peer: PeerId): LinkStats {
    const out = this.network.counters(this.localId, peer);
    const incoming = this.network.counters(peer, this.localId);
    return {
      framesSent: out.sent,
      framesReceived: incoming.delivered,
      bytesSent: out.bytesSent,
      bytesReceived: incoming.bytesDelivered,
      framesDropped: out.dropped,
      malformedReceived: 0,
    };
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.unsubscribe();
      this.network.removeNode(this.localId);
      this.up.clear();
    }
    return Promise.resolve();
  }

  private linkUp(peer: PeerId): boolean {
    return (
      peer !== this.localId &&
      this.network.isReachable(this.localId, peer) &&
      this.network.isReachable(peer, this.localId)
    );
  }

  private refresh(peer: PeerId): void {
    const nowUp = this.linkUp(peer);
    if (nowUp === this.up.has(peer)) return;
    if (nowUp) {
      this.up.add(peer);
      for (const handler of this.handlers.peerUp) handler(peer);
    } else {
      this.up.delete(peer);
      for (const handler of this.handlers.peerDown)
        handler(peer, 'unreachable in the simulated network', true);
    }
  }
}
