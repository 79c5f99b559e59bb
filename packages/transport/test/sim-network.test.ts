import { mulberry32, type NodeId } from '@meshkv/raft';
import { expect } from 'chai';
import {
  type LinkFaults,
  SimNetwork,
  type SimNetworkEvent,
  SimTransport,
} from '../src/sim-network.ts';
import { DEFAULT_MAX_FRAME_BYTES } from '../src/transport.ts';

interface Delivery {
  atMs: number;
  from: NodeId;
  to: NodeId;
  payload: number;
}

/** A network of `nodes` carrying numbers; records deliveries and events. */
function makeNetwork(seed: number, nodes: readonly NodeId[], defaults: Partial<LinkFaults> = {}) {
  const events: SimNetworkEvent<number>[] = [];
  const network = new SimNetwork<number>({
    prng: mulberry32(seed),
    defaults,
    onEvent: (event) => events.push(event),
  });
  const delivered: Delivery[] = [];
  for (const node of nodes) {
    network.addNode(node, (from, payload) =>
      delivered.push({ atMs: network.nowMs, from, to: node, payload }),
    );
  }
  const drops = (reason: string) =>
    events.filter((e) => e.kind === 'drop' && e.reason === reason).length;
  return { network, events, delivered, drops };
}

const lossy: Partial<LinkFaults> = {
  minDelayMs: 1,
  maxDelayMs: 50,
  lossProbability: 0.1,
  duplicateProbability: 0.1,
  reorderProbability: 0.5,
};

/** Sends `count` numbered packets round-robin between all ordered pairs, one per ms. */
function sendTraffic(network: SimNetwork<number>, nodes: readonly NodeId[], count: number): void {
  let n = 0;
  for (let ms = 0; n < count; ms++) {
    network.advanceTo(ms);
    for (const from of nodes) {
      for (const to of nodes) if (from !== to && n < count) network.send(from, to, n++);
    }
  }
}

function traceOf(seed: number): string[] {
  const nodes = ['a', 'b', 'c'];
  const { network, events } = makeNetwork(seed, nodes, lossy);
  sendTraffic(network, nodes, 600);
  network.advanceTo(1_000);
  return events.map((e) => JSON.stringify(e));
}

