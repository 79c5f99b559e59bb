/**
 * The transport contract: how a node exchanges opaque frames with its peers. Three
 * implementations stand behind it: the simulated network (virtual time, used by the
 * deterministic simulation), the WebRTC mesh (browsers and Node peers), and anything later.
 *
 * Guarantees every implementation gives:
 * - Frames from one sender to one receiver are delivered in the order sent, each at most
 *   once, unbroken (chunking, if any, is invisible), or not at all when the link fails.
 *   Nothing is delivered across a link failure without a `peerDown` before it.
 *   (The simulated network may break these on purpose: duplication, reorder, loss.)
 * - `send` never throws for an unknown, unreachable or down peer: it opens a link on
 *   demand, queues within a bound, and drops (and counts) what cannot be delivered.
 *   Callers that need delivery confirm it at their own level (Raft retries by itself).
 *   The one exception is a caller bug: a frame above `maxFrameBytes` throws a RangeError
 *   (callers split what they send into frames that fit; the node's FrameBuilder does).
 * - Handlers run one at a time, never re-entrantly from inside `send`.
 * - Malformed or oversized incoming frames are dropped and counted, never thrown.
 */

/**
 * The largest frame `send` accepts unless configured otherwise, in every implementation:
 * 16 MiB, which carries the largest snapshot chunk storage makes (8 MiB) with room to spare.
 */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** What `send` does with a frame above `maxFrameBytes`: throws, naming both sizes. */
export function checkFrameBytes(frame: Uint8Array, maxFrameBytes: number): void {
  if (frame.length > maxFrameBytes) {
    throw new RangeError(
      `Transport.send: a frame of ${frame.length} bytes is above maxFrameBytes (${maxFrameBytes}); split it`,
    );
  }
}

/** A peer's node id, as the registry assigns it. */
export type PeerId = string;

export interface TransportHandlers {
  /** A whole frame arrived from `from`. The array is owned by the handler. */
  frame(from: PeerId, frame: Uint8Array): void;
  /** A link to `peer` is usable (newly opened or re-established). */
  peerUp(peer: PeerId): void;
  /**
   * The link to `peer` failed or was closed: frames sent before may be lost. Frames not yet
   * handed to the failed link may instead go out once it is back (the WebRTC mesh keeps
   * them for one reconnection attempt); what is given up is counted in `framesDropped`.
   * Also reported, once, when a link that was never up fails its first attempt: callers
   * learn that a peer they never reached is unreachable (the WebRTC connection between two
   * members may never come up while both reach everyone else). Once per outage: the next
   * one only after a `peerUp`. `failed` is false when the link was closed on purpose by
   * either side (unused for a while, evicted to make room, its transport closing): that is
   * no sign the peer cannot be reached, and the next `send` opens the link again.
   */
  peerDown(peer: PeerId, reason: string, failed: boolean): void;
}

export interface LinkStats {
  readonly framesSent: number;
  readonly framesReceived: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  /** Outgoing frames dropped: link down, queue bound exceeded, transport closed. */
  readonly framesDropped: number;
  /** Incoming frames (or chunks) that failed validation and were discarded. */
  readonly malformedReceived: number;
}

export interface Transport {
  /** This node's id. */
  readonly localId: PeerId;
  /** The largest frame `send` accepts, in bytes. */
  readonly maxFrameBytes: number;
  /**
   * Queue `frame` for `to` (see the contract above). The caller must not mutate it afterwards.
   * Throws a RangeError if `frame` is longer than `maxFrameBytes` (a caller bug), and only then.
   */
  send(to: PeerId, frame: Uint8Array): void;
  /** Subscribes a handler; returns a function that unsubscribes it. */
  on<E extends keyof TransportHandlers>(event: E, handler: TransportHandlers[E]): () => void;
  /** Peers whose link is up now. */
  peers(): readonly PeerId[];
  /** Counters for the link to `peer` (zeros if none ever existed). */
  stats(peer: PeerId): LinkStats;
  /** Closes every link; afterwards `send` drops everything. Idempotent. */
  close(): Promise<void>;
}
