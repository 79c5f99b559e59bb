import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import type { Browser } from 'puppeteer-core';
import { killChromium, launchChromium, type PageServer, servePage } from './chromium.ts';
import { prng } from './contract.ts';

const here = dirname(fileURLToPath(import.meta.url));

/** The LevelDB directories of the profile's IndexedDB: the default storage's and each bucket's. */
function indexedDbDirs(profile: string): string[] {
  const base = join(profile, 'Default');
  const dirs: string[] = [];
  const defaultDir = join(base, 'IndexedDB');
  if (existsSync(defaultDir)) {
    dirs.push(...readdirSync(defaultDir).map((store) => join(defaultDir, store)));
  }
  const buckets = join(base, 'WebStorage');
  if (existsSync(buckets)) {
    for (const bucket of readdirSync(buckets)) {
      const dir = join(buckets, bucket, 'IndexedDB', 'indexeddb.leveldb');
      if (existsSync(dir)) dirs.push(dir);
    }
  }
  return dirs;
}

/** What a failure needs to tell a wiped profile from lost IndexedDB data. */
function describeProfile(profile: string): string {
  const notes: string[] = [];
  const dirs = indexedDbDirs(profile);
  for (const dir of dirs) {
    for (const log of ['LOG.old', 'LOG']) {
      const file = join(dir, log);
      if (!existsSync(file)) continue;
      const lines = readFileSync(file, 'utf8').split('\n');
      notes.push(
        ...lines
          .filter((line) => /corrupt|error|delet|repair/i.test(line))
          .map((l) => `${dir}/${log}: ${l}`),
      );
    }
  }
  return `IndexedDB stores: ${dirs.join(', ') || 'none'}; LevelDB says: ${notes.join(' | ') || 'nothing unusual'}`;
}
const groups = 8;
const cycles = 8;
const deadlineMs = 60_000;

describe('storage: crash safety of the IndexedDB backend (SIGKILL of Chromium)', () => {
  let profile: string;
  let server: PageServer;
  let browser: Browser | null = null;
  before(async () => {
    profile = await mkdtemp(join(tmpdir(), 'meshkv-chromium-'));
    server = await servePage(join(here, 'crash-page.ts'));
  });
  after(async () => {
    if (browser !== null) await killChromium(browser);
    await server.close();
    await rm(profile, { recursive: true, force: true });
  });

  it(`after ${cycles} kills mid-write: a consistent prefix holding every acknowledged batch`, async () => {
    const seed = Number(process.env.STORAGE_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const random = prng(seed);
    let acked = 0;
    let totalAcked = 0;
    const repairs: string[] = [];
    // Cycle `cycles` only reopens and checks; the others also write until killed.
    for (let cycle = 0; cycle <= cycles; cycle++) {
      const ackedBefore = acked;
      const more = cycle === cycles ? 0 : Math.floor(random() * 12);
      const context = `cycle ${cycle}, seed ${seed}`;
      browser = await launchChromium(profile);
      const page = await browser.newPage();
      const start = () =>
        page.evaluate(
          (count) => (globalThis as { startWriter?: (g: number) => void }).startWriter!(count),
          groups,
        );
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${context}: no progress in ${deadlineMs} ms`)),
          deadlineMs,
        );
        const fail = (message: string) => {
          clearTimeout(timer);
          reject(new Error(`${context}: ${message}; profile: ${describeProfile(profile)}`));
        };
        let ready = -1;
        page.on('console', (message) => {
          const text = message.text();
          const [word, n] = text.split(' ');
          if (word === 'error') return fail(text);
          if (word === 'repaired') {
            // Chromium lost or tore one copy (README, "Limits"); the open rebuilt it.
            repairs.push(`${context}: ${text}`);
          } else if (word === 'ready') {
            // The page reopened the store and checkStore found batches 1..n, each whole.
            ready = Number(n);
            if (ready < ackedBefore) {
              return fail(`reopened with ${ready} batches, ${ackedBefore} were acknowledged`);
            }
          } else if (word === 'acked') {
            totalAcked++;
            acked = Math.max(acked, Number(n));
          }
          if (ready >= 0 && acked >= ready + more) {
            clearTimeout(timer);
            resolve();
          }
        });
        page
          .goto(server.url)
          .then(start)
          .catch((error) => fail(String(error)));
      });
      // A random delay of up to 30 ms spreads the kill over the page's planning and commits.
      await new Promise((resolve) => setTimeout(resolve, random() * 30));
      await killChromium(browser);
      browser = null;
    }
    if (repairs.length > 0) console.log(`    copies rebuilt (seed ${seed}): ${repairs.join('; ')}`);
    expect(totalAcked, `seed ${seed}`).to.be.greaterThan(cycles);
  });
});
