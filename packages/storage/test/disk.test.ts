import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { openDiskStorage, openLevelEngine } from '../src/disk.node.ts';
import { expectCode, storageContract } from './contract.ts';

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
});
