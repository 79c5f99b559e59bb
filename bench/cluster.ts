// `pnpm bench cluster [--ops put,get,put1m] [--concurrency 1,16,128] [--seconds S]
// [--warmup S] [--partitions Q] [--profile DIR] [--no-etcd] [--http-floor]`: a real meshkv
// cluster against a real etcd cluster, one workload shape for both. No pass/fail.
//
// meshkv: the signaling server and three `meshkv node` processes (cli.node.ts: durable
// LevelDB, WebRTC over loopback), data in a temporary folder, the default 64 partitions
// at three replicas; measured once every partition has three voters and a leader. etcd (if
// the `etcd` binary is on PATH, e.g. Debian's etcd-server; the bench never installs it):
// three members on 127.0.0.1 with their own data folders and ports, default settings
// (fsync per batch), driven through its HTTP/JSON gateway (POST /v3/kv/put and
// /v3/kv/range, base64 keys and values; a range is linearizable by default).
//
// The client is a separate process (this file with --client): a closed loop keeping N
// requests in flight over node:http with keep-alive Agents (one per endpoint, N sockets),
// the requests spread over the three endpoints in turn; keys cycle over 4096 (100 B rows)
// or 16 (1 MiB rows), every key written before a get row. Rows: puts and linearizable
// gets of 100 B values at each concurrency, and 1 MiB puts at 4 in flight. Each row warms
// up, then measures: ops/s, p50/p99/max latency (wall, performance.now()), the client's
// CPU, and the servers' CPU (utime + stime from /proc/<pid>/stat, read when the client says
// the measurement starts and ends). The WebRTC peers need the private network namespace:
// outside it the bench runs itself again under scripts/netns-run.sh. Every process is
// started by this script and stopped by pid (SIGTERM, then SIGKILL on failure).
//
// --http-floor: the same rows against three bare node:http servers too (bench/lib/http-floor.ts:
// a Map behind the API's PUT and GET, no replication, no disk), the ceiling of any server
// behind node:http under this client on this machine; ratios are printed against it too.
//
// Server CPU is also split by thread (/proc/<pid>/task: the JavaScript thread, libuv's pool
// and V8's threads, libdatachannel's), summed over the members.
//
// --profile DIR: the first meshkv peer runs with `node --cpu-prof` (written to DIR when it
// stops); the bench then prints, for each meshkv row, the top functions by self time and
// the split by package of that row's measured seconds only (not the setup), e.g.
// `--ops put,put1m --concurrency 128 --no-etcd`.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { Agent } from 'node:http';
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  MESHKV_CLI,
  Proc,
  ProcessSet,
  peerStatus,
  ROOT,
  startSignaling,
  waitForHttp,
  waitUntil,
} from '../packages/node/test/support/processes.ts';
import {
  type Call,
  fillKeys,
  keyNames,
  type LoopSpec,
  measureLoop,
  patternValue,
} from './lib/closed-loop.ts';
import {
  cpuSecondsOf,
  etcdCall,
  etcdVersion,
  httpCall,
  statCpuSeconds,
  withEtcd,
} from './lib/etcd.ts';
import { inNetworkNamespace } from './lib/netns.ts';
import { round1, round3, textTable } from './lib/report.ts';
import { parseRowBenchArgs, type RowBenchArgs } from './lib/row-args.ts';

const HERE = fileURLToPath(import.meta.url);
const HTTP_FLOOR = fileURLToPath(new URL('./lib/http-floor.ts', import.meta.url));
const PEERS = 3;
const SMALL_VALUE_BYTES = 100;
const BIG_VALUE_BYTES = 1024 * 1024;
const SMALL_KEYS = 4096;
const BIG_KEYS = 16;
const BIG_CONCURRENCY = 4;
/** Keys written at once while filling before a get row. */
const FILL_CONCURRENCY = 64;
/** Setting up (placement of every partition, etcd health) must finish within this. */
const SETUP_DEADLINE_MS = 600_000;
/** One request's bound: past it the request counts as an error. */
const REQUEST_TIMEOUT_MS = 30_000;

type System = 'meshkv' | 'etcd' | 'http-floor';
type OpName = 'put' | 'get' | 'put1m';

interface ClientSpec {
  readonly system: System;
  readonly endpoints: readonly string[];
  readonly op: 'put' | 'get';
  readonly valueBytes: number;
  readonly keys: number;
  readonly concurrency: number;
  readonly warmupSeconds: number;
  readonly seconds: number;
  /** Write every key first (untimed): get rows read existing values. */
  readonly fill: boolean;
}

