import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { openDiskStorage } from '../src/disk.node.ts';
import { prng } from './contract.ts';
import { checkStore } from './crash-workload.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '../../..');
const groups = 8;
const cycles = 20;
const deadlineMs = 60_000;

/** Resolves after `delayMs`: where the crash lands, not a wait for anything. */
function jitter(delayMs: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, delayMs));
}

/** Resolves once `onLine` accepts a line the child printed; rejects if it exits or stalls. */
function watch(child: ChildProcess, onLine: (line: string) => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    let stderr = '';
    const timer = setTimeout(
      () => reject(new Error(`no expected output within ${deadlineMs} ms`)),
      deadlineMs,
    );
    child.stderr!.on('data', (data) => {
      stderr += data;
    });
    child.stdout!.on('data', (data) => {
      buffered += data;
      for (let at = buffered.indexOf('\n'); at >= 0; at = buffered.indexOf('\n')) {
        const line = buffered.slice(0, at);
        buffered = buffered.slice(at + 1);
        if (onLine(line)) {
          clearTimeout(timer);
          resolve();
        }
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`writer exited (${code ?? signal}) early: ${stderr}`));
    });
  });
}

describe('storage: crash safety of the disk backend (SIGKILL of a writing process)', () => {
  let dir: string;
  const children = new Set<ChildProcess>();
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshkv-crash-'));
  });
  afterEach(async () => {
    for (const child of children) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it(`after ${cycles} kills at random points every acknowledged batch is there, atomically`, async () => {
    const seed = Number(process.env.STORAGE_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const random = prng(seed);
    const path = join(dir, 'db');
    let acked = 0;
    let maxBatch = 0;
    for (let cycle = 0; cycle < cycles; cycle++) {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', join(here, 'crash-writer.ts'), path, String(groups)],
        {
          cwd: root,
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      children.add(child);
      const exited = new Promise((resolve) => child.on('exit', resolve));
      // Kill after 0..15 more acknowledged batches: 0 lands in the first write after open.
      const more = Math.floor(random() * 16);
      let start = -1;
      await watch(child, (line) => {
        const [word, n] = line.split(' ');
        if (word === 'ready') {
          start = Number(n);
          expect(
            start,
            `cycle ${cycle}, seed ${seed}: reopened below an acknowledged batch`,
          ).to.be.at.least(acked);
        } else if (word === 'acked') {
          acked = Math.max(acked, Number(n));
        }
        return start >= 0 && acked >= start + more;
      });
      // The ack arrives while the writer plans its next batch; a random delay of up to 30 ms
      // spreads the kill over planning, the write itself and the fsync.
      await jitter(random() * 30);
      child.kill('SIGKILL');
      await exited;
      children.delete(child);

      const storage = await openDiskStorage(path);
      try {
        const batch = await checkStore(storage, groups);
        expect(
          batch,
          `cycle ${cycle}, seed ${seed}: batch ${acked} was acknowledged`,
        ).to.be.at.least(acked);
        maxBatch = batch;
      } catch (error) {
        throw new Error(`cycle ${cycle}, seed ${seed}: ${String(error)}`, { cause: error });
      } finally {
        await storage.close();
      }
    }
    expect(maxBatch).to.be.greaterThan(cycles);
  });
});
