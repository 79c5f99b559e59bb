// A mixed cluster of real processes (issue 13, "Tests"): the signaling CLI, 3 `meshkv node`
// peers (support/processes.ts) and 3 Chromium pages running `@meshkv/node/browser`
// (browser-page.ts, bundled and served by storage's test/chromium.ts), over WebRTC inside
// the private network namespace (`pnpm test`, or scripts/netns-run.sh). One cluster for
// the whole file; each test leaves it serving for the next. Every process is stopped by
// pid in `after`, whatever failed.
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ring } from '@meshkv/ring';
import { expect } from 'chai';
import { type HttpKvAnswer, httpKvAnswer } from '../../../test/lincheck/http-answer.ts';
import { checkKvHistory, type KvCall, type KvHistoryOp } from '../../../test/lincheck/kv.ts';
import {
  firefoxPath,
  killChromium,
  launchChromium,
  launchFirefox,
  type PageServer,
  servePage,
} from '../../storage/test/chromium.ts';
import type { MeshkvPage, PageResult, PageTimers } from './browser-page.ts';
import {
  DEADLINE_MS,
  ProcessSet,
  peerStatus,
  registryStatus,
  spawnPeer,
  startSignaling,
  waitForHttp,
  waitUntil,
} from './support/processes.ts';
import { type StatusView, statusView } from './support/status-view.ts';

type Browser = Awaited<ReturnType<typeof launchChromium>>;
type Page = Awaited<ReturnType<Browser['newPage']>>;

const PAGE_ENTRY = fileURLToPath(new URL('./browser-page.ts', import.meta.url));
const TOKEN = 'browser-cluster-token';
/** `meshkv node` and the signaling server's default cluster id. */
const CLUSTER_ID = 'meshkv';
/**
 * Enough that every member, pages included, is placed on some partition: node ids are
 * random, and at 8 partitions over 7 members a newcomer got none about once in 50 runs
 * (a fresh-clone run's Firefox node, 2026-12-04: the cluster it waited for, with every
 * page hosting a replica, could not come).
 */
const PARTITIONS = 16;
/**
 * Long enough that no page killed or closed here is marked down (and replaced) while the
 * tests look at it: these tests are about Raft failover and rejoining with data, not
 * re-replication (faults.node.test.ts covers that for Node peers).
 */
const GRACE_PERIOD_MS = 120_000;
/** How long the hidden page is watched (see that test's comment). */
const HIDDEN_WINDOW_MS = 60_000;
/** What Firefox says on a failed ICE attempt: the browser's report, not an error of ours. */
const FIREFOX_ICE_REPORT = /^Error: WebRTC: ICE failed, add a STUN server/;
/** A HTTP request's deadline at the peers. */
const REQUEST_TIMEOUT_MS = 5_000;

/** Calls `method` of the page's `window.meshkvPage` with JSON arguments. */
function inPage<M extends keyof MeshkvPage>(
  page: Page,
  method: M,
  ...args: Parameters<MeshkvPage[M]>
): Promise<Awaited<ReturnType<MeshkvPage[M]>>> {
  return page.evaluate(
    (m, a) => (window.meshkvPage[m] as (...x: unknown[]) => unknown)(...a),
    method,
    args as unknown[],
  ) as Promise<Awaited<ReturnType<MeshkvPage[M]>>>;
}

/** The keys (`<cluster>/<node id>`) of the identities the page's profile keeps. */
function storedIdentityKeys(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      const open = indexedDB.open('meshkv-identities');
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    const keys = await new Promise<IDBValidKey[]>((resolve, reject) => {
      const request = db.transaction('identities').objectStore('identities').getAllKeys();
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    db.close();
    return keys.map(String);
  });
}

/** PUT through a peer's HTTP API: true once acknowledged (200). */
async function peerPut(url: string, key: string, value: string): Promise<boolean> {
  const response = await fetch(
    `${url}/kv/${encodeURIComponent(key)}?timeout=${REQUEST_TIMEOUT_MS}`,
    {
      method: 'PUT',
      body: value,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS + 5_000),
    },
  );
  await response.arrayBuffer();
  return response.status === 200;
}

/** A linearizable GET through a peer: the value, null if none; throws on any failure. */
async function peerGet(url: string, key: string): Promise<string | null> {
  const response = await fetch(
    `${url}/kv/${encodeURIComponent(key)}?timeout=${REQUEST_TIMEOUT_MS}`,
    {
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS + 5_000),
    },
  );
  const body = await response.text();
  if (response.status === 404 && body.includes('KEY_NOT_FOUND')) return null;
  if (response.status !== 200) throw new Error(`GET ${key}: ${response.status} ${body}`);
  return body;
}

function value(result: PageResult): string | null | boolean {
  if (!result.ok) throw new Error(`${result.code}: ${result.message}`);
  return result.value;
}