interface ClientResult {
  readonly ops: number;
  readonly errors: number;
  readonly firstError: string | null;
  readonly wallSeconds: number;
  readonly clientCpuSeconds: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

// ---- The client process ----------------------------------------------------------------

function calls(spec: ClientSpec, op: 'put' | 'get'): Call {
  // The same bytes in every client process: a get row checks what its fill wrote.
  const value = patternValue(spec.valueBytes);
  const names = keyNames(spec.keys);
  const sockets = Math.max(spec.concurrency, FILL_CONCURRENCY);
  if (spec.system === 'etcd') {
    return etcdCall({
      endpoints: spec.endpoints,
      op,
      value,
      keyNames: names,
      sockets,
      timeoutMs: REQUEST_TIMEOUT_MS,
    });
  }
  const urls = spec.endpoints.map((e) => new URL(e));
  const agents = urls.map(() => new Agent({ keepAlive: true, maxSockets: sockets }));
  const body = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  // The deadline of etcd's gateway requests (none but the client's): meshkv's default is 5 s.
  const paths = names.map((k) => `/kv/${k}?timeout=${REQUEST_TIMEOUT_MS}`);
  if (op === 'put') {
    const ok = (status: number) => status === 200;
    return (endpoint, key) =>
      httpCall(
        agents[endpoint]!,
        urls[endpoint]!,
        'PUT',
        paths[key]!,
        body,
        ok,
        REQUEST_TIMEOUT_MS,
      );
  }
  const ok = (status: number, got: Buffer) => status === 200 && got.length === spec.valueBytes;
  return (endpoint, key) =>
    httpCall(agents[endpoint]!, urls[endpoint]!, 'GET', paths[key]!, null, ok, REQUEST_TIMEOUT_MS);
}

async function runClient(spec: ClientSpec): Promise<void> {
  const loopSpec: LoopSpec = {
    endpoints: spec.endpoints.length,
    keys: spec.keys,
    concurrency: spec.concurrency,
    warmupMs: spec.warmupSeconds * 1000,
    measureMs: spec.seconds * 1000,
  };
  if (spec.fill) await fillKeys(calls(spec, 'put'), loopSpec, FILL_CONCURRENCY);
  let cpuAtMeasure = process.cpuUsage();
  const loop = await measureLoop(calls(spec, spec.op), loopSpec, {
    measure: () => {
      cpuAtMeasure = process.cpuUsage();
      process.stdout.write(`${JSON.stringify({ phase: 'measure' })}\n`);
    },
    done: () => process.stdout.write(`${JSON.stringify({ phase: 'done' })}\n`),
  });
  const cpu = process.cpuUsage(cpuAtMeasure);
  const result: ClientResult = { ...loop, clientCpuSeconds: (cpu.user + cpu.system) / 1e6 };
  process.stdout.write(`${JSON.stringify({ result })}\n`);
}

// ---- The orchestrator ------------------------------------------------------------------

/** `--profile DIR` is `profile`: the peers write their CPU profiles there. */
type Args = RowBenchArgs<OpName>;

function parseArgs(argv: readonly string[]): Args {
  return parseRowBenchArgs<OpName>(argv, {
    name: 'cluster',
    httpFloor: true,
    ops: ['put', 'get', 'put1m'],
    defaultConcurrencies: [1, 16, 128],
    profile: 'folder',
  });
}

interface RowSpec {
  readonly op: OpName;
  readonly concurrency: number;
}

function rowsOf(args: Args): RowSpec[] {
  const rows: RowSpec[] = [];
  for (const op of args.ops) {
    if (op === 'put1m') rows.push({ op, concurrency: BIG_CONCURRENCY });
    else for (const concurrency of args.concurrencies) rows.push({ op, concurrency });
  }
  return rows;
}

interface RowResult extends ClientResult {
  readonly bench: 'cluster';
  readonly system: System;
  readonly op: OpName;
  readonly concurrency: number;
  readonly opsPerSecond: number;
  /** CPU seconds of the server processes (all members) over the measured wall seconds. */
  readonly serverCpuSeconds: number;
  readonly serverCpuSecondsPerMember: readonly number[];
  /** Server CPU per operation, in microseconds. */
  readonly serverCpuUsPerOp: number;
  /**
   * The same CPU seconds (all members) by thread: `main` is the JavaScript thread, the
   * others go by the kernel's thread name (`node`: libuv's pool, where LevelDB writes and
   * fsyncs, and V8's platform threads; `RTC worker`, `SCTP timer`, `juice poll`:
   * libdatachannel's).
   */
  readonly serverCpuSecondsByThread: Readonly<Record<string, number>>;
  readonly loadAverage1m: number;
  /** meshkv: the peers' storage batches over the measured seconds (their /metrics). */
  readonly batches?: BatchFigures;
  /** The measured window on CLOCK_MONOTONIC in µs (V8 profiles use the same clock). */
  readonly windowUs: readonly [number, number];
}

interface BatchCounts {
  readonly batches: number;
  readonly seconds: number;
  readonly entries: number;
  readonly groups: number;
}

interface BatchFigures {
  /** Batches per second, all peers together. */
  readonly perSecond: number;
  readonly entriesPerBatch: number;
  readonly groupsPerBatch: number;
  readonly meanMs: number;
}

/** The storage batch histograms of every peer's /metrics, summed. */
async function batchCounts(urls: readonly string[]): Promise<BatchCounts> {
  let batches = 0;
  let seconds = 0;
  let entries = 0;
  let groups = 0;
  for (const url of urls) {
    const text = await (await fetch(`${url}/metrics`)).text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    batches += value('meshkv_storage_batch_duration_seconds_count');
    seconds += value('meshkv_storage_batch_duration_seconds_sum');
    entries += value('meshkv_storage_batch_entries_sum');
    groups += value('meshkv_storage_batch_groups_sum');
  }
  return { batches, seconds, entries, groups };
}

function batchFigures(before: BatchCounts, after: BatchCounts, wallSeconds: number): BatchFigures {
  const batches = after.batches - before.batches;
  return {
    perSecond: Math.round(batches / wallSeconds),
    entriesPerBatch: round1((after.entries - before.entries) / batches),
    groupsPerBatch: round1((after.groups - before.groups) / batches),
    meanMs: round3((1000 * (after.seconds - before.seconds)) / batches),
  };
}

function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** CPU seconds of every live thread of `pids`, by `pid/tid` with its thread name. */
function threadCpuOf(pids: readonly number[]): Map<string, { name: string; seconds: number }> {
  const threads = new Map<string, { name: string; seconds: number }>();
  for (const pid of pids) {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const dir = `/proc/${pid}/task/${tid}`;
      try {
        const name = tid === String(pid) ? 'main' : readFileSync(`${dir}/comm`, 'utf8').trim();
        threads.set(`${pid}/${tid}`, { name, seconds: statCpuSeconds(`${dir}/stat`) });
      } catch {
        // The thread ended between the listing and the read: its CPU is in no row.
      }
    }
  }
  return threads;
}

