// `pnpm bench browser [--ops put,get] [--concurrency 16,128] [--seconds S] [--warmup S]
// [--partitions Q] [--profile] [--no-etcd]` (issue 13): three Chromium pages as the whole
// cluster, no Node peer, against a real 3-member etcd in the same run. No pass/fail.
//
// meshkv: the signaling server (the default 64 partitions at three replicas) and one
// headless Chromium (scripts/chromium.mjs) with three node pages, each running
// `@meshkv/node/browser` (IndexedDB with strict durability: the real thing) over WebRTC on
// loopback; measured once every partition has three voters and a leader. The client is a
// fourth page of the same browser that hosts no node: the registry has no client-only
// member (every member is given replicas), so a client tab sends each request to a node
// page over a BroadcastChannel and that page's node routes it to the partition's leader,
// as a Node peer's HTTP API does for etcd's gateway-like client. Its loop is closed-loop.ts
// (N requests in flight, spread over the three node pages in turn, keys cycling over 4096
// of 100 B, every key written before a get row); the page runs it, so no DevTools round
// trip sits in a request's path. etcd (lib/etcd.ts; skipped when not installed) runs the
// same rows after the browser is stopped, its client this process over node:http.
//
// CPU: utime + stime of every process in Chromium's tree (/proc), split by role: each
// node page's renderer, the client page's renderer, the browser process (which also holds
// IndexedDB and relays the channels) and utility processes; read when the client page
// marks the measured window's start and end (window.benchMark). Server CPU is everything
// but the client renderer (and, for etcd, its three members). --profile takes a V8 CPU
// profile of every page over each measured window (DevTools Profiler domain) and prints
// each page's self time by module and its top functions (the profiler costs a little:
// take the headline figures without it). WebRTC needs the private network namespace:
// outside it the bench runs itself again under scripts/netns-run.sh. Every process is
// stopped by pid.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProcessSet, startSignaling, waitUntil } from '../packages/node/test/support/processes.ts';
import type { StatusView } from '../packages/node/test/support/status-view.ts';
import {
  killChromium,
  launchChromium,
  type PageServer,
  servePage,
} from '../packages/storage/test/chromium.ts';
import type { ClientSpec, Phase } from './lib/browser-page.ts';
import {
  fillKeys,
  keyNames,
  type LoopResult,
  type LoopSpec,
  measureLoop,
  patternValue,
} from './lib/closed-loop.ts';
import { cpuSecondsOf, etcdCall, etcdVersion, statCpuSeconds, withEtcd } from './lib/etcd.ts';
import { inNetworkNamespace } from './lib/netns.ts';
import { round1, round3, textTable } from './lib/report.ts';
import { parseRowBenchArgs, type RowBenchArgs } from './lib/row-args.ts';

type Browser = Awaited<ReturnType<typeof launchChromium>>;
type Page = Awaited<ReturnType<Browser['newPage']>>;
type CDPSession = Awaited<ReturnType<Page['createCDPSession']>>;

const HERE = fileURLToPath(import.meta.url);
const PAGE_ENTRY = join(dirname(HERE), 'lib/browser-page.ts');
const NODE_PAGES = 3;
const VALUE_BYTES = 100;
const KEYS = 4096;
/** Keys written at once while filling before a get row. */
const FILL_CONCURRENCY = 64;
/** Setting up (placement of every partition) must finish within this. */
const SETUP_DEADLINE_MS = 600_000;
/** etcd's request bound (the node pages use the same deadline, browser-page.ts). */
const REQUEST_TIMEOUT_MS = 30_000;
/** How long the bench waits for the page's mark of a window's end once its loop returned. */
const MARK_DEADLINE_MS = 10_000;
/** `meshkv node` and the signaling server's default cluster id. */
const CLUSTER_ID = 'meshkv';

type System = 'meshkv-browser' | 'etcd';
type Op = 'put' | 'get';

/** `--profile` (a flag here) is `profile !== null`. */
type Args = RowBenchArgs<Op>;

