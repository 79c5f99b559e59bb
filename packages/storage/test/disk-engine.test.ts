import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { openLevelEngine } from '../src/disk.node.ts';
import { bytes } from './contract.ts';

/** The LevelDB engine's writes (disk.node.ts builds each from one reused native batch). */
describe('storage: disk engine writes', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshkv-storage-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('a write holds only its own operations (the reused batch starts empty)', async () => {
    const engine = await openLevelEngine(join(dir, 'db'));
    try {
      await engine.write([{ type: 'put', key: bytes('a'), value: bytes('1') }]);
      // Deleted outside the write path (not through the batch).
      await engine.clearRange(bytes('a'), bytes('b'));
      // Had the batch kept the first write's put, this write would bring 'a' back.
      await engine.write([{ type: 'put', key: bytes('b'), value: bytes('2') }]);
      expect(await engine.get(bytes('a'))).to.equal(undefined);
      expect(Buffer.from((await engine.get(bytes('b')))!).toString()).to.equal('2');
    } finally {
      await engine.close();
    }
  });

  it('overlapping writes each land whole, and survive a reopen', async () => {
    const path = join(dir, 'db');
    const engine = await openLevelEngine(path);
    const writes: Promise<void>[] = [];
    for (let w = 0; w < 8; w++) {
      const ops = [];
      for (let k = 0; k < 50; k++) {
        ops.push({ type: 'put' as const, key: bytes(`w${w}k${k}`), value: bytes(`${w}:${k}`) });
      }
      writes.push(engine.write(ops));
    }
    await Promise.all(writes);
    await engine.close();
    const reopened = await openLevelEngine(path);
    try {
      for (let w = 0; w < 8; w++) {
        for (let k = 0; k < 50; k++) {
          const value = await reopened.get(bytes(`w${w}k${k}`));
          expect(value && Buffer.from(value).toString(), `w${w}k${k}`).to.equal(`${w}:${k}`);
        }
      }
    } finally {
      await reopened.close();
    }
  });
});
