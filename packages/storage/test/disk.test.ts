import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { expect } from 'chai';
import { openDiskStorage, openLevelEngine } from '../src/disk.node.ts';
import { openEngineStorage } from '../src/store.ts';
import { bytes, expectCode, storageContract } from './contract.ts';

storageContract({
  name: 'disk (LevelDB)',
  async fresh() {
    const dir = await mkdtemp(join(tmpdir(), 'meshkv-storage-'));
    const path = join(dir, 'db');
    return {
      name: path,
      open: () => openDiskStorage(path),
      openEngine: () => openLevelEngine(path),
      destroy: () => rm(dir, { recursive: true, force: true }),
    };
  },
});

describe('storage: disk specifics', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshkv-storage-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('refuses a second open of the same directory with locked', async () => {
    const path = join(dir, 'db');
    const storage = await openDiskStorage(path);
    try {
      await expectCode(openDiskStorage(path), 'locked', path);
    } finally {
      await storage.close();
    }
    const again = await openDiskStorage(path);
    expect((await again.load()).groups.size).to.equal(0);
    await again.close();
  });

  it('refuses a database whose LevelDB log lost a batch in the middle (paranoid checks are off)', async () => {
    const path = join(dir, 'db');
    const storage = await openDiskStorage(path);
    await storage.write({ groups: [{ group: 1, create: true }] });
    // ~1 KiB per batch: the log spans many of LevelDB's 32 KiB blocks.
    for (let b = 0; b < 200; b++) {
      await storage.write({
        groups: [{ group: 1, kv: [{ key: `k${b}`, value: new Uint8Array(1000).fill(b) }] }],
      });
    }
    await storage.close();
    const [log] = (await readdir(path)).filter((name) => name.endsWith('.log'));
    const file = join(path, log!);
    const content = await readFile(file);
    expect(content.length, 'log bytes').to.be.greaterThan(4 * 32 * 1024);
    // One flipped byte inside the first block: LevelDB drops the rest of that block on
    // recovery (its records fail their CRC) and replays every later block.
    content[16 * 1024]! ^= 0xff;
    await writeFile(file, content);
    const error = await expectCode(openDiskStorage(path), 'corrupt', path);
    expect(error.message).to.include('were lost while later ones survived');
  });

  it('closes the iterator of a snapshot stream dropped unfinished once it is collected', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const engine = await openLevelEngine(join(dir, 'db'));
    const storage = await openEngineStorage(engine);
    try {
      const kv = Array.from({ length: 3 }, (_, i) => ({ key: `k${i}`, value: bytes('v') }));
      await storage.write({ groups: [{ group: 1, create: true, kv }] });
      await (async () => {
        const chunks = storage.snapshotChunks(1, { targetChunkBytes: 1 })[Symbol.asyncIterator]();
        await chunks.next();
      })();
      expect(engine.openScans, 'scans open while the stream is held').to.equal(1);
      // Later calls do not keep the stream alive either.
      await storage.get(1, 'k0');
      const deadlineMs = Date.now() + 30_000;
      while (engine.openScans > 0 && Date.now() < deadlineMs) {
        gc();
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(engine.openScans, 'scans open after the stream was collected').to.equal(0);
    } finally {
      await storage.close();
    }
  });
});
