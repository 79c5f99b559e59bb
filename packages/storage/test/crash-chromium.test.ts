import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import type { Browser } from 'puppeteer-core';
import { killChromium, launchChromium, type PageServer, servePage } from './chromium.ts';
import { prng } from './contract.ts';

const here = dirname(fileURLToPath(import.meta.url));
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

  it(`after ${cycles} kills of the browser mid-write every acknowledged batch is there`, async () => {
    const seed = Number(process.env.STORAGE_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const random = prng(seed);
    let acked = 0;
    // Cycle `cycles` only reopens and checks; the others also write until killed.
    for (let cycle = 0; cycle <= cycles; cycle++) {
      const ackedBefore = acked;
      const more = cycle === cycles ? 0 : Math.floor(random() * 12);
      const context = `cycle ${cycle}, seed ${seed}`;
      browser = await launchChromium(profile);
      const page = await browser.newPage();
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${context}: no progress in ${deadlineMs} ms`)),
          deadlineMs,
        );
        const fail = (message: string) => {
          clearTimeout(timer);
          reject(new Error(`${context}: ${message}`));
        };
        let start = -1;
        page.on('console', (message) => {
          const [word, n] = message.text().split(' ');
          if (word === 'error') return fail(message.text());
          if (word === 'ready') {
            // The page reopened the store and checkStore found batches 1..n, each whole.
            start = Number(n);
            if (start < ackedBefore)
              fail(`reopened with ${start} batches, ${ackedBefore} were acknowledged`);
          } else if (word === 'acked') {
            acked = Math.max(acked, Number(n));
          }
          if (start >= ackedBefore && acked >= start + more) {
            clearTimeout(timer);
            resolve();
          }
        });
        page
          .goto(server.url)
          .then(() =>
            page.evaluate(
              (count) => (globalThis as { startWriter?: (g: number) => void }).startWriter!(count),
              groups,
            ),
          )
          .catch((error) => fail(String(error)));
      });
      // A random delay of up to 30 ms spreads the kill over the page's planning and commits.
      await new Promise((resolve) => setTimeout(resolve, random() * 30));
      await killChromium(browser);
      browser = null;
    }
    expect(acked, `seed ${seed}`).to.be.greaterThan(cycles);
  });
});
