// The demo as a person meets it: `meshkv start` (a real process: the signaling server
// serving demo/dist, building it first if needed, and 3 Node peers), then Debian's Chromium
// on the printed URL. The page joins as a node, renders the ring and the members, runs a
// put and a get through its console (the put read back from a Node peer's HTTP API),
// crashes and restarts its node with the fault buttons, opens another node (a second tab
// joins; each sees the other's status), and lays out without horizontal
// overflow at 1280×800 and 390×844; screenshots of both go to test-output/demo/. No
// console error, page error or failed request all along. Needs the private network
// namespace (pnpm test, or scripts/netns-run.sh).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { Browser, Page } from 'puppeteer-core';
import {
  MESHKV_CLI,
  Proc,
  ProcessSet,
  ROOT,
  waitUntil,
} from '../../packages/node/test/support/processes.ts';
import { launchChromium } from '../../packages/storage/test/chromium.ts';

const SCREENSHOT_DIR = join(ROOT, 'test-output', 'demo');
/** Waits in the page: generous, the machine is shared. */
const PAGE_DEADLINE_MS = 60_000;
/** Beyond a tab's own leave deadline (BROWSER_LEAVE_DEADLINE_MS, 60 s): its error shows. */
const LEAVE_WAIT_MS = 90_000;
/** Puts of the console tried before the test gives up (each may time out at 5 s). */
const MAX_PUT_TRIES = 6;
const PARTITIONS = 16;