/**
 * Writes unique keys through the peers, `concurrency` at a time, until stopped; keeps
 * every acknowledged one. Failures (a partition electing a leader) are counted, not
 * retried: only what was acknowledged must survive.
 */
class Writer {
  readonly acked = new Map<string, string>();
  failed = 0;
  private stopped = false;
  private readonly loops: Promise<void>[] = [];

  constructor(urls: readonly string[], prefix: string, concurrency = 4) {
    let next = 0;
    for (let lane = 0; lane < concurrency; lane++) {
      this.loops.push(
        (async () => {
          while (!this.stopped) {
            const i = next++;
            const key = `${prefix}-${i}`;
            const written = `${prefix} value ${i}`;
            const ok = await peerPut(urls[i % urls.length]!, key, written).catch(() => false);
            if (ok) this.acked.set(key, written);
            else this.failed++;
          }
        })(),
      );
    }
  }

  /** Resolves once `count` more writes were acknowledged than `since`. */
  async ackedPast(since: number, count: number, what: string): Promise<void> {
    await waitUntil(
      () => (this.acked.size >= since + count ? true : undefined),
      `${count} acknowledged writes ${what}`,
      () => ({ acked: this.acked.size, failed: this.failed }),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }
}

/** What a call's answer tells: its result, an unknown outcome (null), or nothing done. */
type Answer = HttpKvAnswer;

/** A call through a Node peer's HTTP API (`{code}` JSON bodies on failures). */
async function peerCall(url: string, call: KvCall): Promise<Answer> {
  const method = call.kind === 'get' ? 'GET' : call.kind === 'put' ? 'PUT' : 'DELETE';
  let response: Response;
  let body: string;
  try {
    response = await fetch(
      `${url}/kv/${encodeURIComponent(call.key)}?timeout=${REQUEST_TIMEOUT_MS}`,
      {
        method,
        body: call.kind === 'put' ? call.value : undefined,
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS + 5_000),
      },
    );
    body = await response.text();
  } catch {
    return call.kind === 'get' ? 'refused' : null;
  }
  const code =
    response.status === 200 ? null : ((JSON.parse(body) as { code?: string }).code ?? null);
  return httpKvAnswer(call.kind, response.status, code, body);
}

/** MeshKvError codes that promise the call did nothing (others may have applied a write). */
const REFUSALS = new Set(['OVERLOADED', 'KEY_INVALID', 'VALUE_INVALID', 'VALUE_TOO_LARGE']);

/** A put or get through a page's node (a page that closes mid-call: outcome unknown). */
async function pageCall(page: Page, call: KvCall): Promise<Answer> {
  if (call.kind === 'delete') throw new Error('pages take puts and gets here');
  let result: PageResult;
  try {
    result =
      call.kind === 'put'
        ? await inPage(page, 'put', call.key, call.value, REQUEST_TIMEOUT_MS)
        : await inPage(page, 'get', call.key, REQUEST_TIMEOUT_MS);
  } catch {
    return call.kind === 'get' ? 'refused' : null;
  }
  if (result.ok) {
    return call.kind === 'put'
      ? { kind: 'put' }
      : { kind: 'get', value: result.value as string | null };
  }
  return call.kind === 'get' || REFUSALS.has(result.code) ? 'refused' : null;
}

/** Where a client sends its next call; null when it has nowhere left to go. */
type Gateway = { readonly name: string; call(call: KvCall): Promise<Answer> } | null;

/**
 * Clients calling put, get (and, through peers, delete) on a few shared keys, each through
 * its own gateway, recording invoke and response times for test/lincheck.
 */
class SharedKeyClients {
  readonly history: KvHistoryOp[] = [];
  readonly outcomes = { ok: 0, unknown: 0, refused: 0 };
  private stopped = false;
  private readonly loops: Promise<void>[] = [];

  constructor(
    private readonly keys: readonly string[],
    gateways: readonly (() => Gateway)[],
  ) {
    for (const [client, gateway] of gateways.entries()) this.loops.push(this.run(client, gateway));
  }

  private async run(client: number, gatewayNow: () => Gateway): Promise<void> {
    for (let n = 0; !this.stopped; n++) {
      const gateway = gatewayNow();
      if (gateway === null) return;
      const key = this.keys[(client * 7 + n) % this.keys.length]!;
      const roll = (client * 13 + n * 5) % 10;
      const call: KvCall =
        roll < 5
          ? { kind: 'put', key, value: `c${client}:${n}` }
          : roll < 9 || gateway.name.startsWith('page')
            ? { kind: 'get', key }
            : { kind: 'delete', key };
      const callMs = performance.now();
      const result = await gateway.call(call);
      const returnMs = performance.now();
      if (result === 'refused') {
        this.outcomes.refused++;
        continue;
      }
      this.outcomes[result === null ? 'unknown' : 'ok']++;
      this.history.push({ client: `${gateway.name}#${client}`, callMs, returnMs, call, result });
    }
  }

