import { mulberry32 } from '@meshkv/raft';
import { MemoryDisk, type NodeStorage } from '@meshkv/storage';
import { expect } from 'chai';
import type { GroupReplica } from '../src/group.ts';
import { type SnapshotSettings, SnapshotStreams } from '../src/snapshots.ts';
import type { WireRecord } from '../src/wire.ts';

const GROUP = 3;
const SNAPSHOT_INDEX = 7;
const SETTINGS: SnapshotSettings = {
  maxOpenStreams: 4,
  maxIncomingStreams: 4,
  streamIdleTicks: 5,
  pullResendTicks: 2,
  targetChunkBytes: 64,
};

/** The leader side of SnapshotStreams over a MemoryDisk, recording what it sends and reports. */
class Leader {
  readonly sent: { to: string; record: WireRecord }[] = [];
  readonly lost: { group: number; peer: string }[] = [];
  readonly streams: SnapshotStreams;

  private constructor(readonly storage: NodeStorage) {
    this.streams = new SnapshotStreams(
      {
        storage,
        random: mulberry32(1),
        send: (to, record) => this.sent.push({ to, record }),
        wake: () => {},
        touch: () => {},
        trace: () => {},
        reload: (_replica: GroupReplica) => {},
        streamLost: (group, peer) => this.lost.push({ group, peer }),
      },
      SETTINGS,
    );
  }

  static async create(): Promise<Leader> {
    const storage = await new MemoryDisk({ name: 'leader' }).open();
    const kv = [];
    for (let i = 0; i < 20; i++) kv.push({ key: `key-${i}`, value: new Uint8Array(40) });
    await storage.write({ groups: [{ group: GROUP, create: true, kv }] });
    const leader = new Leader(storage);
    leader.streams.open(GROUP, SNAPSHOT_INDEX);
    expect(leader.streams.claim(GROUP, SNAPSHOT_INDEX)).to.equal(true);
    return leader;
  }

  pull(from: string, streamRequestId: number, seq: number): void {
    this.streams.onPull(from, {
      kind: 'snapshotPull',
      group: GROUP,
      snapshotIndex: SNAPSHOT_INDEX,
      streamRequestId,
      seq,
    });
  }

  /** Lets the stream's chunk reads settle. */
  async settle(): Promise<void> {
    for (let i = 0; i < 20; i++) await Promise.resolve();
  }

  /** Pulls `from`'s bound stream chunk by chunk until the final one; returns its seq. */
  async pullToEnd(from: string, streamRequestId: number): Promise<number> {
    for (let seq = 0; seq < 100; seq++) {
      this.pull(from, streamRequestId, seq);
      await this.settle();
      const last = this.sent[this.sent.length - 1]?.record;
      expect(last?.kind).to.equal('snapshotChunk');
      if (last?.kind === 'snapshotChunk' && last.final) return seq;
    }
    throw new Error('no final chunk within 100 pulls');
  }

  kinds(): string[] {
    return this.sent.map(({ record }) =>
      record.kind === 'snapshotChunk'
        ? `chunk ${record.streamRequestId}/${record.seq}`
        : record.kind === 'snapshotAbort'
          ? `abort ${record.streamRequestId}`
          : record.kind,
    );
  }
}