describe('demo app served by meshkv start (real processes, Chromium)', function () {
  this.timeout(240_000);
  const processes = new ProcessSet();
  let dir: string;
  let start: Proc;
  let browser: Browser | undefined;
  let page: Page;
  let demoUrl: string;
  const problems: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshkv-demo-'));
    start = processes.track(
      Proc.spawn(
        MESHKV_CLI,
        ['start', '--data', dir, '--nodes', '3', '--port', '0', '--partitions', String(PARTITIONS)],
        { name: 'meshkv start' },
      ),
    );
    // The build (when demo/ changed) comes first, then the peers: minutes at most.
    demoUrl = await waitUntil(
      () => /^ {2}demo +(http:\/\/127\.0\.0\.1:\d+\/) /m.exec(start.stdout)?.[1],
      'the summary with the demo URL',
      () => processes.state(),
      180_000,
    );
    // The start says whether it built the demo or found its build current.
    expect(start.stdout).to.match(/^demo: (built in [\d.]+ s|demo\/dist is up to date)/m);
    browser = await launchChromium(join(dir, 'chromium'));
    page = await browser.newPage();
    watch(page);
  });

  /** Every console error, page error, failed request and HTTP error of `tab` goes to `problems`. */
  function watch(tab: Page): void {
    tab.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
    });
    tab.on('pageerror', (error) => problems.push(`page error: ${String(error)}`));
    tab.on('requestfailed', (request) => {
      // A status poll past its timeout is aborted by the page: slow, not broken.
      const errorText = request.failure()?.errorText;
      if (errorText !== 'net::ERR_ABORTED')
        problems.push(`request failed: ${request.url()} ${errorText}`);
    });
    tab.on('response', (response) => {
      if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
    });
  }

  after(async () => {
    await browser?.close();
    // SIGINT as a terminal's Ctrl-C: the start stops its peers by pid, then the server.
    await start?.stop('SIGINT');
    await processes.killAll();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** The text of `selector` in `tab` (default: the first page) once `accept` holds for it. */
  async function waitForText(
    selector: string,
    accept: (text: string) => boolean,
    what: string,
    tab: Page = page,
    deadlineMs = PAGE_DEADLINE_MS,
  ): Promise<string> {
    let text = '';
    return waitUntil(
      async () => {
        // innerText: the text as rendered, table cells separated by tabs.
        // biome-ignore lint/performance/useDomNodeTextContent: the layout is what is asserted
        text = await tab.$eval(selector, (e) => (e as HTMLElement).innerText);
        return accept(text) ? text : undefined;
      },
      what,
      async () => ({
        problems,
        text,
        faultResult: await tab.$eval('#fault-result', (e) => e.textContent).catch(String),
      }),
      deadlineMs,
    );
  }

  async function noHorizontalOverflow(): Promise<void> {
    const { scrollWidth, innerWidth } = await page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
    }));
    expect(scrollWidth, 'page width').to.be.at.most(innerWidth);
  }

  it('joins the tab, renders ring and members, runs put/get and a fault, at both sizes', async () => {
    await page.setViewport({ width: 1280, height: 800 });
    await page.goto(demoUrl, { waitUntil: 'load' });
    const selfLine = await waitForText(
      '#self-line',
      (t) => /: running$/.test(t),
      'the tab node running',
    );
    const selfId = /node (\S+):/.exec(selfLine)?.[1];
    expect(selfId, selfLine).to.match(/^n[0-9a-f]+$/);

    // Members: the 3 peers and this tab, all up; the ring: every partition and each node's tokens.
    const members = await waitForText(
      '#members',
      (t) => (t.match(/\bup\b/g) ?? []).length === 4 && t.includes('this tab'),
      'four members up, this tab among them',
    );
    expect(members).to.include('browser tab');
    expect((members.match(/Node\.js process/g) ?? []).length).to.equal(3);
    await waitUntil(
      async () => {
        const counts = await page.$eval('#ring', (svg) => ({
          partitions: svg.querySelectorAll(':scope > path[d] > title').length,
          tokenGroups: svg.querySelectorAll(':scope > g').length,
        }));
        return counts.partitions === PARTITIONS && counts.tokenGroups === 4 ? counts : undefined;
      },
      'the ring with every partition and four nodes of tokens',
      () => problems,
      PAGE_DEADLINE_MS,
    );
    // Every partition's leader is known (statuses of this tab and the peers' HTTP /status).
    await waitForText(
      '#partitions tbody',
      (t) => !t.includes('?') && t.split('\n').length === PARTITIONS,
      'a leader for every partition',
    );

    // The console: put, then get, through this tab's node.
    await page.select('#op', 'put');
    await setInput('#key', 'demo-key');
    await setInput('#value', 'written from a tab');
    // A new node's first request may time out while its links to the partition's leader
    // come up on a loaded machine (the row shows TIMEOUT): the same put again is harmless.
    let putsRun = 0;
    let putRow = '';
    do {
      expect(putsRun, `the put's answers: ${putRow}`).to.be.lessThan(MAX_PUT_TRIES);
      await page.click('#run');
      putsRun += 1;
      await waitUntil(
        async () => ((await page.$$('#results tbody tr')).length === putsRun ? true : undefined),
        `the answer to put ${putsRun}`,
        () => problems,
        PAGE_DEADLINE_MS,
      );
      putRow = await waitForText('#results tbody tr:first-child', () => true, 'the put row');
    } while (/put demo-key.*\terror TIMEOUT:/.test(putRow));
    expect(putRow).to.match(/put demo-key.*\ttrue\t/);
    await page.select('#op', 'get');
    await page.click('#run');
    await waitForText(
      '#results tbody tr:first-child',
      (t) => t.includes('get demo-key') && t.includes('"written from a tab"'),
      'the get answered the value',
    );
    await waitForText(
      '#ops-table',
      (t) => new RegExp(`^put\t${putsRun}\t`, 'm').test(t) && /^get\t1\t/m.test(t),
      'the puts and one get counted',
    );
    // What the tab wrote, a Node peer reads.
    const peerUrl = /HTTP API (http:\/\/127\.0\.0\.1:\d+)/.exec(start.stdout)![1]!;
    const read = await fetch(`${peerUrl}/kv/demo-key`);
    expect(await read.text()).to.equal('written from a tab');

    await page.screenshot({ path: await screenshotPath('demo-1280x800.png'), fullPage: true });
    await noHorizontalOverflow();

    // Fault buttons: crash, then restart with the same id.
    await page.click('#crash');
    await waitForText('#self-line', (t) => t.includes('crashed'), 'the node crashed');
    expect(await page.$eval('#restart', (b) => (b as HTMLButtonElement).disabled)).to.equal(false);
    await page.click('#run');
    await waitForText(
      '#results tbody tr:first-child',
      (t) => t.includes('NOT_RUNNING'),
      'a get refused while crashed',
    );
    await page.click('#restart');
    await waitForText(
      '#self-line',
      (t) => t.endsWith(`node ${selfId}: running`),
      'the node running again, same id',
    );

    // "Open another node": a second tab joins as a fifth member, and each tab sees the
    // other's status (BroadcastChannel).
    const opened = browser!.waitForTarget(
      (target) => target.type() === 'page' && target.url() === demoUrl && target !== page.target(),
      { timeout: PAGE_DEADLINE_MS },
    );
    await page.click('#open-another');
    const second = (await (await opened).page())!;
    watch(second);
    const secondLine = await waitForText(
      '#self-line',
      (t) => /: running$/.test(t),
      'the second tab running',
      second,
    );
    expect(secondLine).to.not.include(selfId!);
    await page.bringToFront();
    await waitForText(
      '#members',
      (t) => (t.match(/\bup\b/g) ?? []).length === 5 && t.includes('another tab'),
      "five members up, the other tab's status among them",
    );

    await page.setViewport({ width: 390, height: 844 });
    await page.screenshot({ path: await screenshotPath('demo-390x844.png'), fullPage: true });
    await noHorizontalOverflow();

    // Keyboard: Tab reaches every control in order, and a fault button works from it.
    await page.focus('body');
    const reached = new Set<string>();
    for (let i = 0; i < 40; i++) {
      await page.keyboard.press('Tab');
      reached.add(await page.evaluate(() => document.activeElement?.id ?? ''));
    }
    for (const id of ['crash', 'isolate', 'leave', 'open-another', 'drop', 'op', 'key', 'run']) {
      expect(reached, `#${id} reached with Tab`).to.include(id);
    }
    await page.focus('#isolate');
    await page.keyboard.press('Enter');
    await waitForText('#self-line', (t) => t.includes('isolated'), 'the node isolated by keyboard');
    expect(await page.$eval('#isolate', (b) => b.getAttribute('aria-pressed'))).to.equal('true');
    await page.keyboard.press('Space');
    await waitForText('#self-line', (t) => /: running$/.test(t), 'the node reconnected');

    // Leave, in the second tab: it hands its replicas off and is `left` in the first tab's view.
    // A DOM click: puppeteer's waits for the element to be in view, which a hidden tab never is.
    await second.$eval('#leave', (button) => (button as HTMLButtonElement).click());
    // While it hands off, the tab says how many replicas are still here; the wait outlasts
    // the leave's own deadline, so a hand-off that cannot finish shows the node's TIMEOUT.
    await waitForText(
      '#self-line',
      (t) => t.includes('left the cluster'),
      'the second tab left',
      second,
      LEAVE_WAIT_MS,
    );
    await waitForText(
      '#members',
      (t) => /\bleft\b/.test(t) && (t.match(/\bup\b/g) ?? []).length === 4,
      "the second tab left in the first tab's members",
    );
    // The crash's refused get is an answer shown in the page, not an error in the console.
    expect(problems).to.deep.equal([]);
  });

  async function setInput(selector: string, value: string): Promise<void> {
    await page.$eval(selector, (e) => {
      (e as HTMLInputElement).value = '';
    });
    await page.type(selector, value);
  }
});

async function screenshotPath(name: string): Promise<`${string}.png`> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  return join(SCREENSHOT_DIR, name) as `${string}.png`;
}