describe('SimNetwork', () => {
  it('replays the same trace from the same seed, and another from another seed', () => {
    const first = traceOf(42);
    expect(first.length).to.be.greaterThan(600);
    expect(traceOf(42)).to.deep.equal(first);
    expect(traceOf(43)).to.not.deep.equal(first);
  });

  it('delays each packet within the configured range', () => {
    const { network, events } = makeNetwork(1, ['a', 'b'], {
      minDelayMs: 5,
      maxDelayMs: 9,
      reorderProbability: 1,
    });
    for (let i = 0; i < 200; i++) network.send('a', 'b', i);
    network.advanceTo(100);
    const delays = events.flatMap((e) => (e.kind === 'send' ? [e.deliverAtMs - e.atMs] : []));
    expect(Math.min(...delays)).to.equal(5);
    expect(Math.max(...delays)).to.equal(9);
    expect(events.filter((e) => e.kind === 'deliver').map((e) => e.atMs)).to.satisfy(
      (times: number[]) => times.every((t) => t >= 5 && t <= 9),
    );
  });

  it('keeps each link FIFO without reordering, and reorders when asked to', () => {
    const nodes = ['a', 'b', 'c'];
    const fifo = makeNetwork(7, nodes, {
      ...lossy,
      lossProbability: 0,
      duplicateProbability: 0,
      reorderProbability: 0,
    });
    sendTraffic(fifo.network, nodes, 600);
    fifo.network.advanceTo(1_000);
    expect(fifo.delivered).to.have.length(600);
    for (const from of nodes) {
      for (const to of nodes) {
        const onLink = fifo.delivered
          .filter((d) => d.from === from && d.to === to)
          .map((d) => d.payload);
        expect(onLink, `${from}→${to}`).to.deep.equal([...onLink].sort((x, y) => x - y));
      }
    }
    const shuffled = makeNetwork(7, nodes, {
      ...lossy,
      lossProbability: 0,
      duplicateProbability: 0,
      reorderProbability: 1,
    });
    sendTraffic(shuffled.network, nodes, 600);
    shuffled.network.advanceTo(1_000);
    const aToB = shuffled.delivered
      .filter((d) => d.from === 'a' && d.to === 'b')
      .map((d) => d.payload);
    expect(aToB).to.not.deep.equal([...aToB].sort((x, y) => x - y));
  });

  it('loses and duplicates packets with the configured probabilities', () => {
    const seed = 11;
    const { network, delivered, drops, events } = makeNetwork(seed, ['a', 'b'], {
      lossProbability: 0.3,
      duplicateProbability: 0.2,
    });
    for (let i = 0; i < 2000; i++) network.send('a', 'b', i);
    network.advanceTo(10);
    const lost = drops('loss');
    const duplicated = events.filter((e) => e.kind === 'duplicate').length;
    // Binomial(2000, p) stays within ±5 standard deviations for any seed but a freak one.
    expect(lost, `seed ${seed}`).to.be.within(600 - 103, 600 + 103);
    expect(duplicated, `seed ${seed}`).to.be.within(280 - 80, 280 + 80);
    expect(delivered).to.have.length(2000 - lost + duplicated);
    const counts = network.counters('a', 'b');
    expect(counts).to.deep.include({
      sent: 2000,
      dropped: lost,
      duplicated,
      delivered: delivered.length,
    });
    const all = makeNetwork(seed, ['a', 'b'], { lossProbability: 1 });
    for (let i = 0; i < 100; i++) all.network.send('a', 'b', i);
    all.network.advanceTo(10);
    expect(all.delivered).to.have.length(0);
    expect(all.drops('loss')).to.equal(100);
  });

  it('partitions symmetrically, drops packets in flight across a new partition, and heals', () => {
    const { network, delivered, drops } = makeNetwork(3, ['a', 'b', 'c', 'd'], {
      minDelayMs: 10,
      maxDelayMs: 10,
    });
    network.send('a', 'c', 1); // in flight when the partition starts
    network.advanceTo(5);
    network.partition([['a', 'b'], ['c']]); // d is in neither side: its own side
    for (const [from, to] of [
      ['a', 'b'],
      ['b', 'a'],
      ['a', 'c'],
      ['c', 'a'],
      ['a', 'd'],
      ['d', 'c'],
    ] as const) {
      network.send(from, to, 2);
    }
    network.advanceTo(100);
    expect(delivered.map((d) => `${d.from}${d.to}`)).to.deep.equal(['ab', 'ba']);
    expect(drops('blocked')).to.equal(5);
    expect(network.isReachable('a', 'c')).to.equal(false);
    network.heal();
    network.send('a', 'c', 3);
    network.send('d', 'c', 3);
    network.advanceTo(200);
    expect(delivered.slice(2).map((d) => `${d.from}${d.to}`)).to.deep.equal(['ac', 'dc']);
  });

  it('blocks one direction only (asymmetric partition) and isolates a node', () => {
    const { network, delivered } = makeNetwork(4, ['a', 'b', 'c']);
    network.setBlocked('a', 'b', true);
    network.send('a', 'b', 1);
    network.send('b', 'a', 2);
    network.advanceTo(10);
    expect(delivered.map((d) => d.payload)).to.deep.equal([2]);
    network.heal();
    network.isolate('c');
    network.send('a', 'b', 3);
    network.send('c', 'a', 4);
    network.send('b', 'c', 5);
    network.advanceTo(20);
    expect(delivered.map((d) => d.payload)).to.deep.equal([2, 3]);
  });

  it('holds a clogged link’s packets and releases them in order when the clog ends', () => {
    const { network, delivered, events } = makeNetwork(5, ['a', 'b'], {
      minDelayMs: 1,
      maxDelayMs: 1,
    });
    network.clog('a', 'b', 100);
    for (let i = 0; i < 5; i++) {
      network.advanceTo(i * 10);
      network.send('a', 'b', i);
      network.send('b', 'a', i); // the other direction flows
    }
    network.advanceTo(99);
    expect(delivered.filter((d) => d.to === 'b')).to.have.length(0);
    expect(delivered.filter((d) => d.to === 'a')).to.have.length(5);
    network.advanceTo(100);
    const released = delivered.filter((d) => d.to === 'b');
    expect(released.map((d) => d.payload)).to.deep.equal([0, 1, 2, 3, 4]);
    expect(released.every((d) => d.atMs === 100)).to.equal(true);
    expect(events.filter((e) => e.kind === 'hold')).to.have.length(5);
  });

  it('drops traffic to and from a node that is down, including packets already in flight', () => {
    const { network, delivered, drops } = makeNetwork(6, ['a', 'b'], {
      minDelayMs: 10,
      maxDelayMs: 10,
    });
    network.send('a', 'b', 1);
    network.setDown('b', true);
    network.send('b', 'a', 2);
    network.advanceTo(50);
    expect(delivered).to.have.length(0);
    expect(drops('down')).to.equal(2);
    network.setDown('b', false);
    network.send('a', 'b', 3);
    network.advanceTo(100);
    expect(delivered.map((d) => d.payload)).to.deep.equal([3]);
  });

  it('bounds the packets in flight per link', () => {
    const { network, delivered, drops } = makeNetwork(8, ['a', 'b'], { maxInFlight: 3 });
    for (let i = 0; i < 5; i++) network.send('a', 'b', i);
    network.advanceTo(10);
    expect(delivered.map((d) => d.payload)).to.deep.equal([0, 1, 2]);
    expect(drops('capacity')).to.equal(2);
  });

  it('steps one event at a time and refuses to go back in time or loop forever', () => {
    const { network, delivered } = makeNetwork(9, ['a', 'b'], { minDelayMs: 3, maxDelayMs: 3 });
    network.send('a', 'b', 1);
    expect(network.nextEventAtMs()).to.equal(3);
    expect(network.step()).to.equal(true);
    expect(network.nowMs).to.equal(3);
    expect(delivered).to.have.length(1);
    expect(network.step()).to.equal(false);
    expect(() => network.advanceTo(2)).to.throw(RangeError);
    // A ping-pong that never ends trips the event bound.
    const echo = new SimNetwork<number>({ prng: mulberry32(1) });
    echo.addNode('x', (_from, n) => echo.send('x', 'y', n + 1));
    echo.addNode('y', (_from, n) => echo.send('y', 'x', n + 1));
    echo.send('x', 'y', 0);
    expect(() => echo.advanceTo(1_000_000, 100)).to.throw('more than 100 packet events');
    expect(() => echo.configureAll({ lossProbability: 2 })).to.throw(
      'lossProbability must be in [0, 1]',
    );
    expect(() => echo.configureLink('x', 'y', { minDelayMs: 5, maxDelayMs: 4 })).to.throw(
      RangeError,
    );
  });
});