  /** Stops the clients, reads every key once through `url`, and checks the history. */
  async stopAndCheck(url: string): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
    for (const key of this.keys) {
      const callMs = performance.now();
      const value = await waitUntil(
        () =>
          peerGet(url, key).then(
            (v) => ({ v }),
            () => undefined,
          ),
        `a final read of ${key}`,
        () => this.outcomes,
      );
      this.history.push({
        client: 'final-read',
        callMs,
        returnMs: performance.now(),
        call: { kind: 'get', key },
        result: { kind: 'get', value: value.v },
      });
    }
    const checked = checkKvHistory(this.history, { timeBudgetMs: 30_000 });
    if (checked.kind === 'violation') throw new Error(`not linearizable:\n${checked.report}`);
    expect(checked.kind, JSON.stringify(checked)).to.equal('ok');
    expect(this.outcomes.ok, JSON.stringify(this.outcomes)).to.be.greaterThan(this.keys.length);
  }
}

describe('browser nodes: 3 Chromium pages and 3 Node peers in one cluster', () => {
  const procs = new ProcessSet();
  let workDir: string;
  let profile: string;
  let server: PageServer;
  let signalingUrl: string;
  let peerUrls: string[] = [];
  let ring: Ring;
  let browser: Browser | null = null;
  let firefox: Browser | null = null;
  /** The pages running a node, by node id. */
  const pages = new Map<string, Page>();
  const pageErrors: string[] = [];

  async function state(): Promise<object> {
    return {
      nodes: await Promise.race([
        statuses().then(compactStatuses),
        new Promise((resolve) => setTimeout(resolve, 10_000, 'no statuses within 10 s')),
      ]).catch((error: unknown) => `cannot ask: ${String(error)}`),
      procs: procs.state(),
      pages: await pageLinks(),
      pageErrors,
    };
  }

  /** Per node: moves in flight, and per group `partition:role:term voters/learners`. */
  function compactStatuses(all: readonly StatusView[]): { [nodeId: string]: string } {
    const compact: { [nodeId: string]: string } = {};
    for (const s of all) {
      const groups = s.groups.map(
        (g) => `${g.partition}:${g.role}:${g.term} ${g.voters}/${g.learners}`,
      );
      compact[s.nodeId] = `moves ${s.movesInProgress}; ${groups.join(', ')}`;
    }
    return compact;
  }

  /** Each open page's mesh links (why one is not up), or why the page could not say. */
  async function pageLinks(): Promise<{ [nodeId: string]: unknown }> {
    const links: { [nodeId: string]: unknown } = {};
    for (const [nodeId, page] of pages) {
      links[nodeId] = await Promise.race([
        Promise.all([inPage(page, 'links'), inPage(page, 'signaling')]).then(
          ([byPeer, signaling]) => ({ links: byPeer, signaling }),
        ),
        new Promise((resolve) => setTimeout(resolve, 5_000, 'no answer within 5 s')),
      ]).catch((error: unknown) => `cannot ask: ${String(error)}`);
    }
    return links;
  }

  async function openPage(
    inBrowser: Browser = browser!,
  ): Promise<{ page: Page; nodeId: string; joined: string }> {
    const page = await inBrowser.newPage();
    page.on('pageerror', (error) => {
      // Firefox reports each failed ICE attempt (to a peer that died) as a page error of
      // its own; the mesh retries, and the tests check what the cluster does about it.
      if (!FIREFOX_ICE_REPORT.test(String(error))) pageErrors.push(String(error));
    });
    await page.goto(server.url);
    const started = await inPage(page, 'start', {
      signalingUrl,
      token: TOKEN,
      clusterId: CLUSTER_ID,
    });
    pages.set(started.nodeId, page);
    return { page, ...started };
  }

  /** Every node's view: peers over HTTP, pages through page.evaluate. */
  async function statuses(): Promise<StatusView[]> {
    const fromPeers = await Promise.all(
      peerUrls.map(async (url) => statusView(await peerStatus(url))),
    );
    const fromPages = await Promise.all([...pages.values()].map((page) => inPage(page, 'status')));
    return [...fromPeers, ...fromPages];
  }

  /** Leader node of each partition, as the leaders themselves report it. */
  function leadersOf(all: readonly StatusView[]): Map<number, { node: string; term: number }> {
    const leaders = new Map<number, { node: string; term: number }>();
    for (const s of all) {
      for (const g of s.groups) {
        if (g.role !== 'leader') continue;
        const known = leaders.get(g.partition);
        if (known === undefined || known.term < g.term) {
          leaders.set(g.partition, { node: s.nodeId, term: g.term });
        }
      }
    }
    return leaders;
  }

  /** Every partition led, with 3 voters and no move in flight; every page hosts a replica. */
  async function settled(): Promise<StatusView[] | undefined> {
    const all = await statuses();
    const leaders = leadersOf(all);
    if (leaders.size !== PARTITIONS) return undefined;
    for (const s of all) {
      if (s.movesInProgress !== 0) return undefined;
      for (const g of s.groups) {
        if (g.role === 'leader' && (g.voters !== 3 || g.learners !== 0 || g.votersOutgoing !== 0)) {
          return undefined;
        }
      }
    }
    // Every page the placement puts replicas on hosts some; one placed nowhere is named.
    const registry = await registryStatus(signalingUrl);
    const placement = ring.placement(
      registry.members.filter((m) => m.state === 'up').map((m) => m.nodeId),
    );
    for (const nodeId of pages.keys()) {
      let placed = 0;
      for (let p = 0; p < PARTITIONS; p++) if (placement.replicasOf(p).includes(nodeId)) placed++;
      if (placed === 0) throw new Error(`the placement puts no replica on page ${nodeId}`);
      if (!all.some((s) => s.nodeId === nodeId && s.groups.length > 0)) return undefined;
    }
    return all;
  }

  /** `count` keys placed in `partitions` (in turn). */
  function keysOfPartitions(partitions: readonly number[], count: number): string[] {
    const keys: string[] = [];
    for (let i = 0; keys.length < count && i < 100_000; i++) {
      const key = `shared-${i}`;
      if (ring.partitionOf(key) === partitions[keys.length % partitions.length]) keys.push(key);
    }
    expect(keys.length, `keys in partitions ${partitions.join(', ')}`).to.equal(count);
    return keys;
  }

  /** Partitions `nodeId` leads now. */
  function ledBy(all: readonly StatusView[], nodeId: string): number[] {
    return [...leadersOf(all)].filter(([, l]) => l.node === nodeId).map(([p]) => p);
  }

  /**
   * A page leading a partition in a settled cluster, and the statuses seen. The Node
   * peers, there first, lead every partition until an election or a hand-off moves one:
   * when no page leads, a page takes the leadership of a partition it follows
   * (MeshNode.takeLeadership, asked again while the leader abandons transfers).
   */
  async function pageLeading(): Promise<{ nodeId: string; all: StatusView[] }> {
    const all = await waitUntil(settled, 'a settled cluster', state);
    const leading = [...pages.keys()].find((id) => ledBy(all, id).length > 0);
    if (leading !== undefined) return { nodeId: leading, all };
    const [nodeId, page] = [...pages][0]!;
    const { partition } = all
      .find((s) => s.nodeId === nodeId)!
      .groups.find((g) => g.role === 'follower')!;
    await waitUntil(
      async () => {
        const status = await inPage(page, 'status');
        if (status.groups.some((g) => g.partition === partition && g.role === 'leader')) {
          return true;
        }
        await inPage(page, 'takeLeadership', partition);
        return undefined;
      },
      `page ${nodeId} to take the leadership of partition ${partition}`,
      state,
    );
    const after = await waitUntil(settled, 'a settled cluster with a page leading', state);
    if (ledBy(after, nodeId).length === 0) throw new Error(`page ${nodeId} lost its leadership`);
    return { nodeId, all: after };
  }

  /** Every key of `acked` reads its value back through a peer (waiting out elections). */
  async function expectReadable(acked: ReadonlyMap<string, string>, what: string): Promise<void> {
    for (const [key, written] of acked) {
      const read = await waitUntil(
        () => peerGet(peerUrls[0]!, key).then((v) => (v === null ? { missing: true } : { v })),
        `${what}: ${key} readable`,
        state,
      );
      expect(read, `${what}: ${key}`).to.deep.equal({ v: written });
    }
  }

  before(async function () {
    this.timeout(4 * DEADLINE_MS);
    workDir = await mkdtemp(join(tmpdir(), 'meshkv-browser-cluster-'));
    profile = join(workDir, 'chromium');
    const signaling = await startSignaling(
      {
        dataDir: join(workDir, 'signaling'),
        token: TOKEN,
        partitions: PARTITIONS,
        replicas: 3,
        gracePeriodMs: GRACE_PERIOD_MS,
      },
      procs.track,
    );
    signalingUrl = signaling.url;
    ring = new Ring((await registryStatus(signalingUrl)).settings);
    const peers = [1, 2, 3].map((i) =>
      procs.track(
        spawnPeer({
          signalingUrl,
          token: TOKEN,
          dataDir: join(workDir, `peer-${i}`),
          name: `peer-${i}`,
        }),
      ),
    );
    [server, peerUrls] = await Promise.all([
      servePage(PAGE_ENTRY),
      Promise.all(peers.map(waitForHttp)),
    ]);
    browser = await launchChromium(profile, { throttleHiddenPages: true });
    for (let i = 0; i < 3; i++) await openPage();
    await waitUntil(settled, 'the 6 nodes to settle: every partition led by 3 voters', state);
  });

  // A failure that is not a timed-out wait (a one-shot read) shows no state by itself: the
  // links of every page and what each process logged about links and signaling.
  afterEach(async function () {
    if (this.currentTest?.state !== 'failed') return;
    this.timeout(DEADLINE_MS);
    const logs = procs.grep(/link|signal/, 40);
    console.log(`      after the failure: ${JSON.stringify({ logs, pages: await pageLinks() })}`);
  });

  after(async function () {
    this.timeout(2 * DEADLINE_MS);
    if (browser !== null) await killChromium(browser);
    if (firefox !== null) await killChromium(firefox);
    await procs.killAll();
    await server?.close();
    if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
  });

  it('writes from a page are read from a Node peer, and writes from a peer from every page', async () => {
    for (const [nodeId, page] of pages) {
      const key = `from-page-${nodeId}`;
      expect(value(await inPage(page, 'put', key, `written by ${nodeId}`))).to.equal(true);
      expect(await peerGet(peerUrls[1]!, key)).to.equal(`written by ${nodeId}`);
    }
    expect(await peerPut(peerUrls[2]!, 'from-peer', 'written by peer 3')).to.equal(true);
    for (const page of pages.values()) {
      expect(value(await inPage(page, 'get', 'from-peer'))).to.equal('written by peer 3');
    }
  });

  it('a reloaded page keeps its node id and its IndexedDB data', async () => {
    const [nodeId, page] = [...pages][0]!;
    const before = await inPage(page, 'status');
    expect(before.groups.length).to.be.greaterThan(0);
    expect(value(await inPage(page, 'put', 'before-reload', 'kept'))).to.equal(true);
    await page.reload();
    const again = await inPage(page, 'start', {
      signalingUrl,
      token: TOKEN,
      clusterId: CLUSTER_ID,
    });
    expect(again).to.deep.equal({ nodeId, joined: 'rejoined' });
    // Straight from IndexedDB, before any leader could have sent it anything.
    const loaded = await inPage(page, 'status');
    expect(loaded.groups.map((g) => g.partition)).to.include.members(
      before.groups.map((g) => g.partition),
    );
    expect(value(await inPage(page, 'get', 'before-reload'))).to.equal('kept');
    await waitUntil(settled, 'the cluster to settle after the reload', state);
  });

  it('a duplicated tab (same sessionStorage) gets a new node id, never a second one of the original', async () => {
    const [nodeId, original] = [...pages][0]!;
    const session = await original.evaluate(() => JSON.stringify({ ...sessionStorage }));
    expect(session).to.include(nodeId);
    const duplicate = await browser!.newPage();
    duplicate.on('pageerror', (error) => pageErrors.push(String(error)));
    // What "Duplicate tab" does: the new tab starts with a copy of the original's entries.
    await duplicate.evaluateOnNewDocument((entries: string) => {
      for (const [k, v] of Object.entries(JSON.parse(entries) as Record<string, string>)) {
        sessionStorage.setItem(k, v);
      }
    }, session);
    await duplicate.goto(server.url);
    const started = await inPage(duplicate, 'start', {
      signalingUrl,
      token: TOKEN,
      clusterId: CLUSTER_ID,
    });
    expect(started.nodeId).to.not.equal(nodeId);
    expect(started.joined).to.equal('new member');
    expect(await duplicate.evaluate(() => JSON.stringify({ ...sessionStorage }))).to.include(
      started.nodeId,
    );
    // The original still runs its node.
    expect(value(await inPage(original, 'put', 'after-duplicate', 'original'))).to.equal(true);
    // Gone gracefully: the cluster hands its replicas back and forgets it.
    expect(value(await inPage(duplicate, 'leave'))).to.equal(true);
    await duplicate.close();
    await waitUntil(settled, 'the cluster to settle after the duplicate left', state);
  });

  it(`a hidden page keeps leading its partitions while its page timers are throttled (${HIDDEN_WINDOW_MS / 1000} s)`, async function () {
    this.timeout(HIDDEN_WINDOW_MS + 2 * DEADLINE_MS);
    // How this is verified: Chromium is launched without puppeteer's flags that turn off
    // background throttling, and another tab is brought to the front, so the page is
    // hidden (visibilityState) and its own 100 ms interval fires about once a second —
    // asserted below, or the test would prove nothing. Meanwhile writes reach every
    // partition, so the groups it leads are awake (not quiesced) and need its heartbeats
    // and appends; if its ticks came from page timers (1 Hz, against the followers'
    // 1-2 s election timeouts) its followers would campaign. The window is issue 13's 60 s;
    // intensive throttling (one wake-up a minute) begins only after 5 minutes hidden and
    // spares pages using WebRTC, so a longer one would add only run time.
    const { nodeId: hiddenId } = await pageLeading();
    const hidden = pages.get(hiddenId)!;
    const led = new Map(
      (await inPage(hidden, 'status')).groups
        .filter((g) => g.role === 'leader')
        .map((g) => [g.partition, g.term] as const),
    );
    expect(led.size).to.be.greaterThan(0);
    const front = [...pages].find(([id]) => id !== hiddenId)![1];
    await front.bringToFront();
    await waitUntil(
      async () => ((await inPage(hidden, 'timers')).visibility === 'hidden' ? true : undefined),
      'the page to be hidden',
      state,
    );
    await inPage(hidden, 'resetTimers');
    const writer = new Writer(peerUrls, 'hidden');
    const startMs = Date.now();
    let timers: PageTimers = await inPage(hidden, 'timers');
    let maxClockLagMs = 0;
    try {
      while (Date.now() - startMs < HIDDEN_WINDOW_MS) {
        const status = await inPage(hidden, 'status');
        for (const [partition, term] of led) {
          const g = status.groups.find((x) => x.partition === partition);
          expect(g, `partition ${partition} still hosted`).to.not.equal(undefined);
          expect({ partition, role: g!.role, term: g!.term }).to.deep.equal({
            partition,
            role: 'leader',
            term,
          });
        }
        timers = await inPage(hidden, 'timers');
        maxClockLagMs = Math.max(maxClockLagMs, timers.nodeClockLagMs);
        expect(timers.visibility).to.equal('hidden');
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    } finally {
      await writer.stop();
    }
    console.log(
      `      hidden page ${hiddenId}: led ${led.size} partitions, page timer max gap ${Math.round(timers.pageTimerMaxGapMs)} ms, node clock max lag ${maxClockLagMs} ms, ${writer.acked.size} writes acknowledged, ${writer.failed} failed`,
    );
    expect(timers.pageTimerMaxGapMs, 'the hidden page was throttled').to.be.at.least(900);
    expect(writer.acked.size).to.be.greaterThan(0);
    await expectReadable(writer.acked, 'written while hidden');
    await hidden.bringToFront();
  });

  it('fault controls: crash and restart keep the id and data; isolation and dropped frames are survived', async () => {
    const { nodeId, all } = await pageLeading();
    const page = pages.get(nodeId)!;
    const led = ledBy(all, nodeId);
    const writer = new Writer(peerUrls, 'faults');
    try {
      await writer.ackedPast(0, 10, 'before the crash');
      await inPage(page, 'crash');
      await waitUntil(
        async () => {
          const leaders = leadersOf(await statuses());
          return led.every((p) => leaders.get(p)?.node !== nodeId) ? true : undefined;
        },
        `new leaders for partitions ${led.join(', ')} led by the crashed page`,
        state,
      );
      await writer.ackedPast(writer.acked.size, 10, 'while the page is crashed');
      expect(await inPage(page, 'restart')).to.deep.equal({ nodeId, joined: 'rejoined' });
      expect((await inPage(page, 'status')).groups.length).to.be.greaterThan(0);
      const crashedKey = [...writer.acked.keys()].at(-1)!;
      // Its first requests may time out while its links come up and its groups learn leaders.
      const read = await waitUntil(
        async () => {
          const got = await inPage(page, 'get', crashedKey);
          return got.ok ? got.value : undefined;
        },
        'a read through the restarted page',
        state,
      );
      expect(read).to.equal(writer.acked.get(crashedKey));

      await inPage(page, 'setIsolated', true);
      const isolatedPut = await inPage(page, 'put', 'isolated-put', 'x', 2_000);
      expect(isolatedPut.ok, 'a put from an isolated node').to.equal(false);
      await writer.ackedPast(writer.acked.size, 10, 'while the page is isolated');
      const isolated = await inPage(page, 'faults');
      expect(isolated.isolated).to.equal(true);
      expect(isolated.framesDroppedOut).to.be.greaterThan(0);
      await inPage(page, 'setIsolated', false);
      await waitUntil(
        async () => ((await inPage(page, 'put', 'after-isolation', 'back')).ok ? true : undefined),
        'a put from the page once it is back',
        state,
      );

      await inPage(page, 'setDropPercent', 30);
      for (let i = 0; i < 10; i++) {
        // Raft and the router retry what is lost; a put may still time out: try again.
        await waitUntil(
          async () => ((await inPage(page, 'put', `dropped-${i}`, `d${i}`)).ok ? true : undefined),
          `put ${i} from the page dropping 30 % of its frames`,
          state,
        );
      }
      const dropping = await inPage(page, 'faults');
      expect(dropping.dropPercent).to.equal(30);
      expect(dropping.framesDroppedOut).to.be.greaterThan(0);
      expect(dropping.framesDroppedIn).to.be.greaterThan(0);
      await inPage(page, 'setDropPercent', 0);
    } finally {
      await writer.stop();
    }
    expect(await peerGet(peerUrls[0]!, 'after-isolation')).to.equal('back');
    for (let i = 0; i < 10; i++)
      expect(await peerGet(peerUrls[1]!, `dropped-${i}`)).to.equal(`d${i}`);
    await expectReadable(writer.acked, 'written around the faults');
  });

  it('closing a page that leads partitions: the cluster keeps serving, loses nothing acknowledged, and the history (through that page, another and the peers) is linearizable', async () => {
    const { nodeId: closedId, all } = await pageLeading();
    const led = ledBy(all, closedId);
    const writer = new Writer(peerUrls, 'close');
    // Shared keys in the partitions the page leads, called through the page itself (until
    // it closes), another page and the peers: the history must be linearizable.
    const sharedKeys = keysOfPartitions(led, 3);
    const closing = pages.get(closedId)!;
    const [otherId, other] = [...pages].find(([id]) => id !== closedId)!;
    const viaPage = (id: string, page: Page) => (): Gateway =>
      pages.has(id) ? { name: `page ${id}`, call: (call) => pageCall(page, call) } : null;
    const viaPeer = (url: string) => (): Gateway => ({
      name: `peer ${url}`,
      call: (call) => peerCall(url, call),
    });
    const clients = new SharedKeyClients(sharedKeys, [
      viaPage(closedId, closing),
      viaPage(closedId, closing),
      viaPage(otherId, other),
      viaPeer(peerUrls[0]!),
      viaPeer(peerUrls[1]!),
    ]);
    try {
      await writer.ackedPast(0, 20, 'before the close');
      const page = pages.get(closedId)!;
      pages.delete(closedId);
      await page.close();
      await waitUntil(
        async () => {
          const leaders = leadersOf(await statuses());
          return led.every((p) => {
            const l = leaders.get(p);
            return l !== undefined && l.node !== closedId;
          })
            ? true
            : undefined;
        },
        `new leaders for partitions ${led.join(', ')} led by the closed page`,
        state,
      );
      await writer.ackedPast(writer.acked.size, 20, 'after the new leaders');
    } finally {
      await writer.stop();
    }
    await clients.stopAndCheck(peerUrls[2]!);
    console.log(
      `      closed page ${closedId}: shared keys ${sharedKeys.join(', ')}: ${JSON.stringify(clients.outcomes)}`,
    );
    await expectReadable(writer.acked, 'written around the close');
  });

  it('killing the browser while pages lead partitions loses nothing acknowledged; reopened pages rejoin with their data', async () => {
    await pageLeading();
    // Every node the profile knows: the open pages and the one closed above.
    const known = await storedIdentityKeys([...pages.values()][0]!);
    const writer = new Writer(peerUrls, 'kill');
    try {
      await writer.ackedPast(0, 20, 'before the kill');
      await killChromium(browser!);
      browser = null;
      pages.clear();
      // Partitions with a majority on Node peers keep taking writes meanwhile.
      await writer.ackedPast(writer.acked.size, 5, 'after the kill');
    } finally {
      await writer.stop();
    }
    browser = await launchChromium(profile, { throttleHiddenPages: true });
    const reopened: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { nodeId, joined } = await openPage();
      expect(joined, `${nodeId} reopened`).to.equal('rejoined');
      reopened.push(`${CLUSTER_ID}/${nodeId}`);
    }
    expect(known).to.include.members(reopened);
    for (const [nodeId, page] of pages) {
      expect(
        (await inPage(page, 'status')).groups.length,
        `${nodeId} hosts its data`,
      ).to.be.greaterThan(0);
    }
    await expectReadable(writer.acked, 'written around the kill');
    await waitUntil(settled, 'the cluster to settle with the reopened pages', state);
    for (const page of pages.values()) {
      // A read that fails (TIMEOUT while an election settles under load) is asked again; a
      // read that answers must answer the value.
      const kept = await waitUntil(
        async () => value(await inPage(page, 'get', 'before-reload')),
        'a reopened page to read before-reload',
        state,
      );
      expect(kept).to.equal('kept');
    }
    expect(pageErrors).to.deep.equal([]);
  });

  it('a Firefox ESR page beside the Chromium pages: its writes are read from Chromium and Node; killing Firefox loses nothing acknowledged', async function () {
    const installed = await access(firefoxPath).then(
      () => true,
      () => false,
    );
    if (!installed) {
      console.log(`      ${firefoxPath} is not installed (Debian: apt-get install firefox-esr)`);
      this.skip();
    }
    firefox = await launchFirefox(join(workDir, 'firefox'));
    const { page, nodeId } = await openPage(firefox);
    await waitUntil(settled, 'the cluster to settle with the Firefox node', state);
    const chromiumPage = [...pages].find(([id]) => id !== nodeId)![1];
    const fromFirefox = new Map<string, string>();
    for (let i = 0; i < 8; i++) {
      const [key, written] = [`from-firefox-${i}`, `firefox ${i}`];
      // A new node's first requests may time out while its links come up: a put of the
      // same value again is harmless.
      await waitUntil(
        async () => {
          const put = await inPage(page, 'put', key, written);
          if (!put.ok) {
            const status = await inPage(page, 'status');
            throw new Error(`${put.code}: ${put.message}; Firefox links up: ${status.peers}`);
          }
          return true;
        },
        `put ${key} from Firefox`,
        state,
      );
      fromFirefox.set(key, written);
    }
    for (const [key, written] of fromFirefox) {
      expect(value(await inPage(chromiumPage, 'get', key))).to.equal(written);
      expect(await peerGet(peerUrls[2]!, key)).to.equal(written);
    }
    expect(await peerPut(peerUrls[0]!, 'for-firefox', 'from a peer')).to.equal(true);
    expect(value(await inPage(page, 'get', 'for-firefox'))).to.equal('from a peer');
    const writer = new Writer(peerUrls, 'firefox-kill');
    try {
      await writer.ackedPast(0, 20, 'before Firefox is killed');
      pages.delete(nodeId);
      await killChromium(firefox);
      firefox = null;
      await writer.ackedPast(writer.acked.size, 20, 'after Firefox is killed');
    } finally {
      await writer.stop();
    }
    await expectReadable(new Map([...fromFirefox, ...writer.acked]), 'with Firefox killed');
    // Back on its profile, it rejoins with its data; it stays for the last test.
    firefox = await launchFirefox(join(workDir, 'firefox'));
    const reopened = await openPage(firefox);
    expect({ nodeId: reopened.nodeId, joined: reopened.joined }).to.deep.equal({
      nodeId,
      joined: 'rejoined',
    });
    expect((await inPage(reopened.page, 'status')).groups.length).to.be.greaterThan(0);
    for (const [key, written] of fromFirefox) {
      // Its first requests may time out while its links come up again.
      const read = await waitUntil(
        async () => {
          const got = await inPage(reopened.page, 'get', key);
          return got.ok ? got.value : undefined;
        },
        `${key} read through the reopened Firefox node`,
        state,
      );
      expect(read).to.equal(written);
    }
  });

  it('a node whose browser lost its store rejoins as a new member', async () => {
    const [nodeId, page] = [...pages][0]!;
    await inPage(page, 'crash');
    await inPage(page, 'loseStorage');
    const restarted = await inPage(page, 'restart');
    expect(restarted.nodeId).to.not.equal(nodeId);
    expect(restarted.joined).to.equal('new member');
    pages.delete(nodeId);
    pages.set(restarted.nodeId, page);
    // Its old identity is forgotten: no tab adopts it again.
    const stored = await storedIdentityKeys(page);
    expect(stored).to.not.include(`${CLUSTER_ID}/${nodeId}`);
    expect(stored).to.include(`${CLUSTER_ID}/${restarted.nodeId}`);
    await waitUntil(
      async () => (value(await inPage(page, 'get', 'before-reload')) === 'kept' ? true : undefined),
      'a read through the new member',
      state,
    );
    expect(pageErrors).to.deep.equal([]);
  });

  it('an identity the registry refuses is set aside, its record kept as refused, and the tab joins as a new member', async () => {
    const page = await browser!.newPage();
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    await page.goto(server.url);
    // A stored identity whose lock is free, for an id the registry never issued: the
    // registry refuses its secret (wrong_secret), as it would a retired member's.
    const planted = {
      clusterId: CLUSTER_ID,
      nodeId: 'planted-unknown',
      memberSecret: 'not-a-secret',
    };
    await page.evaluate(async (identity) => {
      const db = await new Promise<IDBDatabase>((resolve, reject) => {
        const open = indexedDB.open('meshkv-identities');
        open.onsuccess = () => resolve(open.result);
        open.onerror = () => reject(open.error);
      });
      await new Promise<void>((resolve, reject) => {
        const tx = db.transaction('identities', 'readwrite');
        tx.objectStore('identities').put(identity, `${identity.clusterId}/${identity.nodeId}`);
        tx.oncomplete = () => resolve();
        tx.onerror = () => reject(tx.error);
      });
      db.close();
    }, planted);
    const started = await inPage(page, 'start', {
      signalingUrl,
      token: TOKEN,
      clusterId: CLUSTER_ID,
    });
    expect(started.joined).to.equal('new member');
    expect(started.nodeId).to.not.equal(planted.nodeId);
    pages.set(started.nodeId, page);
    const record = await page.evaluate(async (key) => {
      const db = await new Promise<IDBDatabase>((resolve, reject) => {
        const open = indexedDB.open('meshkv-identities');
        open.onsuccess = () => resolve(open.result);
        open.onerror = () => reject(open.error);
      });
      const value = await new Promise<unknown>((resolve, reject) => {
        const request = db.transaction('identities').objectStore('identities').get(key);
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
      });
      db.close();
      return value as { refused?: string } | undefined;
    }, `${CLUSTER_ID}/${planted.nodeId}`);
    expect(record?.refused).to.be.a('string').and.include('wrong_secret');
    expect(value(await inPage(page, 'put', 'from-the-new-member', 'yes'))).to.equal(true);
    expect(pageErrors).to.deep.equal([]);
  });
});
