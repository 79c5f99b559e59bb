import { mulberry32 } from '@meshkv/raft';
import type { LinkStats, PeerId, Transport, TransportHandlers } from '@meshkv/transport';
import { expect } from 'chai';
import { checkDropPercent, FaultyTransport } from '../src/fault-transport.ts';

/** Records what is sent and lets the test deliver frames as if from the network. */
class RecordingTransport implements Transport {
  readonly localId = 'a';
  readonly maxFrameBytes = 16;
  readonly sent: { to: PeerId; frame: Uint8Array }[] = [];
  private readonly frameHandlers: TransportHandlers['frame'][] = [];

  send(to: PeerId, frame: Uint8Array): void {
    if (frame.length > this.maxFrameBytes) throw new RangeError('too large');
    this.sent.push({ to, frame });
  }
  on<E extends keyof TransportHandlers>(event: E, handler: TransportHandlers[E]): () => void {
    if (event === 'frame') this.frameHandlers.push(handler as TransportHandlers['frame']);
    return () => {};
  }
  deliver(from: PeerId, frame: Uint8Array): void {
    for (const handler of this.frameHandlers) handler(from, frame);
  }
  peers(): readonly PeerId[] {
    return ['b'];
  }
  stats(): LinkStats {
    throw new Error('not used by these tests');
  }
  async close(): Promise<void> {}
}

function setup(seed = 7) {
  const inner = new RecordingTransport();
  const faulty = new FaultyTransport(inner, mulberry32(seed));
  const received: Uint8Array[] = [];
  faulty.on('frame', (_from, frame) => received.push(frame));
  const exchange = (count: number) => {
    for (let i = 0; i < count; i++) {
      faulty.send('b', new Uint8Array([i]));
      inner.deliver('b', new Uint8Array([i]));
    }
  };
  return { inner, faulty, received, exchange };
}

describe('FaultyTransport: the fault controls in front of a transport', () => {
  it('passes everything through by default', () => {
    const { inner, faulty, received, exchange } = setup();
    exchange(50);
    expect(inner.sent.length).to.equal(50);
    expect(received.length).to.equal(50);
    expect(faulty.faults()).to.deep.equal({
      isolated: false,
      dropPercent: 0,
      framesDroppedOut: 0,
      framesDroppedIn: 0,
    });
  });

  it('isolated, drops every frame in and out; back, passes them again', () => {
    const { inner, faulty, received, exchange } = setup();
    faulty.setIsolated(true);
    exchange(20);
    expect(inner.sent.length).to.equal(0);
    expect(received.length).to.equal(0);
    expect(faulty.faults()).to.include({
      isolated: true,
      framesDroppedOut: 20,
      framesDroppedIn: 20,
    });
    faulty.setIsolated(false);
    exchange(5);
    expect(inner.sent.length).to.equal(5);
    expect(received.length).to.equal(5);
  });

  it('drops about the share asked each way (seeded), all of them at 100', () => {
    const seed = 12345;
    const { inner, faulty, received, exchange } = setup(seed);
    faulty.setDropPercent(30);
    exchange(2000);
    const { framesDroppedOut, framesDroppedIn } = faulty.faults();
    expect(framesDroppedOut + inner.sent.length, `seed ${seed}`).to.equal(2000);
    expect(framesDroppedIn + received.length, `seed ${seed}`).to.equal(2000);
    // 30 % of 2000 is 600; a binomial's standard deviation here is ~20.
    expect(framesDroppedOut, `seed ${seed}`).to.be.within(500, 700);
    expect(framesDroppedIn, `seed ${seed}`).to.be.within(500, 700);
    faulty.setDropPercent(100);
    const sentBefore = inner.sent.length;
    exchange(100);
    expect(inner.sent.length).to.equal(sentBefore);
  });

  it('keeps the contract: an oversized frame still throws; a bad share is refused', () => {
    const { faulty } = setup();
    faulty.setIsolated(true);
    expect(() => faulty.send('b', new Uint8Array(17))).to.throw(RangeError);
    for (const bad of [-1, 101, Number.NaN]) {
      expect(() => faulty.setDropPercent(bad)).to.throw(RangeError);
      expect(() => checkDropPercent(bad)).to.throw(RangeError);
    }
  });
});