describe('SimTransport', () => {
  function makeMesh(seed: number) {
    const network = new SimNetwork<Uint8Array>({
      prng: mulberry32(seed),
      sizeBytes: (frame) => frame.byteLength,
      clone: (frame) => frame.slice(),
    });
    const a = new SimTransport(network, 'a');
    const b = new SimTransport(network, 'b');
    const c = new SimTransport(network, 'c');
    network.advanceTo(0); // the network tells each endpoint of those added after it
    return { network, a, b, c };
  }

  it('carries frames between endpoints and counts them', () => {
    const { network, a, b } = makeMesh(1);
    const received: string[] = [];
    let inSend = false;
    b.on('frame', (from, frame) => {
      expect(inSend, 'handler ran inside send').to.equal(false);
      received.push(`${from}:${frame.join(',')}`);
    });
    inSend = true;
    a.send('b', Uint8Array.of(1, 2, 3));
    inSend = false;
    network.advanceTo(10);
    expect(received).to.deep.equal(['a:1,2,3']);
    expect(a.stats('b')).to.deep.include({ framesSent: 1, bytesSent: 3 });
    expect(b.stats('a')).to.deep.include({ framesReceived: 1, bytesReceived: 3 });
    expect(a.stats('nobody')).to.deep.include({ framesSent: 0, framesReceived: 0 });
    expect([...a.peers()].sort()).to.deep.equal(['b', 'c']);
  });

  it('reports peers down across a partition (either direction) and up after healing, from step() only', async () => {
    const { network, a, b } = makeMesh(2);
    const events: string[] = [];
    let inFaultCall = false;
    const record = (event: string) => {
      expect(inFaultCall, `${event} reported inside a fault call`).to.equal(false);
      events.push(event);
    };
    a.on('peerDown', (peer) => record(`down ${peer}`));
    a.on('peerUp', (peer) => record(`up ${peer}`));
    /** Makes a fault call, then lets the network tell what it changed. */
    const fault = (call: () => void) => {
      inFaultCall = true;
      call();
      inFaultCall = false;
      network.advanceTo(network.nowMs);
    };
    inFaultCall = true;
    network.setBlocked('b', 'a', true); // one direction is enough to make the link unusable
    inFaultCall = false;
    // The news waits for step(): peers() changes with the event.
    expect(events).to.deep.equal([]);
    expect([...a.peers()].sort()).to.deep.equal(['b', 'c']);
    network.advanceTo(network.nowMs);
    expect(events).to.deep.equal(['down b']);
    expect(a.peers()).to.deep.equal(['c']);
    fault(() => network.heal());
    fault(() => network.partition([['a'], ['b', 'c']]));
    fault(() => network.heal());
    expect(events).to.deep.equal(['down b', 'up b', 'down b', 'down c', 'up b', 'up c']);
    // Closing an endpoint tells the others (from step()) and makes its sends no-ops.
    await b.close();
    expect(events.at(-1)).to.equal('up c');
    network.advanceTo(network.nowMs);
    expect(events.at(-1)).to.equal('down b');
    b.send('a', Uint8Array.of(9));
    expect(network.inFlight()).to.equal(0);
  });

  it('tells of a fault in time order with the packets, and of none that was undone meanwhile', () => {
    const { network, a, b } = makeMesh(4);
    const events: string[] = [];
    b.on('frame', (_from, frame) => events.push(`frame ${frame[0]}`));
    b.on('peerDown', (peer) => events.push(`down ${peer}`));
    b.on('peerUp', (peer) => events.push(`up ${peer}`));
    a.send('b', Uint8Array.of(1)); // due at 1 ms
    network.isolate('c');
    network.heal(); // undone before step(): no event about c
    network.setBlocked('a', 'b', true);
    network.advanceTo(10);
    // The frame was in flight when a → b was cut: dropped, after b heard a is down.
    expect(events).to.deep.equal(['down a']);
    network.heal();
    a.send('b', Uint8Array.of(2));
    network.advanceTo(20);
    expect(events).to.deep.equal(['down a', 'up a', 'frame 2']);
  });

  it("gives the receiver its own copy of a frame, never the sender's array", () => {
    const { network, a, b } = makeMesh(5);
    const frames: Uint8Array[] = [];
    b.on('frame', (_from, frame) => frames.push(frame));
    const sent = Uint8Array.of(1, 2, 3);
    a.send('b', sent);
    network.advanceTo(10);
    expect(frames).to.have.length(1);
    expect(frames[0]).to.not.equal(sent);
    frames[0]!.fill(0); // the handler owns its array
    expect(sent).to.deep.equal(Uint8Array.of(1, 2, 3));
  });

  it('gives a duplicated frame to the handler as its own copy', () => {
    const network = new SimNetwork<Uint8Array>({
      prng: mulberry32(3),
      defaults: { duplicateProbability: 1 },
      clone: (frame) => frame.slice(),
    });
    const a = new SimTransport(network, 'a');
    const b = new SimTransport(network, 'b');
    const frames: Uint8Array[] = [];
    b.on('frame', (_from, frame) => frames.push(frame));
    a.send('b', Uint8Array.of(7));
    network.advanceTo(10);
    expect(frames).to.have.length(2);
    expect(frames[0]).to.not.equal(frames[1]);
    expect(frames[0]).to.deep.equal(frames[1]);
  });

  it('throws a RangeError for a frame above maxFrameBytes (16 MiB by default, as the mesh)', () => {
    const network = new SimNetwork<Uint8Array>({ prng: mulberry32(4) });
    const a = new SimTransport(network, 'a', { maxFrameBytes: 1024 });
    const b = new SimTransport(network, 'b');
    expect(a.maxFrameBytes).to.equal(1024);
    expect(b.maxFrameBytes).to.equal(DEFAULT_MAX_FRAME_BYTES);
    expect(DEFAULT_MAX_FRAME_BYTES).to.equal(16 * 1024 * 1024);
    const frames: number[] = [];
    b.on('frame', (_from, frame) => frames.push(frame.length));
    expect(() => a.send('b', new Uint8Array(1025))).to.throw(RangeError, /1025 bytes.*1024/);
    a.send('b', new Uint8Array(1024)); // at the limit: sent
    expect(() => b.send('a', new Uint8Array(DEFAULT_MAX_FRAME_BYTES + 1))).to.throw(RangeError);
    network.advanceTo(10);
    expect(frames).to.deep.equal([1024]);
    // Refused, not dropped: nothing was counted against the link.
    expect(a.stats('b')).to.deep.include({ framesSent: 1, framesDropped: 0 });
    expect(() => new SimTransport(network, 'c', { maxFrameBytes: 0 })).to.throw(RangeError);
  });
});