function parseArgs(argv: readonly string[]): Args {
  return parseRowBenchArgs<Op>(argv, {
    name: 'browser',
    ops: ['put', 'get'],
    defaultConcurrencies: [16, 128],
    profile: 'flag',
  });
}

// ---- CPU of Chromium's process tree ---------------------------------------------------

/** CPU seconds by pid, and each pid's role. */
type CpuSnapshot = Map<number, ProcessCpu>;

interface ProcessCpu {
  readonly role: string;
  readonly cpuSeconds: number;
  /** CPU seconds by thread name (threads of one name summed), where read. */
  readonly threads?: ReadonlyMap<string, number>;
}

/** Processes whose threads a row reports (where the time of a put goes). */
const THREAD_ROLES = ['browser', 'node-1', 'client', 'utility:network'];
/** Threads reported per process, the busiest. */
const THREADS_SHOWN = 6;

/** CPU seconds of `pid`'s threads by name (/proc/<pid>/task/<tid>/stat: comm, utime, stime). */
function threadCpuOf(pid: number): Map<string, number> {
  const byName = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const seconds = statCpuSeconds(`/proc/${pid}/task/${tid}/stat`);
      byName.set(name, (byName.get(name) ?? 0) + seconds);
    } catch {
      // Gone.
    }
  }
  return byName;
}

/** Every live descendant of `rootPid` (and itself), read from /proc. */
function processTree(rootPid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const siblings = children.get(ppid) ?? [];
      siblings.push(Number(entry));
      children.set(ppid, siblings);
    } catch {
      // Gone between the listing and the read.
    }
  }
  const tree = [rootPid];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]!) ?? []));
  return tree;
}

/** What a Chromium process is, from its command line: `browser`, `renderer`, `utility:network`… */
function chromiumRole(pid: number): string {
  // Chromium rewrites its title: the arguments may stand in one space-separated string.
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split(/[\0 ]/);
  const flag = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  const type = flag('type');
  if (type === undefined) return 'browser';
  if (type === 'utility') {
    return `utility:${(flag('utility-sub-type') ?? 'other').split('.')[0]}`;
  }
  return type;
}

/** The renderers of Chromium's tree right now. */
function renderers(browserPid: number): Set<number> {
  const found = new Set<number>();
  for (const pid of processTree(browserPid)) {
    try {
      if (chromiumRole(pid) === 'renderer') found.add(pid);
    } catch {
      // Gone.
    }
  }
  return found;
}

/** Every process of the tree, renderers named by the page they serve where known. */
function cpuSnapshot(
  browserPid: number,
  pageOfRenderer: ReadonlyMap<number, string>,
  extra: ReadonlyMap<number, string>,
): CpuSnapshot {
  const snapshot: CpuSnapshot = new Map();
  for (const pid of [...processTree(browserPid), ...extra.keys()]) {
    try {
      const role = extra.get(pid) ?? pageOfRenderer.get(pid) ?? chromiumRole(pid);
      const threads = THREAD_ROLES.includes(role) ? threadCpuOf(pid) : undefined;
      snapshot.set(pid, { role, cpuSeconds: cpuSecondsOf(pid), ...(threads && { threads }) });
    } catch {
      // Gone.
    }
  }
  return snapshot;
}

/** CPU seconds by role between two snapshots (a process new in `after` counts from 0). */
function cpuByRole(before: CpuSnapshot, after: CpuSnapshot): Record<string, number> {
  const byRole: Record<string, number> = {};
  for (const [pid, { role, cpuSeconds }] of after) {
    const spent = cpuSeconds - (before.get(pid)?.cpuSeconds ?? 0);
    byRole[role] = (byRole[role] ?? 0) + spent;
  }
  for (const role of Object.keys(byRole)) byRole[role] = round3(byRole[role]!);
  return byRole;
}

