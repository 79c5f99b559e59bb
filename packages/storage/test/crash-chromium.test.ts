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

/** What a failure needs to tell a wiped profile from lost IndexedDB data. */
function describeProfile(profile: string): string {
  const dir = join(profile, 'Default', 'IndexedDB');
  if (!existsSync(dir)) return `${dir} does not exist`;
  const notes: string[] = [];
  for (const store of readdirSync(dir)) {
    for (const log of ['LOG.old', 'LOG']) {
      const file = join(dir, store, log);
      if (!existsSync(file)) continue;
      const lines = readFileSync(file, 'utf8').split('\n');
      notes.push(
        ...lines
          .filter((line) => /corrupt|error|delet|repair/i.test(line))
          .map((l) => `${log}: ${l}`),
      );
    }
  }
  return `${dir} holds ${readdirSync(dir).join(', ') || 'nothing'}; LevelDB says: ${notes.join(' | ') || 'nothing unusual'}`;
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
    // The highest batch acknowledged so far.
    let acked = 0;
    let totalAcked = 0;
    let kept = 0;
    const rebuilt: string[] = [];
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
          const [word, n] = message.text().split(' ');
          if (word === 'error') return fail(message.text());
          if (word === 'repair' && n === 'database' && message.text().endsWith('finished')) {
            // Chromium lost the database (README, "Limits") and the journal restored it.
            rebuilt.push(`${context}: ${message.text()}`);
          }
          if (word === 'ready') {
            // The page reopened the store and checkStore found batches 1..n, each whole.
            ready = Number(n);
            if (ready < ackedBefore) {
              return fail(`reopened with ${ready} batches, ${ackedBefore} were acknowledged`);
            }
            if (ackedBefore > 0) kept++;
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
    if (rebuilt.length > 0) {
      console.log(`Chromium lost the database, the journal restored it: ${rebuilt.join('; ')}`);
    }
    expect(totalAcked, `seed ${seed}`).to.be.greaterThan(cycles);
    // Most reopenings must have had acknowledged batches to lose.
    expect(kept, `seed ${seed}: reopenings with acknowledged batches`).to.be.at.least(cycles / 2);
  });
});
