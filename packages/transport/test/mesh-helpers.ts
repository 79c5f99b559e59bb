// Helpers shared by the transport tests (Node and browser).
import type { PeerId, Transport } from '../src/transport.ts';
import { WebRtcMesh } from '../src/webrtc-mesh.ts';

/** A frame of `size` bytes whose content depends on `seed`, to detect mixups and damage. */
export function patternFrame(size: number, seed: number): Uint8Array {
  const frame = new Uint8Array(size);
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    frame[i] = x >>> 24;
  }
  return frame;
}

/** Records every frame a transport receives, in order. */
export class FrameLog {
  readonly frames: { from: PeerId; frame: Uint8Array }[] = [];

  constructor(transport: Transport) {
    transport.on('frame', (from, frame) => this.frames.push({ from, frame }));
  }
}

/** Frame `i` of a numbered sequence: its index (u32), then a pattern of 4..203 bytes. */
export function indexedFrame(i: number): Uint8Array {
  const body = patternFrame(4 + (i % 200), i);
  const frame = new Uint8Array(4 + body.length);
  new DataView(frame.buffer).setUint32(0, i);
  frame.set(body, 4);
  return frame;
}

/**
 * Drives one transport in the cross-environment tests (in Node, in a child process, in a
 * page): sends known frames, keeps what arrives per peer, echoes if asked, logs link events.
 * Its methods take and return only JSON values, so a test can call them in a page.
 */
export class MeshProbe {
  readonly events: string[] = [];
  private readonly received = new Map<PeerId, Uint8Array[]>();
  /** Resolvers of `arrivals`, checked on each frame. */
  private waiters: { from: PeerId; count: number; resolve: () => void }[] = [];

  constructor(
    readonly transport: Transport,
    echo: boolean,
  ) {
    transport.on('frame', (from, frame) => {
      if (echo) {
        transport.send(from, frame);
        return;
      }
      const frames = this.framesFrom(from);
      frames.push(frame);
      if (this.waiters.length === 0) return;
      this.waiters = this.waiters.filter((waiter) => {
        if (waiter.from !== from || frames.length < waiter.count) return true;
        waiter.resolve();
        return false;
      });
    });
    transport.on('peerUp', (peer) => this.events.push(`up ${peer}`));
    transport.on('peerDown', (peer, reason) => this.events.push(`down ${peer} ${reason}`));
  }

  sendPatterns(to: PeerId, sizes: readonly number[]): void {
    sizes.forEach((size, i) => {
      this.transport.send(to, patternFrame(size, i));
    });
  }

  sendIndexed(to: PeerId, count: number): void {
    for (let i = 0; i < count; i++) this.transport.send(to, indexedFrame(i));
  }

  /**
   * Benchmark: sends `count` frames of `frameBytes` to an echoing peer and resolves with
   * the milliseconds until the last echo arrived (each frame crosses the link both ways).
   */
  async timeEchoes(to: PeerId, frameBytes: number, count: number): Promise<number> {
    this.reset(to);
    const frame = patternFrame(frameBytes, 1);
    const arrived = this.arrivals(to, count);
    const startMs = performance.now();
    for (let i = 0; i < count; i++) this.transport.send(to, frame);
    await arrived;
    return performance.now() - startMs;
  }

  /** Benchmark: `samples` sequential round trips of one `frameBytes` frame, in ms. */
  async roundTrips(to: PeerId, frameBytes: number, samples: number): Promise<number[]> {
    this.reset(to);
    const frame = patternFrame(frameBytes, 2);
    const times: number[] = [];
    for (let i = 1; i <= samples; i++) {
      const arrived = this.arrivals(to, i);
      const startMs = performance.now();
      this.transport.send(to, frame);
      await arrived;
      times.push(performance.now() - startMs);
    }
    return times;
  }

  /** Resolves once `count` frames have arrived from `from` since the last reset. */
  private arrivals(from: PeerId, count: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.count(from) >= count) resolve();
      else this.waiters.push({ from, count, resolve });
    });
  }

  count(from: PeerId): number {
    return this.framesFrom(from).length;
  }

  /** Forgets what arrived from `from`. */
  reset(from: PeerId): void {
    this.received.delete(from);
  }

  /** True if exactly the frames of `sendPatterns(…, sizes)` arrived from `from`, in order. */
  matchesPatterns(from: PeerId, sizes: readonly number[]): boolean {
    const frames = this.framesFrom(from);
    return (
      frames.length === sizes.length &&
      sizes.every((size, i) => sameBytes(frames[i]!, patternFrame(size, i)))
    );
  }

  /** True if exactly the frames of `sendIndexed(…, count)` arrived from `from`, in order. */
  matchesIndexed(from: PeerId, count: number): boolean {
    const frames = this.framesFrom(from);
    return frames.length === count && frames.every((frame, i) => sameBytes(frame, indexedFrame(i)));
  }

  /** What a failed wait needs: the frames from `peer`, the link's state, stats and events. */
  describe(peer: PeerId): string {
    const sizes = this.framesFrom(peer).map((frame) => frame.length);
    const shown = sizes.length > 8 ? `${sizes.slice(0, 8).join(', ')}, …` : sizes.join(', ');
    return [
      `${sizes.length} frames from ${peer} (bytes: ${shown})`,
      `link ${this.isUp(peer) ? 'up' : 'not up'}`,
      `stats ${JSON.stringify(this.transport.stats(peer))}`,
      `events ${this.events.slice(-10).join('; ') || 'none'}`,
      ...(this.transport instanceof WebRtcMesh
        ? [`link now ${JSON.stringify(this.transport.linkState(peer) ?? 'none')}`]
        : []),
    ].join('; ');
  }

  isUp(peer: PeerId): boolean {
    return this.transport.peers().includes(peer);
  }

  /** How many times the link to `peer` was reported down. */
  downs(peer: PeerId): number {
    return this.events.filter((event) => event.startsWith(`down ${peer} `)).length;
  }

  private framesFrom(from: PeerId): Uint8Array[] {
    let frames = this.received.get(from);
    if (frames === undefined) {
      frames = [];
      this.received.set(from, frames);
    }
    return frames;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
