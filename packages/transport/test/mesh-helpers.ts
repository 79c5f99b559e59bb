// Helpers shared by the transport tests (Node and browser).
import type { RtcPeerConnectionClass } from '../src/rtc-peer.ts';
import type { PeerId, Transport } from '../src/transport.ts';

/** The RTCPeerConnection of this environment: node-datachannel's in Node, native in a page. */
export async function platformRTCPeerConnection(): Promise<RtcPeerConnectionClass> {
  if (typeof window !== 'undefined') return window.RTCPeerConnection;
  // Loaded only in Node: the browser never fetches the native module.
  const { nodeRTCPeerConnection } = await import('../src/webrtc.node.ts');
  return nodeRTCPeerConnection;
}

/**
 * Resolves once `condition()` holds; rejects after `deadlineMs` naming `what`. Polls: the
 * tests wait on conditions, never on fixed sleeps, and assert no timing.
 */
export async function waitFor(
  condition: () => boolean,
  what: string,
  deadlineMs = 60_000,
): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > deadlineMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

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