/** CPU seconds spent between two `threadCpuOf` readings, summed by thread name. */
function threadCpuSpent(
  before: ReadonlyMap<string, { name: string; seconds: number }>,
  after: ReadonlyMap<string, { name: string; seconds: number }>,
): Record<string, number> {
  const byName: Record<string, number> = {};
  for (const [id, { name, seconds }] of after) {
    byName[name] = (byName[name] ?? 0) + seconds - (before.get(id)?.seconds ?? 0);
  }
  for (const name of Object.keys(byName)) byName[name] = round3(byName[name]!);
  return byName;
}

function spawnClient(spec: ClientSpec): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', HERE, '--client', JSON.stringify(spec)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

/** Runs one row in a client process, reading the servers' CPU at its measure/done marks. */
async function runRow(
  system: System,
  row: RowSpec,
  endpoints: readonly string[],
  serverPids: readonly number[],
  args: Args,
): Promise<RowResult> {
  const big = row.op === 'put1m';
  const spec: ClientSpec = {
    system,
    endpoints,
    op: row.op === 'get' ? 'get' : 'put',
    valueBytes: big ? BIG_VALUE_BYTES : SMALL_VALUE_BYTES,
    keys: big ? BIG_KEYS : SMALL_KEYS,
    concurrency: row.concurrency,
    warmupSeconds: args.warmupSeconds,
    seconds: args.seconds,
    fill: row.op === 'get',
  };
  const child = spawnClient(spec);
  let cpuAtMeasure: number[] = [];
  let cpuAtDone: number[] = [];
  let threadsAtMeasure = new Map<string, { name: string; seconds: number }>();
  let threadsAtDone = threadsAtMeasure;
  let result: ClientResult | null = null;
  const metered = system === 'meshkv';
  let batchesAtMeasure: BatchCounts | null = null;
  const windowUs: [number, number] = [0, 0];
  let batchesAtDone: BatchCounts | null = null;
  const lines = createInterface({ input: child.stdout! });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  for await (const line of lines) {
    const message = JSON.parse(line) as { phase?: string; result?: ClientResult };
    if (message.phase === 'measure') {
      cpuAtMeasure = serverPids.map(cpuSecondsOf);
      threadsAtMeasure = threadCpuOf(serverPids);
      windowUs[0] = monotonicUs();
      if (metered) batchesAtMeasure = await batchCounts(endpoints);
    }
    if (message.phase === 'done') {
      cpuAtDone = serverPids.map(cpuSecondsOf);
      threadsAtDone = threadCpuOf(serverPids);
      windowUs[1] = monotonicUs();
      if (metered) batchesAtDone = await batchCounts(endpoints);
    }
    if (message.result !== undefined) result = message.result;
  }
  const code = await exited;
  if (result === null || code !== 0) throw new Error(`the ${system} client exited ${code}`);
  const perMember = cpuAtDone.map((done, i) => round3(done - (cpuAtMeasure[i] ?? done)));
  const serverCpuSeconds = round3(perMember.reduce((a, b) => a + b, 0));
  return {
    bench: 'cluster',
    system,
    op: row.op,
    concurrency: row.concurrency,
    ...result,
    wallSeconds: round3(result.wallSeconds),
    clientCpuSeconds: round3(result.clientCpuSeconds),
    p50Ms: round3(result.p50Ms),
    p99Ms: round3(result.p99Ms),
    maxMs: round3(result.maxMs),
    opsPerSecond: Math.round(result.ops / result.wallSeconds),
    serverCpuSeconds,
    serverCpuSecondsPerMember: perMember,
    serverCpuUsPerOp: result.ops === 0 ? NaN : Math.round((serverCpuSeconds * 1e6) / result.ops),
    serverCpuSecondsByThread: threadCpuSpent(threadsAtMeasure, threadsAtDone),
    loadAverage1m: round1(loadavg()[0]!),
    windowUs,
    ...(batchesAtMeasure !== null && batchesAtDone !== null
      ? { batches: batchFigures(batchesAtMeasure, batchesAtDone, result.wallSeconds) }
      : {}),
  };
}

