import { MemoryStorage } from '@meshkv/raft';
import { expect } from 'chai';
import { groupKey } from '../src/codec.ts';
import { type Engine, type GroupWrite, MemoryDisk, openEngineStorage } from '../src/index.ts';
import { expectCode, prng } from './contract.ts';
import { batchFor, checkStore, lastIndexAfter } from './crash-workload.ts';

/** `engine` with its `write` replaced by `write` (which may call the engine's own). */
function withWrite(
  engine: Engine,
  write: (engine: Engine, ops: Parameters<Engine['write']>[0]) => Promise<void>,
): Engine {
  return {
    name: engine.name,
    get: (key) => engine.get(key),
    scan: (lo, hi) => engine.scan(lo, hi),
    write: (ops) => write(engine, ops),
    clearRange: (lo, hi) => engine.clearRange(lo, hi),
    close: () => engine.close(),
  };
}

/** Lets the store's queued microtasks run until its write reaches the disk. */
async function untilPending(disk: MemoryDisk): Promise<void> {
  for (let i = 0; i < 1000 && disk.pendingWrites === 0; i++) await Promise.resolve();
  expect(disk.pendingWrites, 'a write reached the disk').to.equal(1);
}

describe('storage: memory engine records', () => {
  const key = (...bytesOf: number[]) => new Uint8Array(bytesOf);
  async function pages(engine: Engine, lo: Uint8Array, hi: Uint8Array | null) {
    const found: string[] = [];
    for await (const page of engine.scan(lo, hi)) {
      for (const [k, v] of page) found.push(`${[...k]}=${[...v]}`);
    }
    return found;
  }

  it('scans in byte order, gives copies, and clears exactly [lo, hi)', async () => {
    const disk = new MemoryDisk();
    const engine = disk.openEngine();
    const value = key(7, 7);
    await engine.write([
      { type: 'put', key: key(2, 0), value: key(20) },
      { type: 'put', key: key(1, 255), value: key(1) },
      { type: 'put', key: key(1), value },
      { type: 'put', key: key(1, 0), value: key(10) },
      { type: 'put', key: key(3), value: key(30) },
    ]);
    value.fill(0); // The engine holds the array it was handed (Engine.write).
    expect(await pages(engine, key(0), null)).to.deep.equal([
      '1=0,0',
      '1,0=10',
      '1,255=1',
      '2,0=20',
      '3=30',
    ]);
    const got = (await engine.get(key(1, 0)))!;
    got[0] = 99;
    expect([...(await engine.get(key(1, 0)))!]).to.deep.equal([10]);
    await engine.clearRange(key(1, 0), key(2, 0));
    expect(await pages(engine, key(0), null)).to.deep.equal(['1=0,0', '2,0=20', '3=30']);
    await engine.write([{ type: 'del', key: key(3) }]);
    expect(await engine.get(key(3))).to.equal(undefined);
    expect(disk.recordCount).to.equal(2);
    await engine.close();
  });
});