/** The busiest threads of each process whose threads were read, between two snapshots. */
function threadsByRole(
  before: CpuSnapshot,
  after: CpuSnapshot,
): Record<string, Record<string, number>> {
  const byRole: Record<string, Record<string, number>> = {};
  for (const [pid, { role, threads }] of after) {
    if (threads === undefined) continue;
    const earlier = before.get(pid)?.threads;
    const spent: [string, number][] = [...threads].map(([name, seconds]) => [
      name,
      round3(seconds - (earlier?.get(name) ?? 0)),
    ]);
    spent.sort((a, b) => b[1] - a[1]);
    byRole[role] = Object.fromEntries(spent.slice(0, THREADS_SHOWN));
  }
  return byRole;
}

// ---- Profiles ------------------------------------------------------------------------------

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** The source file of each line of the bundle: esbuild heads each module with `// path`. */
function bundleModules(bundle: string): (line: number) => string {
  const starts: { line: number; module: string }[] = [];
  const lines = bundle.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^\/\/ ((?:\.\.\/)*[\w@.-][\w@./+-]*\.[cm]?[jt]s)$/.exec(lines[i]!);
    if (m !== null) starts.push({ line: i, module: m[1]!.replace(/^(\.\.\/)+/, '') });
  }
  return (line) => {
    let low = 0;
    let high = starts.length - 1;
    let found = '(bundle head)';
    while (low <= high) {
      const middle = (low + high) >>> 1;
      if (starts[middle]!.line <= line) {
        found = starts[middle]!.module;
        low = middle + 1;
      } else high = middle - 1;
    }
    return found;
  };
}

/** A module's package: `packages/node`, `socket.io-client`, `bench`. */
function packageOf(module: string): string {
  return (
    /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?(@[^/]+\/[^/]+|[^/]+)/.exec(module)?.[1] ??
    /^(packages\/[^/]+|signaling|bench)/.exec(module)?.[1] ??
    module
  );
}

