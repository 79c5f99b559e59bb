import type { PeerId } from './transport.ts';

/**
 * What the WebRTC mesh needs from signaling: a best-effort, unordered-across-peers relay
 * of small JSON messages between members, and word of members (re)appearing.
 *
 * Contract:
 * - `sendSignal` never throws; a message may be lost (signaling server down, target
 *   offline). The mesh copes by timing out connection attempts and retrying.
 * - Messages from one sender to one receiver arrive in the order sent, or not at all.
 * - `data` is a plain JSON object; the receiver validates it (it crossed a server).
 * - `peerOnline` fires when `peer` (re)joined signaling, e.g. after a restart; the mesh
 *   then re-signals links it still wants instead of waiting for its retry backoff.
 */
export interface SignalChannel {
  sendSignal(to: PeerId, data: SignalData): void;
  /** Subscribes; returns a function that unsubscribes. */
  onSignal(handler: (from: PeerId, data: unknown) => void): () => void;
  /** Subscribes; returns a function that unsubscribes. */
  onPeerOnline(handler: (peer: PeerId) => void): () => void;
}

export type SignalData = { readonly [key: string]: unknown };

/**
 * An in-process signal relay: every endpoint created from one relay reaches the others.
 * For tests, benchmarks and pages hosting several nodes. Delivery is asynchronous (a
 * macrotask later), as over a real server, so no handler runs inside `sendSignal`.
 */
export class MemorySignalRelay {
  private readonly endpoints = new Map<PeerId, MemorySignalEndpoint>();

  /** Joins `id` (replacing an endpoint of the same id, as a restarted member would). */
  join(id: PeerId): SignalChannel {
    const endpoint = new MemorySignalEndpoint(this, id);
    this.endpoints.set(id, endpoint);
    for (const [other, peer] of this.endpoints) {
      if (other !== id) peer.announce(id);
    }
    return endpoint;
  }

  /** Removes `id`; signals to it are lost from now on. */
  leave(id: PeerId): void {
    this.endpoints.delete(id);
  }

  /** @internal */
  deliver(from: PeerId, to: PeerId, data: SignalData): void {
    // A JSON round trip, as over the wire: nothing shared, nothing non-JSON survives.
    const copy: unknown = JSON.parse(JSON.stringify(data));
    setTimeout(() => this.endpoints.get(to)?.receive(from, copy), 0);
  }
}

class MemorySignalEndpoint implements SignalChannel {
  private readonly signalHandlers = new Set<(from: PeerId, data: unknown) => void>();
  private readonly onlineHandlers = new Set<(peer: PeerId) => void>();

  constructor(
    private readonly relay: MemorySignalRelay,
    private readonly id: PeerId,
  ) {}

  sendSignal(to: PeerId, data: SignalData): void {
    this.relay.deliver(this.id, to, data);
  }

  onSignal(handler: (from: PeerId, data: unknown) => void): () => void {
    this.signalHandlers.add(handler);
    return () => this.signalHandlers.delete(handler);
  }

  onPeerOnline(handler: (peer: PeerId) => void): () => void {
    this.onlineHandlers.add(handler);
    return () => this.onlineHandlers.delete(handler);
  }

  receive(from: PeerId, data: unknown): void {
    for (const handler of this.signalHandlers) handler(from, data);
  }

  announce(peer: PeerId): void {
    setTimeout(() => {
      for (const handler of this.onlineHandlers) handler(peer);
    }, 0);
  }
}