/** The servers' CPU over `seconds` with no client: what the load rows' CPU includes anyway. */
async function idleCpu(system: System, pids: readonly number[], seconds: number): Promise<object> {
  const before = pids.map(cpuSecondsOf);
  const startMs = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const wallSeconds = (performance.now() - startMs) / 1000;
  const perMember = pids.map((pid, i) => round3(cpuSecondsOf(pid) - before[i]!));
  return {
    bench: 'cluster',
    system,
    op: 'idle',
    wallSeconds: round3(wallSeconds),
    serverCpuSeconds: round3(perMember.reduce((a, b) => a + b, 0)),
    serverCpuSecondsPerMember: perMember,
  };
}

/** The cluster's partitions all have three voters and a leader, seen from every peer. */
async function placed(urls: readonly string[], partitions: number): Promise<true | undefined> {
  for (const url of urls) {
    const status = await peerStatus(url);
    if (status.groups.length !== partitions) return undefined;
    if (!status.groups.every((g) => g.voters.length === PEERS && g.leader !== null)) {
      return undefined;
    }
  }
  return true;
}

async function withMeshkv(
  args: Args,
  procs: ProcessSet,
  dir: string,
  run: (endpoints: readonly string[], pids: readonly number[]) => Promise<void>,
): Promise<void> {
  const token = randomBytes(16).toString('hex');
  const partitions = args.partitions;
  const signaling = await startSignaling(
    { dataDir: join(dir, 'signaling'), token, partitions },
    procs.track,
  );
  const peers: Proc[] = [];
  for (let i = 0; i < PEERS; i++) {
    // Not spawnPeer: the profiled peer needs node flags (NODE_OPTIONS refuses --cpu-prof).
    const nodeFlags =
      i === 0 && args.profile !== null ? ['--cpu-prof', `--cpu-prof-dir=${args.profile}`] : [];
    const cli = [MESHKV_CLI, 'node', '--signaling', signaling.url, '--token', token];
    cli.push('--data', join(dir, `peer-${i + 1}`), '--http', '127.0.0.1:0');
    const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', ...cli], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    peers.push(procs.track(new Proc(child, `peer-${i + 1}`)));
  }
  const urls = await Promise.all(peers.map(waitForHttp));
  const setupStartMs = performance.now();
  await waitUntil(
    () => placed(urls, partitions),
    `every partition placed on ${PEERS} voters with a leader`,
    () => procs.state(),
    SETUP_DEADLINE_MS,
  );
  console.log(
    JSON.stringify({
      bench: 'cluster',
      system: 'meshkv',
      setup: 'placed',
      partitions,
      setupSeconds: round1((performance.now() - setupStartMs) / 1000),
      pids: peers.map((p) => p.child.pid),
    }),
  );
  await run(
    urls,
    peers.map((p) => p.child.pid!),
  );
  // SIGTERM: a clean stop (the profile is written at exit).
  for (const peer of peers) {
    const code = await peer.stop('SIGTERM');
    if (code !== 0) throw new Error(`${peer.name} exited ${code}: ${peer.stderr.slice(-2000)}`);
  }
  await signaling.proc.stop('SIGTERM');
}