/** Self time by package and by function of one page's profile, busy time only. */
function summarizeProfile(profile: CpuProfile, moduleOf: (line: number) => string): object {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const byFunction = new Map<string, number>();
  const byPackage = new Map<string, number>();
  let busyUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)' || frame.functionName === '(program)') {
      if (frame.functionName === '(idle)') idleUs += us;
      else busyUs += us;
      byPackage.set(frame.functionName, (byPackage.get(frame.functionName) ?? 0) + us);
      continue;
    }
    busyUs += us;
    const inBundle = frame.url.endsWith('/page.js');
    // A frame with no script is a built-in (IDBObjectStore.put, RTCDataChannel.send…).
    const where = inBundle ? moduleOf(frame.lineNumber) : frame.url || '(built-in)';
    const name = `${frame.functionName || '(anonymous)'} ${where}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + us);
    const pkg = inBundle ? packageOf(where) : where;
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us);
  }
  byPackage.delete('(idle)');
  const top = (map: Map<string, number>, n: number) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([what, us]) => ({
        what,
        selfMs: Math.round(us / 1000),
        pct: round1((100 * us) / busyUs),
      }));
  return {
    busyMs: Math.round(busyUs / 1000),
    idleMs: Math.round(idleUs / 1000),
    byPackage: top(byPackage, 10),
    byFunction: top(byFunction, 15),
  };
}

// ---- The browser cluster ---------------------------------------------------------------------

interface BrowserCluster {
  readonly browser: Browser;
  readonly nodePages: readonly Page[];
  readonly nodeIds: readonly string[];
  readonly client: Page;
  /** Page name (`node-1`…, `client`) of each renderer pid. */
  readonly pageOfRenderer: ReadonlyMap<number, string>;
  /** The current row's window marks (the client page calls window.benchMark). */
  onMark: (phase: Phase) => void;
}

/** CPU the page's renderer is made to spend to be told from the others (see openPage). */
const MARKER_BUSY_MS = 300;

/**
 * Opens a page of `server` and finds its renderer. Chromium hands a navigation its spare
 * renderer and starts a new spare, so the process that appears is not the page's: the page
 * spins for MARKER_BUSY_MS instead (nothing else runs yet) and the renderer that spent it
 * is the page's.
 */
async function openPage(
  browser: Browser,
  url: string,
  name: string,
  pageOfRenderer: Map<number, string>,
  pageErrors: string[],
): Promise<Page> {
  const browserPid = browser.process()!.pid!;
  const page = await browser.newPage();
  page.on('pageerror', (error) => pageErrors.push(`${name}: ${String(error)}`));
  await page.goto(url);
  await page.waitForFunction(() => 'meshkvBench' in window);
  const cpuOf = () =>
    new Map([...renderers(browserPid)].map((pid) => [pid, cpuSecondsOf(pid)] as const));
  const before = cpuOf();
  await page.evaluate((busyMs) => {
    const untilMs = performance.now() + busyMs;
    while (performance.now() < untilMs);
  }, MARKER_BUSY_MS);
  const spent = [...cpuOf()].map(([pid, cpu]) => [pid, cpu - (before.get(pid) ?? cpu)] as const);
  const [pid, seconds] = spent.sort((a, b) => b[1] - a[1])[0] ?? [0, 0];
  if (seconds >= MARKER_BUSY_MS / 2000) pageOfRenderer.set(pid, name);
  else console.log(JSON.stringify({ bench: 'browser', page: name, renderer: 'not found', spent }));
  return page;
}

/** Every partition led by three voters with no move in flight, seen from every node page. */
async function settled(
  pages: readonly Page[],
  partitions: number,
): Promise<StatusView[] | undefined> {
  const all = await Promise.all(pages.map((p) => p.evaluate(() => window.meshkvBench.status())));
  const led = new Set<number>();
  for (const status of all) {
    if (status.movesInProgress !== 0 || status.groups.length !== partitions) return undefined;
    for (const g of status.groups) {
      if (g.role !== 'leader') continue;
      if (g.voters !== NODE_PAGES || g.learners !== 0 || g.votersOutgoing !== 0) return undefined;
      led.add(g.partition);
    }
  }
  return led.size === partitions ? all : undefined;
}

async function startBrowserCluster(
  browser: Browser,
  server: PageServer,
  signalingUrl: string,
  token: string,
  args: Args,
  pageErrors: string[],
): Promise<BrowserCluster> {
  const pageOfRenderer = new Map<number, string>();
  const nodePages: Page[] = [];
  const nodeIds: string[] = [];
  const startMs = performance.now();
  for (let i = 0; i < NODE_PAGES; i++) {
    const page = await openPage(browser, server.url, `node-${i + 1}`, pageOfRenderer, pageErrors);
    const { nodeId } = await page.evaluate((start) => window.meshkvBench.startNode(start), {
      signalingUrl,
      token,
      clusterId: CLUSTER_ID,
    });
    nodePages.push(page);
    nodeIds.push(nodeId);
  }
  const statuses = await waitUntil(
    () => settled(nodePages, args.partitions),
    `every partition placed on ${NODE_PAGES} page voters with a leader`,
    () => ({ pageErrors }),
    SETUP_DEADLINE_MS,
  );
  const client = await openPage(browser, server.url, 'client', pageOfRenderer, pageErrors);
  const cluster: BrowserCluster = {
    browser,
    nodePages,
    nodeIds,
    client,
    pageOfRenderer,
    onMark: () => {},
  };
  await client.exposeFunction('benchMark', (phase: Phase) => cluster.onMark(phase));
  console.log(
    JSON.stringify({
      bench: 'browser',
      system: 'meshkv-browser',
      setup: 'placed',
      partitions: args.partitions,
      setupSeconds: round1((performance.now() - startMs) / 1000),
      browserPid: browser.process()!.pid,
      renderers: Object.fromEntries([...pageOfRenderer].map(([pid, name]) => [name, pid])),
      leadersPerPage: statuses.map((s) => s.groups.filter((g) => g.role === 'leader').length),
    }),
  );
  return cluster;
}

// ---- Rows ------------------------------------------------------------------------------------

interface RowSpec {
  readonly op: Op;
  readonly concurrency: number;
}

interface RowResult extends LoopResult {
  readonly bench: 'browser';
  readonly system: System;
  readonly op: Op;
  readonly concurrency: number;
  readonly opsPerSecond: number;
  /** CPU seconds of the servers (meshkv: Chromium's processes but the client page's renderer). */
  readonly serverCpuSeconds: number;
  readonly serverCpuUsPerOp: number;
  readonly clientCpuSeconds: number;
  readonly cpuByProcess: Record<string, number>;
  readonly loadAverage1m: number;
  /** meshkv: CPU seconds of the busiest threads of some of Chromium's processes. */
  readonly threadCpu?: Record<string, Record<string, number>>;
  readonly profiles?: Record<string, object>;
}

function loopSpec(row: RowSpec, args: Args): LoopSpec {
  return {
    endpoints: NODE_PAGES,
    keys: KEYS,
    concurrency: row.concurrency,
    warmupMs: args.warmupSeconds * 1000,
    measureMs: args.seconds * 1000,
  };
}

function rowResult(
  system: System,
  row: RowSpec,
  result: LoopResult,
  cpuByProcess: Record<string, number>,
  clientRole: string,
): RowResult {
  let serverCpuSeconds = 0;
  for (const [role, seconds] of Object.entries(cpuByProcess)) {
    if (role !== clientRole) serverCpuSeconds += seconds;
  }
  return {
    bench: 'browser',
    system,
    op: row.op,
    concurrency: row.concurrency,
    ...result,
    wallSeconds: round3(result.wallSeconds),
    p50Ms: round3(result.p50Ms),
    p99Ms: round3(result.p99Ms),
    maxMs: round3(result.maxMs),
    opsPerSecond: Math.round(result.ops / result.wallSeconds),
    serverCpuSeconds: round3(serverCpuSeconds),
    serverCpuUsPerOp: result.ops === 0 ? NaN : Math.round((serverCpuSeconds * 1e6) / result.ops),
    clientCpuSeconds: cpuByProcess[clientRole] ?? NaN,
    cpuByProcess,
    loadAverage1m: round1(loadavg()[0]!),
  };
}

/** DevTools sessions profiling every page over a measured window. */
class PageProfilers {
  private constructor(
    private readonly sessions: ReadonlyMap<string, CDPSession>,
    private readonly moduleOf: (line: number) => string,
  ) {}

  static async open(cluster: BrowserCluster, server: PageServer): Promise<PageProfilers> {
    const bundle = await (await fetch(`${server.url}page.js`)).text();
    const sessions = new Map<string, CDPSession>();
    const pages: [string, Page][] = cluster.nodePages.map((p, i) => [`node-${i + 1}`, p]);
    pages.push(['client', cluster.client]);
    for (const [name, page] of pages) {
      const session = await page.createCDPSession();
      await session.send('Profiler.enable');
      sessions.set(name, session);
    }
    return new PageProfilers(sessions, bundleModules(bundle));
  }

  async start(): Promise<void> {
    await Promise.all([...this.sessions.values()].map((s) => s.send('Profiler.start')));
  }

  async stop(): Promise<Record<string, object>> {
    const summaries: Record<string, object> = {};
    for (const [name, session] of this.sessions) {
      const { profile } = await session.send('Profiler.stop');
      summaries[name] = summarizeProfile(profile as CpuProfile, this.moduleOf);
    }
    return summaries;
  }
}

async function runBrowserRow(
  cluster: BrowserCluster,
  row: RowSpec,
  args: Args,
  meter: () => CpuSnapshot,
  profilers: PageProfilers | null,
): Promise<RowResult> {
  let atMeasure: CpuSnapshot | null = null;
  let atDone: CpuSnapshot | null = null;
  let profiling: Promise<void> = Promise.resolve();
  let profiles: Promise<Record<string, object>> | null = null;
  cluster.onMark = (phase) => {
    if (phase === 'measure') {
      atMeasure = meter();
      if (profilers !== null) profiling = profilers.start();
    } else {
      atDone = meter();
      if (profilers !== null) profiles = profiling.then(() => profilers.stop());
    }
  };
  const spec: ClientSpec = {
    ...loopSpec(row, args),
    nodeIds: cluster.nodeIds,
    op: row.op,
    valueBytes: VALUE_BYTES,
    fillConcurrency: row.op === 'get' ? FILL_CONCURRENCY : 0,
  };
  const result = await cluster.client.evaluate((s) => window.meshkvBench.runClient(s), spec);
  // The page's mark goes through a DevTools binding: it may arrive after the answer.
  const [before, after] = await waitUntil(
    () => (atMeasure !== null && atDone !== null ? [atMeasure, atDone] : undefined),
    'the client page to mark the window',
    undefined,
    MARK_DEADLINE_MS,
  );
  cluster.onMark = () => {};
  const measured = {
    ...rowResult('meshkv-browser', row, result, cpuByRole(before, after), 'client'),
    threadCpu: threadsByRole(before, after),
  };
  return profiles === null ? measured : { ...measured, profiles: await profiles };
}

async function runEtcdRow(
  endpoints: readonly string[],
  meter: () => CpuSnapshot,
  row: RowSpec,
  args: Args,
): Promise<RowResult> {
  const spec = loopSpec(row, args);
  const workload = {
    endpoints,
    value: patternValue(VALUE_BYTES),
    keyNames: keyNames(KEYS),
    sockets: Math.max(row.concurrency, FILL_CONCURRENCY),
    timeoutMs: REQUEST_TIMEOUT_MS,
  };
  if (row.op === 'get') {
    await fillKeys(etcdCall({ ...workload, op: 'put' }), spec, FILL_CONCURRENCY);
  }
  let atMeasure: CpuSnapshot = new Map();
  let atDone: CpuSnapshot = new Map();
  const result = await measureLoop(etcdCall({ ...workload, op: row.op }), spec, {
    measure: () => {
      atMeasure = meter();
    },
    done: () => {
      atDone = meter();
    },
  });
  return rowResult('etcd', row, result, cpuByRole(atMeasure, atDone), 'client');
}

/** The servers' CPU over `seconds` with no client: what the load rows' CPU includes anyway. */
async function idleCpu(system: System, meter: () => CpuSnapshot, seconds: number): Promise<object> {
  const before = meter();
  const startMs = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  return {
    bench: 'browser',
    system,
    op: 'idle',
    wallSeconds: round3((performance.now() - startMs) / 1000),
    cpuByProcess: cpuByRole(before, meter()),
  };
}

function table(results: readonly RowResult[]): string {
  const header = ['system', 'op', 'c', 'ops/s', 'p50 ms', 'p99 ms', 'server CPU s / wall s'];
  header.push('CPU µs/op', 'client CPU s', 'errors');
  return textTable(
    header,
    results.map((r) => [
      r.system,
      r.op,
      String(r.concurrency),
      String(r.opsPerSecond),
      r.p50Ms.toFixed(2),
      r.p99Ms.toFixed(2),
      `${r.serverCpuSeconds.toFixed(2)} / ${r.wallSeconds.toFixed(1)}`,
      String(r.serverCpuUsPerOp),
      r.clientCpuSeconds.toFixed(2),
      String(r.errors),
    ]),
  );
}

async function main(argv: readonly string[]): Promise<void> {
  const args = parseArgs(argv);
  const rows: RowSpec[] = args.ops.flatMap((op) =>
    args.concurrencies.map((concurrency) => ({ op, concurrency })),
  );
  const version = args.etcd ? etcdVersion() : null;
  const procs = new ProcessSet();
  const dir = mkdtempSync(join(tmpdir(), 'meshkv-bench-browser-'));
  const results: RowResult[] = [];
  const pageErrors: string[] = [];
  let server: PageServer | null = null;
  let browser: Browser | null = null;
  try {
    const token = randomBytes(16).toString('hex');
    const signaling = await startSignaling(
      { dataDir: join(dir, 'signaling'), token, partitions: args.partitions },
      procs.track,
    );
    server = await servePage(PAGE_ENTRY);
    browser = await launchChromium(join(dir, 'chromium'));
    console.log(
      JSON.stringify({
        bench: 'browser',
        date: new Date().toISOString(),
        node: process.version,
        chromium: await browser.version(),
        etcd: version,
        cpus: availableParallelism(),
        cpuModel: cpus()[0]?.model,
        memoryGiB: Math.round(totalmem() / 2 ** 30),
        loadAverage: loadavg().map(round1),
        command: `pnpm bench browser ${argv.join(' ')}`.trim(),
      }),
    );
    const cluster = await startBrowserCluster(
      browser,
      server,
      signaling.url,
      token,
      args,
      pageErrors,
    );
    const browserPid = browser.process()!.pid!;
    const others = new Map([
      [signaling.proc.child.pid!, 'signaling'],
      [process.pid, 'bench'],
    ]);
    const meter = () => cpuSnapshot(browserPid, cluster.pageOfRenderer, others);
    const profilers = args.profile !== null ? await PageProfilers.open(cluster, server) : null;
    console.log(JSON.stringify(await idleCpu('meshkv-browser', meter, args.seconds)));
    for (const row of rows) {
      const result = await runBrowserRow(cluster, row, args, meter, profilers);
      console.log(JSON.stringify(result));
      results.push(result);
    }
    // Stopped before etcd runs: the pages' ticks would take CPU from it.
    await killChromium(browser);
    browser = null;
    await signaling.proc.stop('SIGTERM');
    if (!args.etcd) {
      console.log(JSON.stringify({ bench: 'browser', system: 'etcd', skipped: '--no-etcd' }));
    } else if (version === null) {
      console.log(
        JSON.stringify({
          bench: 'browser',
          system: 'etcd',
          skipped: 'etcd is not installed (Debian: apt-get install etcd-server)',
        }),
      );
    } else {
      await withEtcd(procs, join(dir, 'etcd'), async (endpoints, pids) => {
        // This process is etcd's client.
        const members = new Map<number, string>(pids.map((pid, i) => [pid, `etcd-${i + 1}`]));
        members.set(process.pid, 'client');
        const meter = (): CpuSnapshot =>
          new Map(
            [...members].map(([pid, role]) => [pid, { role, cpuSeconds: cpuSecondsOf(pid) }]),
          );
        console.log(JSON.stringify(await idleCpu('etcd', meter, args.seconds)));
        for (const row of rows) {
          const result = await runEtcdRow(endpoints, meter, row, args);
          console.log(JSON.stringify(result));
          results.push(result);
        }
      });
    }
  } finally {
    if (browser !== null) await killChromium(browser);
    await server?.close();
    await procs.killAll();
    rmSync(dir, { recursive: true, force: true });
  }
  for (const m of results.filter((r) => r.system === 'meshkv-browser')) {
    const e = results.find(
      (r) => r.system === 'etcd' && r.op === m.op && r.concurrency === m.concurrency,
    );
    if (e === undefined) continue;
    console.log(
      JSON.stringify({
        bench: 'browser',
        ratio: `${m.op} c${m.concurrency} meshkv-browser / etcd`,
        opsPerSecond: round3(m.opsPerSecond / e.opsPerSecond),
        p50: round3(m.p50Ms / e.p50Ms),
        p99: round3(m.p99Ms / e.p99Ms),
        serverCpuPerOp: round3(m.serverCpuUsPerOp / e.serverCpuUsPerOp),
      }),
    );
  }
  console.log(JSON.stringify({ bench: 'browser', pageErrors, loadAverage: loadavg().map(round1) }));
  console.log(`\n${table(results)}`);
}

await inNetworkNamespace(HERE, () => main(process.argv.slice(2)));