describe('storage: memory backend durability control', () => {
  it("'manual': a write stays pending until syncNext, and a crash then loses all of it", async () => {
    const disk = new MemoryDisk({ sync: 'manual', name: 'sim node 1' });
    let storage = await disk.open();
    const first = storage.write(batchFor(1, 3));
    // Nothing resolves on its own: settle every microtask queued so far, then look.
    let settled = false;
    first.then(() => {
      settled = true;
    });
    for (let i = 0; i < 20; i++) await Promise.resolve();
    expect(settled).to.equal(false);
    expect(disk.pendingWrites).to.equal(1);
    expect(disk.syncNext()).to.equal(true);
    await first;
    const second = storage.write(batchFor(2, 3));
    await untilPending(disk);
    disk.crash();
    await expectCode(second, 'closed', 'sim node 1');
    await expectCode(storage.write(batchFor(2, 3)), 'closed');
    storage = await disk.open();
    expect(await checkStore(storage, 3)).to.equal(1);
  });

  it("'auto': writes become durable without any timer and survive a crash", async () => {
    const disk = new MemoryDisk();
    const storage = await disk.open();
    await storage.write(batchFor(1, 2));
    disk.crash();
    expect(await checkStore(await disk.open(), 2)).to.equal(1);
  });

  it("writes a group's record only when a part changes it (entries alone, or the stored hard state restated, do not)", async () => {
    const disk = new MemoryDisk();
    const writes: string[][] = [];
    const recording = withWrite(disk.openEngine(), (engine, ops) => {
      writes.push(ops.map((op) => String([...op.key])));
      return engine.write(ops);
    });
    const storage = await openEngineStorage(recording);
    const record = String([...groupKey(0)]);
    const entry = (index: number) => ({
      index,
      term: 1,
      type: 0 as const,
      data: new Uint8Array([index]),
    });
    const hardState = { term: 1, vote: 'n1', commit: 1 };
    const confState = {
      voters: ['n1'],
      learners: [],
      votersOutgoing: [],
      learnersNext: [],
      autoLeave: false,
    };
    const writesGroupRecord = async (part: Omit<GroupWrite, 'group'>) => {
      await storage.write({ groups: [{ group: 0, ...part }] });
      return writes.at(-1)!.includes(record);
    };
    expect(await writesGroupRecord({ create: true, entries: [entry(1)], hardState })).to.equal(
      true,
    );
    expect(await writesGroupRecord({ entries: [entry(2)] })).to.equal(false);
    expect(await writesGroupRecord({ entries: [entry(3)], hardState: { ...hardState } })).to.equal(
      false,
    );
    expect(await writesGroupRecord({ hardState: { ...hardState, commit: 3 } })).to.equal(true);
    const appliedState = { index: 2, term: 1, confState };
    expect(await writesGroupRecord({ appliedState })).to.equal(true);
    // The same applied state again (an equal conf state, another object): nothing changes.
    expect(
      await writesGroupRecord({ appliedState: { ...appliedState, confState: { ...confState } } }),
    ).to.equal(false);
    await storage.close();
    // What was left unwritten was unchanged: a reopen reads the same group.
    const group = (await (await disk.open()).load()).groups.get(0)!;
    expect(group.hardState).to.deep.equal({ term: 1, vote: 'n1', commit: 3 });
    expect(group.appliedState.index).to.equal(2);
    expect(group.entries.map((e) => e.index)).to.deep.equal([1, 2, 3]);
  });

  it('stops for good with io after the medium fails a write; a reopen recovers', async () => {
    const disk = new MemoryDisk({ name: 'failing disk' });
    let failWrites = false;
    const failing = withWrite(disk.openEngine(), (engine, ops) =>
      failWrites ? Promise.reject(new Error('EIO: fsync failed')) : engine.write(ops),
    );
    const storage = await openEngineStorage(failing);
    await storage.write(batchFor(1, 2));
    failWrites = true;
    const error = await expectCode(storage.write(batchFor(2, 2)), 'io', 'failing disk');
    expect(error.message).to.include('EIO');
    failWrites = false;
    // What reached the medium is unknown: the store refuses everything, reads included.
    await expectCode(storage.write(batchFor(2, 2)), 'io');
    await expectCode(storage.load(), 'io');
    await storage.close();
    expect(await checkStore(await disk.open(), 2)).to.equal(1);
  });

  it("rebuilds raft's MemoryStorage from a loaded group: applySnapshot, append, setHardState", async () => {
    const disk = new MemoryDisk();
    let storage = await disk.open();
    for (let batch = 1; batch <= 15; batch++) await storage.write(batchFor(batch, 2));
    await storage.close();
    storage = await disk.open();
    for (const state of (await storage.load()).groups.values()) {
      const raftStorage = new MemoryStorage();
      if (state.snapshot !== null) raftStorage.applySnapshot(state.snapshot);
      raftStorage.append(state.entries);
      raftStorage.setHardState(state.hardState);
      // Batch 14 saved a snapshot 5 entries before its end and compacted there.
      expect(raftStorage.firstIndex()).to.equal(lastIndexAfter(14) - 5 + 1);
      expect(raftStorage.lastIndex()).to.equal(lastIndexAfter(15));
      expect(raftStorage.term(raftStorage.lastIndex())).to.equal(1);
      expect(raftStorage.initialState().hardState.commit).to.equal(15);
    }
  });

  it('allows one open store per disk', async () => {
    const disk = new MemoryDisk({ name: 'shared disk' });
    const storage = await disk.open();
    await expectCode(disk.open(), 'locked', 'shared disk');
    await storage.close();
    await (await disk.open()).close();
  });

  it('random crashes, pending or not, keep exactly the acknowledged prefix', async () => {
    const seed = Number(
      globalThis.process?.env?.STORAGE_SEED ?? Math.floor(Math.random() * 2 ** 31),
    );
    const random = prng(seed);
    const disk = new MemoryDisk({ sync: 'manual' });
    let storage = await disk.open();
    let acked = 0;
    let next = 1;
    for (let step = 0; step < 300; step++) {
      const batch = next++;
      const writing = storage.write(batchFor(batch, 3)).then(
        () => {
          acked = batch;
        },
        () => {},
      );
      await untilPending(disk);
      if (random() < 0.15) {
        disk.crash();
        await writing;
        storage = await disk.open();
        const held = await checkStore(storage, 3);
        expect(held, `seed ${seed}, step ${step}`).to.equal(acked);
        next = held + 1;
      } else {
        disk.syncAll();
        await writing;
        expect(acked).to.equal(batch);
      }
    }
    expect(acked, `seed ${seed}`).to.be.greaterThan(100);
  });
});
