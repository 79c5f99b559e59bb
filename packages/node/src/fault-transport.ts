/**
 * Fault controls in front of a Transport, for the demo's buttons and the browser tests:
 * isolate the node (every frame in and out dropped) or drop a share of its frames. Links
 * stay up underneath (the mesh keeps its heartbeats), so the cluster sees what a bad
 * network looks like to Raft: silence and loss, not a clean peerDown. Isomorphic.
 */
import type { Prng } from '@meshkv/raft';
import type { LinkStats, PeerId, Transport, TransportHandlers } from '@meshkv/transport';

/** What the faults dropped, beside the transport's own counters. */
export interface FaultStats {
  readonly framesDroppedOut: number;
  readonly framesDroppedIn: number;
}

/** What the faults are set to, and what they dropped since the transport was made. */
export interface FaultState extends FaultStats {
  readonly isolated: boolean;
  readonly dropPercent: number;
}

/** Refuses a drop share outside 0..100 (RangeError). */
export function checkDropPercent(percent: number): void {
  if (!(percent >= 0 && percent <= 100)) {
    throw new RangeError(`drop percent ${percent} is not in 0..100`);
  }
}

export class FaultyTransport implements Transport {
  private isolated = false;
  /** Share of frames dropped, 0..100, each way. */
  private dropPercent = 0;
  private droppedOut = 0;
  private droppedIn = 0;

  constructor(
    private readonly inner: Transport,
    private readonly random: Prng,
  ) {}

  get localId(): PeerId {
    return this.inner.localId;
  }

  get maxFrameBytes(): number {
    return this.inner.maxFrameBytes;
  }

  setIsolated(isolated: boolean): void {
    this.isolated = isolated;
  }

  /** Drops `percent` of the frames each way from now on (0 stops dropping). */
  setDropPercent(percent: number): void {
    checkDropPercent(percent);
    this.dropPercent = percent;
  }

  faults(): FaultState {
    return {
      isolated: this.isolated,
      dropPercent: this.dropPercent,
      framesDroppedOut: this.droppedOut,
      framesDroppedIn: this.droppedIn,
    };
  }

  send(to: PeerId, frame: Uint8Array): void {
    if (this.drops()) {
      // The contract's one throw (a caller bug) holds whatever the faults.
      if (frame.length > this.inner.maxFrameBytes) this.inner.send(to, frame);
      this.droppedOut++;
      return;
    }
    this.inner.send(to, frame);
  }

  on<E extends keyof TransportHandlers>(event: E, handler: TransportHandlers[E]): () => void {
    if (event !== 'frame') return this.inner.on(event, handler);
    const frameHandler = handler as TransportHandlers['frame'];
    return this.inner.on('frame', (from, frame) => {
      if (this.drops()) {
        this.droppedIn++;
        return;
      }
      frameHandler(from, frame);
    });
  }

  peers(): readonly PeerId[] {
    return this.inner.peers();
  }

  stats(peer: PeerId): LinkStats {
    return this.inner.stats(peer);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private drops(): boolean {
    if (this.isolated) return true;
    // 0 and 100 draw nothing: a fault-free node uses no randomness here.
    if (this.dropPercent === 0) return false;
    return this.dropPercent === 100 || this.random.nextInt(10_000) < this.dropPercent * 100;
  }
}