/** Three bare node:http servers (bench/lib/http-floor.ts), stopped by pid after `run`. */
async function withHttpFloor(
  procs: ProcessSet,
  run: (endpoints: readonly string[], pids: readonly number[]) => Promise<void>,
): Promise<void> {
  const servers: Proc[] = [];
  for (let i = 0; i < PEERS; i++) {
    servers.push(procs.track(Proc.spawn(HTTP_FLOOR, [], { name: `http-floor-${i + 1}` })));
  }
  const urls = await Promise.all(servers.map(waitForHttp));
  await run(
    urls,
    servers.map((s) => s.child.pid!),
  );
  for (const server of servers) await server.stop('SIGTERM');
}

/**
 * Top functions by self time, and self time by package, of the main thread's profile in `dir`,
 * counting only the samples inside `windows` (a measured row: not the setup), printed under
 * `row`. Shares are of the busy time: (idle) is reported apart.
 */
function summarizeProfile(
  dir: string,
  row: string,
  windows: readonly (readonly [number, number])[],
): void {
  // tsx's loader thread writes a profile of its own (nearly all idle): the main thread's is
  // the largest.
  const file = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => ({ f, bytes: statSync(join(dir, f)).size }))
    .sort((a, b) => b.bytes - a.bytes)[0]?.f;
  if (file === undefined) {
    console.log(JSON.stringify({ bench: 'cluster', profile: null, dir }));
    return;
  }
  interface ProfileNode {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
  }
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as {
    nodes: ProfileNode[];
    startTime: number;
    samples: number[];
    timeDeltas: number[];
  };
  const inWindow = (us: number) => windows.some(([from, to]) => us >= from && us <= to);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  let atUs = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const deltaUs = profile.timeDeltas[i] ?? 0;
    atUs += deltaUs;
    if (!inWindow(atUs)) continue;
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + deltaUs);
  }
  const byFunction = new Map<string, number>();
  const byPackage = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    totalUs += us;
    const where = frame.url.replace(`file://${ROOT}`, '');
    const name = `${frame.functionName || '(anonymous)'} ${where}:${frame.lineNumber + 1}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + us);
    const pkg =
      /node_modules\/(?:\.pnpm\/)?(@[^/]+\/[^/@]+|[^/@]+)/.exec(where)?.[1] ??
      /^\/?(packages\/[^/]+|signaling)/.exec(where)?.[1] ??
      (where.startsWith('node:') ? 'node:internal' : where === '' ? frame.functionName : where);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us);
  }
  const top = (map: Map<string, number>, n: number) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([what, us]) => ({
        what,
        selfMs: Math.round(us / 1000),
        pct: round1((100 * us) / totalUs),
      }));
  console.log(
    JSON.stringify({
      bench: 'cluster',
      profile: join(dir, file),
      row,
      busyMs: Math.round(totalUs / 1000),
      idleMs: Math.round(idleUs / 1000),
    }),
  );
  for (const entry of top(byPackage, 15))
    console.log(JSON.stringify({ row, profilePackage: entry }));
  for (const entry of top(byFunction, 30))
    console.log(JSON.stringify({ row, profileFunction: entry }));
}

function table(results: readonly RowResult[]): string {
  const header = [
    'system',
    'op',
    'c',
    'ops/s',
    'p50 ms',
    'p99 ms',
    'max ms',
    'server CPU s',
    'CPU µs/op',
    'client CPU s',
    'errors',
  ];
  const lines = results.map((r) => [
    r.system,
    r.op,
    String(r.concurrency),
    String(r.opsPerSecond),
    r.p50Ms.toFixed(2),
    r.p99Ms.toFixed(2),
    r.maxMs.toFixed(1),
    `${r.serverCpuSeconds.toFixed(2)} / ${r.wallSeconds.toFixed(1)}`,
    String(r.serverCpuUsPerOp),
    r.clientCpuSeconds.toFixed(2),
    String(r.errors),
  ]);
  return textTable(header, lines);
}

async function main(argv: readonly string[]): Promise<void> {
  const args = parseArgs(argv);
  const rows = rowsOf(args);
  const version = args.etcd ? etcdVersion() : null;
  console.log(
    JSON.stringify({
      bench: 'cluster',
      date: new Date().toISOString(),
      node: process.version,
      cpus: availableParallelism(),
      cpuModel: cpus()[0]?.model,
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      loadAverage: loadavg().map(round1),
      command: `pnpm bench cluster ${argv.join(' ')}`.trim(),
      etcd: version,
    }),
  );
  const procs = new ProcessSet();
  const dir = mkdtempSync(join(tmpdir(), 'meshkv-bench-cluster-'));
  const results: RowResult[] = [];
  const runRows =
    (system: System) => async (endpoints: readonly string[], pids: readonly number[]) => {
      console.log(JSON.stringify(await idleCpu(system, pids, args.seconds)));
      for (const row of rows) {
        const result = await runRow(system, row, endpoints, pids, args);
        console.log(JSON.stringify(result));
        results.push(result);
      }
    };
  try {
    await withMeshkv(args, procs, join(dir, 'meshkv'), runRows('meshkv'));
    if (!args.etcd) {
      console.log(JSON.stringify({ bench: 'cluster', system: 'etcd', skipped: '--no-etcd' }));
    } else if (version === null) {
      console.log(
        JSON.stringify({
          bench: 'cluster',
          system: 'etcd',
          skipped:
            'etcd is not installed (Debian: apt-get install etcd-server); meshkv figures only',
        }),
      );
    } else {
      await withEtcd(procs, join(dir, 'etcd'), runRows('etcd'));
    }
    if (args.httpFloor) await withHttpFloor(procs, runRows('http-floor'));
  } finally {
    await procs.killAll();
    rmSync(dir, { recursive: true, force: true });
  }
  for (const m of results.filter((r) => r.system === 'meshkv')) {
    for (const other of ['etcd', 'http-floor'] as const) {
      const e = results.find(
        (r) => r.system === other && r.op === m.op && r.concurrency === m.concurrency,
      );
      if (e === undefined) continue;
      console.log(
        JSON.stringify({
          bench: 'cluster',
          ratio: `${m.op} c${m.concurrency}`,
          against: other,
          opsPerSecond: round3(m.opsPerSecond / e.opsPerSecond),
          p50: round3(m.p50Ms / e.p50Ms),
          p99: round3(m.p99Ms / e.p99Ms),
          serverCpuPerOp: round3(m.serverCpuUsPerOp / e.serverCpuUsPerOp),
        }),
      );
    }
  }
  if (args.profile !== null) {
    // One summary per measured row: a run of several rows profiles each load apart.
    for (const r of results) {
      if (r.system === 'meshkv')
        summarizeProfile(args.profile, `${r.op} c${r.concurrency}`, [r.windowUs]);
    }
  }
  console.log(JSON.stringify({ bench: 'cluster', loadAverage: loadavg().map(round1) }));
  console.log(`\n${table(results)}`);
}

const clientAt = process.argv.indexOf('--client');
if (clientAt >= 0) {
  await runClient(JSON.parse(process.argv[clientAt + 1]!) as ClientSpec);
  process.exit(0);
} else {
  // WebRTC peers stay in a private network namespace.
  await inNetworkNamespace(HERE, () => main(process.argv.slice(2)));
}
