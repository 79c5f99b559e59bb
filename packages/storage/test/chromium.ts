/**
 * Drives Debian's Chromium from Node for the IndexedDB crash test, the storage benchmark and
 * the node's browser cluster test:
 * bundles a page script (and the journal worker) with esbuild, serves them on 127.0.0.1, launches Chromium on a given
 * profile directory through puppeteer-core, and kills it with SIGKILL.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { type Browser, launch } from 'puppeteer-core';
import { chromiumArgs, chromiumPath } from '../../../scripts/chromium.mjs';

/** One page whose module script is `entry`, bundled for the browser. */
export interface PageServer {
  readonly url: string;
  close(): Promise<void>;
}

/**
 * The IndexedDB backend starts its journal worker from
 * `new URL('./journal-worker.browser.ts', import.meta.url)`: beside the page script.
 */
const workerPath = '/journal-worker.browser.ts';
const workerEntry = fileURLToPath(new URL('../src/journal-worker.browser.ts', import.meta.url));

/** Serves `entry` (bundled) on 127.0.0.1, on a port that stays the same until close(). */
export async function servePage(entry: string): Promise<PageServer> {
  const bundle = async (file: string) =>
    (
      await build({
        entryPoints: [file],
        bundle: true,
        format: 'esm',
        platform: 'browser',
        target: 'es2022',
        write: false,
      })
    ).outputFiles[0]!.text;
  const scripts = new Map([
    ['/page.js', await bundle(entry)],
    [workerPath, await bundle(workerEntry)],
  ]);
  const html =
    '<!doctype html><meta charset="utf-8"><script type="module" src="/page.js"></script>';
  const server: Server = createServer((request, response) => {
    const script = scripts.get(request.url ?? '');
    response.writeHead(200, {
      'content-type': script === undefined ? 'text/html' : 'text/javascript',
      'cache-control': 'no-store',
    });
    response.end(script ?? html);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * puppeteer's default flags that keep hidden pages from being throttled: left out with
 * `throttleHiddenPages`, so a background tab runs its timers at 1 Hz as in a real browser.
 */
const unthrottlingFlags = [
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/**
 * Launches headless Chromium on `userDataDir` (kept across launches). With
 * `throttleHiddenPages`, hidden pages are throttled as in a browser people use (puppeteer
 * turns that off by default).
 */
export function launchChromium(
  userDataDir: string,
  options: { readonly throttleHiddenPages?: boolean } = {},
): Promise<Browser> {
  return launch({
    executablePath: chromiumPath,
    headless: true,
    userDataDir,
    args: [...chromiumArgs],
    ...(options.throttleHiddenPages === true ? { ignoreDefaultArgs: unthrottlingFlags } : {}),
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
}

/** Debian's Firefox ESR (`firefox-esr`), for the multi-browser tests. */
export const firefoxPath = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';

/**
 * Launches headless Firefox ESR on the profile `userDataDir` (kept across launches) over
 * WebDriver BiDi. ICE prefs: loopback candidates allowed and host addresses not hidden
 * behind mDNS names, so it connects inside the network namespace as Chromium does.
 * `killChromium` kills it too (puppeteer starts it as the leader of its process group).
 */
export function launchFirefox(userDataDir: string): Promise<Browser> {
  return launch({
    browser: 'firefox',
    executablePath: firefoxPath,
    headless: true,
    userDataDir,
    extraPrefsFirefox: {
      'media.peerconnection.ice.loopback': true,
      'media.peerconnection.ice.obfuscate_host_addresses': false,
    },
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
}

/** SIGKILLs the whole Chromium process group we launched (browser, renderers, utilities). */
export async function killChromium(browser: Browser): Promise<void> {
  const child = browser.process();
  if (child?.pid === undefined) throw new Error('no Chromium process to kill');
  const exited = new Promise((resolve) => child.once('exit', resolve));
  // puppeteer starts Chromium detached, as the leader of its own process group.
  process.kill(-child.pid, 'SIGKILL');
  if (child.exitCode === null && child.signalCode === null) await exited;
  // Renderers and utility processes die with it, but not instantly: wait until the whole
  // group is gone, or a relaunch could find the profile's databases still held.
  const deadlineMs = Date.now() + 30_000;
  while (groupAlive(child.pid)) {
    if (Date.now() > deadlineMs)
      throw new Error(`Chromium process group ${child.pid} survived SIGKILL`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}
