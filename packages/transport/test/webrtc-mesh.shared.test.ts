// The WebRTC mesh between two peers of one process, over an in-process signal relay:
// Node↔Node under mocha, Chromium↔Chromium (two peers in one page) under web-test-runner.
import { expect } from 'chai';
import type { RtcPeerConnectionClass } from '../src/rtc-peer.ts';
import { MemorySignalRelay } from '../src/signal-channel.ts';
import type { PeerId } from '../src/transport.ts';
import { WebRtcMesh, type WebRtcMeshOptions } from '../src/webrtc-mesh.ts';
import { FrameLog, indexedFrame, patternFrame } from './mesh-helpers.ts';
import { waitFor } from './support.ts';

/**
 * For the bulk transfers: both peers share one thread and one pair of UDP sockets here, and
 * on a loaded machine SCTP has been seen to go quiet for over 2 s (retransmission timeouts)
 * in the middle of a 4 MiB transfer; the default peerTimeoutMs would then end the link.
 * Failure detection is tested on its own below.
 */
const BULK: Partial<WebRtcMeshOptions> = { peerTimeoutMs: 15_000 };

const kind = typeof window === 'undefined' ? 'Node↔Node' : 'Chromium↔Chromium';

describe(`WebRtcMesh (${kind}, in-process signaling)`, () => {
  let relay: MemorySignalRelay;
  let meshes: WebRtcMesh[];
  let PeerConnection: RtcPeerConnectionClass;

  function start(id: PeerId, options: Partial<WebRtcMeshOptions> = {}): WebRtcMesh {
    const signal = relay.join(id);
    const mesh = new WebRtcMesh({
      localId: id,
      signal,
      RTCPeerConnection: PeerConnection,
      ...options,
    });
    meshes.push(mesh);
    return mesh;
  }

  before(async () => {
    PeerConnection = await platformRTCPeerConnection();
  });

  beforeEach(() => {
    relay = new MemorySignalRelay();
    meshes = [];
  });

  afterEach(async () => {
    await Promise.all(meshes.map((mesh) => mesh.close()));
  });

  for (const [initiator, responder] of [
    ['a', 'b'],
    ['b', 'a'],
  ] as const) {
    it(`echoes 1 B, 64 KiB and 4 MiB frames intact (first send from ${initiator})`, async () => {
      const sender = start(initiator, BULK);
      const echo = start(responder, BULK);
      echo.on('frame', (from, frame) => echo.send(from, frame));
      const log = new FrameLog(sender);
      const sizes = [1, 64 * 1024, 4 * 1024 * 1024, 1];
      sizes.forEach((size, i) => {
        sender.send(responder, patternFrame(size, i));
      });
      await waitFor(
        () => log.frames.length === sizes.length,
        'all echoes',
        60_000,
        () => meshState(sender, echo),
      );
      log.frames.forEach(({ from, frame }, i) => {
        expect(from).to.equal(responder);
        expect(frame).to.deep.equal(patternFrame(sizes[i]!, i));
      });
      expect(sender.stats(responder)).to.include({
        framesSent: sizes.length,
        framesReceived: sizes.length,
        framesDropped: 0,
        malformedReceived: 0,
      });
    });
  }

  it('delivers 10 000 small frames in order without loss', async () => {
    const a = start('a', BULK);
    const b = start('b', BULK);
    const log = new FrameLog(b);
    const count = 10_000;
    for (let i = 0; i < count; i++) a.send('b', indexedFrame(i));
    await waitFor(
      () => log.frames.length === count,
      `${count} frames`,
      60_000,
      () => meshState(a, b),
    );
    const order = log.frames.map(({ frame }) => new DataView(frame.buffer).getUint32(0));
    expect(order).to.deep.equal(Array.from({ length: count }, (_, i) => i));
    log.frames.forEach(({ frame }, i) => {
      expect(frame).to.deep.equal(indexedFrame(i));
    });
    expect(b.stats('a').framesReceived).to.equal(count);
    expect(a.stats('b').framesDropped).to.equal(0);
  });

  it('reports peerUp on both sides and peerDown when the peer closes', async () => {
    const a = start('a');
    const b = start('b');
    const events: string[] = [];
    a.on('peerUp', (peer) => events.push(`up ${peer}`));
    a.on('peerDown', (peer) => events.push(`down ${peer}`));
    b.send('a', new Uint8Array([1]));
    await waitFor(() => a.peers().includes('b') && b.peers().includes('a'), 'link up');
    await b.close();
    await waitFor(() => events.includes('down b'), 'peerDown');
    expect(events).to.deep.equal(['up b', 'down b']);
    expect(a.peers()).to.deep.equal([]);
  });

  it('reports a silent peer down by heartbeat timeout and reconnects when it returns', async () => {
    const timing = { heartbeatIntervalMs: 100, peerTimeoutMs: 600, connectTimeoutMs: 2_000 };
    const a = start('a', timing);
    let b = start('b', timing);
    const downs: string[] = [];
    a.on('peerDown', (_peer, reason) => downs.push(reason));
    a.send('b', new Uint8Array([1]));
    await waitFor(() => a.peers().includes('b'), 'link up');
    // Freeze b: its timers stop and it never answers, as a hung or killed process.
    relay.leave('b');
    freeze(b);
    await waitFor(() => downs.length === 1, 'peerDown');
    expect(downs[0]).to.match(/heartbeat/);
    // "Restart" b with the same id: a still wants the link and re-signals it.
    b = start('b', timing);
    const log = new FrameLog(b);
    await waitFor(() => a.peers().includes('b'), 'link back up', 30_000);
    a.send('b', new Uint8Array([7]));
    await waitFor(() => log.frames.length === 1, 'frame over the new link');
  });

  it('drops frames above maxFrameBytes and beyond the queue bound, and counts them', async () => {
    const a = start('a', { maxFrameBytes: 1024, maxQueuedBytesPerPeer: 4096 });
    start('b');
    a.send('b', new Uint8Array(1025));
    for (let i = 0; i < 5; i++) a.send('b', new Uint8Array(1024));
    expect(a.stats('b').framesDropped).to.equal(2);
    a.send('a', new Uint8Array(1));
    expect(a.stats('a').framesDropped).to.equal(1);
  });

  it('drops and counts malformed and oversized incoming data; the link stays usable', async () => {
    const a = start('a');
    const b = start('b', { maxFrameBytes: 1024 });
    const log = new FrameLog(b);
    a.send('b', new Uint8Array([1]));
    await waitFor(() => log.frames.length === 1, 'first frame');
    a.send('b', new Uint8Array(2000)); // above b's maxFrameBytes
    await waitFor(() => b.stats('a').malformedReceived === 1, 'oversized frame counted');
    // A broken peer: raw garbage on the channel, under the mesh's framing.
    const links = (a as unknown as { links: Map<string, { sp: { send(m: Uint8Array): void } }> })
      .links;
    links.get('b')!.sp.send(new Uint8Array([1, 2, 0, 0, 0, 9]));
    links.get('b')!.sp.send(new Uint8Array([7]));
    await waitFor(() => b.stats('a').malformedReceived === 3, 'garbage counted');
    a.send('b', new Uint8Array([3]));
    await waitFor(() => log.frames.length === 2, 'frame after the garbage');
    expect(log.frames[1]!.frame).to.deep.equal(new Uint8Array([3]));
    expect(b.stats('a')).to.include({ framesReceived: 2, malformedReceived: 3 });
    expect(b.peers()).to.deep.equal(['a']);
  });

  it('ignores and counts malformed signals', async () => {
    const a = start('a');
    const rogue = relay.join('z');
    for (const data of [{}, { v: 2, kind: 'dial' }, { v: 1, kind: 'rtc', session: '' }]) {
      rogue.sendSignal('a', data);
    }
    rogue.sendSignal('a', { v: 1, kind: 'dial' }); // valid: the larger id 'z' may ask 'a'
    await waitFor(() => a.meshStats().malformedSignals === 3, 'malformed signals counted');
    // The valid dial made 'a' (the smaller id) start a link to 'z', which never answers.
    expect(a.peers()).to.deep.equal([]);
  });

  it('closes idle links and reopens them on demand', async () => {
    const options = { linkIdleTimeoutMs: 300, heartbeatIntervalMs: 100, peerTimeoutMs: 1_000 };
    const a = start('a', options);
    const b = start('b', options);
    const log = new FrameLog(b);
    const downs: string[] = [];
    b.on('peerDown', (_peer, reason) => downs.push(reason));
    a.send('b', new Uint8Array([1]));
    await waitFor(() => log.frames.length === 1, 'first frame');
    await waitFor(() => a.meshStats().activeLinks === 0 && downs.length === 1, 'idle close');
    a.send('b', new Uint8Array([2]));
    await waitFor(() => log.frames.length === 2, 'frame over a reopened link');
  });

  it('keeps at most maxLinks links, closing the least recently used idle one', async () => {
    const a = start('a', { maxLinks: 1 });
    const b = start('b');
    const c = start('c');
    const logB = new FrameLog(b);
    const logC = new FrameLog(c);
    a.send('b', new Uint8Array([1]));
    await waitFor(() => logB.frames.length === 1, 'frame to b');
    a.send('c', new Uint8Array([2]));
    await waitFor(() => logC.frames.length === 1, 'frame to c');
    expect(a.peers()).to.deep.equal(['c']);
    expect(a.meshStats().activeLinks).to.equal(1);
  });
});

/** Counters and events of two meshes, for a failure message. */
function meshState(x: WebRtcMesh, y: WebRtcMesh) {
  return {
    [x.localId]: { link: x.stats(y.localId), mesh: x.meshStats(), peers: x.peers() },
    [y.localId]: { link: y.stats(x.localId), mesh: y.meshStats(), peers: y.peers() },
  };
}

/** Stops a mesh's timers and links without telling its peers, as a killed process would. */
function freeze(mesh: WebRtcMesh): void {
  const internals = mesh as unknown as { ticker: ReturnType<typeof setInterval> };
  clearInterval(internals.ticker);
  for (const method of ['send', 'onSignal', 'onMessage', 'tick'] as const) {
    (mesh as unknown as Record<string, unknown>)[method] = () => {};
  }
}

/** The RTCPeerConnection of this environment: node-datachannel's in Node, native in a page. */
async function platformRTCPeerConnection(): Promise<RtcPeerConnectionClass> {
  if (typeof window !== 'undefined') return window.RTCPeerConnection;
  // Loaded only in Node: the browser never fetches the native module.
  const { nodeRTCPeerConnection } = await import('../src/webrtc.node.ts');
  return nodeRTCPeerConnection;
}