describe('snapshot streams, leader side: a follower whose stream is gone gets a fresh snapshot', () => {
  it('a pull at seq 0 binds the claimed stream and gets the first chunk', async () => {
    const leader = await Leader.create();
    leader.pull('b', 11, 0);
    await leader.settle();
    expect(leader.kinds()).to.deep.equal(['chunk 11/0']);
    expect(leader.lost).to.deep.equal([]);
  });

  it('a follower that starts its pull over (it restarted) frees the old stream and is reported lost', async () => {
    const leader = await Leader.create();
    leader.pull('b', 11, 0);
    await leader.settle();
    leader.pull('b', 11, 1);
    await leader.settle();
    // b restarted mid-stream: its new pull has a new request id and starts at 0. The old
    // stream cannot rewind, so it is closed, the pull refused, and raft told to send a
    // new snapshot (whose claim opens a new stream): resending the old metadata would
    // only bring the same refused pull back, forever (sim seed 4417293).
    leader.pull('b', 12, 0);
    await leader.settle();
    expect(leader.kinds()).to.deep.equal(['chunk 11/0', 'chunk 11/1', 'abort 12']);
    expect(leader.lost).to.deep.equal([{ group: GROUP, peer: 'b' }]);
    expect(leader.streams.openStreams).to.equal(0);
  });

  it('a pull that finds no stream is refused and reported lost', async () => {
    const leader = await Leader.create();
    leader.streams.close();
    leader.pull('c', 5, 0);
    expect(leader.kinds()).to.deep.equal(['abort 5']);
    expect(leader.lost).to.deep.equal([{ group: GROUP, peer: 'c' }]);
  });

  it('a bound stream closed for idleness before its final chunk is reported lost; an unbound one is not', async () => {
    const bound = await Leader.create();
    bound.pull('b', 11, 0);
    await bound.settle();
    const unbound = await Leader.create();
    for (let tick = 0; tick <= SETTINGS.streamIdleTicks; tick++) {
      bound.streams.onTick();
      unbound.streams.onTick();
    }
    expect(bound.streams.openStreams).to.equal(0);
    expect(bound.lost).to.deep.equal([{ group: GROUP, peer: 'b' }]);
    expect(unbound.streams.openStreams).to.equal(0);
    expect(unbound.lost).to.deep.equal([]);
  });

  it('a stream whose final chunk is sent frees its slot at once, and still answers a repeated final pull', async () => {
    const leader = await Leader.create();
    const finalSeq = await leader.pullToEnd('b', 11);
    expect(finalSeq).to.be.greaterThan(0);
    // Its slot is free: a node adding replicas to many groups does not wait
    // streamIdleTicks per finished stream before it may open the next.
    expect(leader.streams.openStreams).to.equal(0);
    expect(leader.streams.canOpen()).to.equal(true);
    // b lost the final chunk and asks again: the same chunk comes back.
    const sentBefore = leader.sent.length;
    leader.pull('b', 11, finalSeq);
    await leader.settle();
    expect(leader.sent.length).to.equal(sentBefore + 1);
    expect(leader.sent[sentBefore]?.record).to.deep.equal(leader.sent[sentBefore - 1]?.record);
    expect(leader.lost).to.deep.equal([]);
    // Idle, it is dropped without a report: it was complete.
    for (let tick = 0; tick <= SETTINGS.streamIdleTicks; tick++) leader.streams.onTick();
    leader.pull('b', 11, finalSeq);
    expect(leader.kinds().at(-1)).to.equal('abort 11');
  });

  it('keeps at most maxOpenStreams finished streams: the oldest is dropped first', async () => {
    const leader = await Leader.create();
    const peers = ['p0', 'p1', 'p2', 'p3', 'p4'];
    const finalSeqs: number[] = [];
    for (const [i, peer] of peers.entries()) {
      if (i > 0) {
        expect(leader.streams.canOpen()).to.equal(true);
        leader.streams.open(GROUP, SNAPSHOT_INDEX);
        expect(leader.streams.claim(GROUP, SNAPSHOT_INDEX)).to.equal(true);
      }
      finalSeqs.push(await leader.pullToEnd(peer, 20 + i));
    }
    expect(peers.length).to.be.greaterThan(SETTINGS.maxOpenStreams);
    leader.pull('p4', 24, finalSeqs[4]!);
    await leader.settle();
    expect(leader.kinds().at(-1)).to.equal(`chunk 24/${finalSeqs[4]}`);
    // p0's stream, the oldest finished, was dropped: its repeat is refused, and raft told
    // to send a fresh snapshot (what it would get had the stream gone idle).
    leader.pull('p0', 20, finalSeqs[0]!);
    expect(leader.kinds().at(-1)).to.equal('abort 20');
    expect(leader.lost).to.deep.equal([{ group: GROUP, peer: 'p0' }]);
  });
});
