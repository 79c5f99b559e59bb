// `pnpm bench node [put|get] [concurrency…] [--seconds S] [--turn-ms T] [--profile FILE]
// [--heap-profile FILE]`: three
// MeshNodes in this one process over an in-memory transport and MemoryDisk storage
// ('auto' sync), so the figures are the host's CPU, not a disk or a network. 64
// partitions, three voters each. Puts and linearizable gets of 100 B values, closed loop:
// N requests in flight at all times, issued from the three nodes in turn (a request to a
// node that does not lead the partition is forwarded, as in production). Prints one JSON
// line per row, the idle cluster's frames per second, then a table. No pass/fail.
//
// Transport: a direct in-memory one written here (DirectNetwork), not SimNetwork. Frames
// wait in one FIFO queue and the pump delivers everything queued, then yields one
// macrotask (setImmediate) so that every node's loop runs its rounds (MemoryDisk writes
// resolve in microtasks) before the next delivery. So a hop costs one event-loop turn and
// nothing else: no delay draws, no packet heap, no frame copy (FrameBuilder hands out a
// fresh array per frame; the receiver owns it), and the batches grow only by the node's
// own pipelining. SimNetwork in virtual time would add its per-packet work (five PRNG
// draws, a heap, a copy) to the figures, and its virtual latencies count hops rather than
// measure the host. Latencies here are wall time (performance.now()).
//
// Time: the nodes' clock is the bench's `clockMs`. Setting up (bootstrap on a, growth to
// three voters by rebalancing) and the idle measurement run in virtual time: the clock
// moves one tick (tickMs, default 100 ms) whenever nothing is left to deliver, so they
// take CPU time only. The load rows tick by wall time, or with `--turn-ms T` by T ms per
// pump turn (the same work per operation however much CPU the process gets: builds
// compare on a loaded machine). `--profile` writes a CPU profile of the first row's
// measured seconds, `--heap-profile` sampled allocations over them (no idle row then).
//
// Storage batches are counted by a NodeStorage wrapper (CountingStorage): entries and
// groups per write(); frames per peer per batch are status().framesSent over
// status().batchesWritten (frames also leave in rounds that write nothing: read-only
// rounds, heartbeat responses).

import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { availableParallelism, loadavg } from 'node:os';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { type GroupId, mulberry32, type NodeId } from '@meshkv/raft';
import { isMeshKvError, MeshNode, meshNodeDefaults } from '../packages/node/src/index.ts';
import {
  MemoryDisk,
  type NodeState,
  type NodeStorage,
  type SnapshotChunkOptions,
  type SnapshotRestore,
  type WriteBatch,
} from '../packages/storage/src/index.ts';
import type { RegistrySnapshot } from '../packages/transport/src/signaling-protocol.ts';
import {
  checkFrameBytes,
  DEFAULT_MAX_FRAME_BYTES,
  type LinkStats,
  type PeerId,
  type Transport,
  type TransportHandlers,
} from '../packages/transport/src/transport.ts';

const NODE_IDS: readonly NodeId[] = ['a', 'b', 'c'];
const PARTITIONS = 64;
const VALUE_BYTES = 100;
/** Keys the puts cycle through; every one is written before the first get row. */
const KEY_COUNT = 4096;
const CONCURRENCIES = [1, 16, 128, 1024];
const IDLE_SETTLE_MS = 2_000;
const IDLE_MEASURE_MS = 10_000;
/** Setting up must converge within this much virtual time. */
const SETUP_MAX_MS = 600_000;
/** Pump turns a drain may take before it is a bug (a livelock), not slowness. */
const MAX_TURNS_PER_DRAIN = 1_000_000;
const TICK_MS = meshNodeDefaults.tickMs;

interface Args {
  readonly ops: readonly ('put' | 'get')[];
  readonly concurrencies: readonly number[];
  readonly seconds: number;
  readonly warmupSeconds: number;
  readonly profileFile: string | null;
  readonly heapProfileFile: string | null;
  /** Null: the load rows' clock follows wall time; else it moves this much per pump turn. */
  readonly turnMs: number | null;
}

function parseArgs(argv: readonly string[]): Args {
  const ops: ('put' | 'get')[] = [];
  const concurrencies: number[] = [];
  let seconds = 4;
  let profileFile: string | null = null;
  let heapProfileFile: string | null = null;
  let turnMs: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === 'put' || arg === 'get') ops.push(arg);
    else if (arg === '--seconds') seconds = Number(argv[++i]);
    else if (arg === '--profile') profileFile = argv[++i] ?? null;
    else if (arg === '--heap-profile') heapProfileFile = argv[++i] ?? null;
    else if (arg === '--turn-ms') turnMs = Number(argv[++i]);
    else if (/^\d+$/.test(arg)) concurrencies.push(Number(arg));
    else usage(`unknown argument ${arg}`);
  }
  if (!(seconds > 0 && seconds <= 600)) usage('--seconds must be in (0, 600]');
  for (const c of concurrencies) if (c < 1 || c > 10_000) usage('concurrency in [1, 10000]');
  if (profileFile === '') usage('--profile needs a file name');
  if (heapProfileFile === '') usage('--heap-profile needs a file name');
  if (turnMs !== null && !(turnMs > 0 && turnMs <= 1000)) usage('--turn-ms must be in (0, 1000]');
  return {
    ops: ops.length > 0 ? ops : ['put', 'get'],
    concurrencies: concurrencies.length > 0 ? concurrencies : CONCURRENCIES,
    seconds,
    warmupSeconds: Math.min(1, seconds / 4),
    profileFile,
    heapProfileFile,
    turnMs,
  };
}

function usage(why: string): never {
  console.error(
    `${why}\nusage: pnpm bench node [put|get] [concurrency…] [--seconds S] [--turn-ms T] [--profile FILE] [--heap-profile FILE]`,
  );
  process.exit(2);
}

// ---- The in-memory transport ----------------------------------------------------------

/** Every link of the bench's nodes: one FIFO queue of frames, delivered by `deliverAll`. */
class DirectNetwork {
  readonly transports = new Map<PeerId, DirectTransport>();
  private from: PeerId[] = [];
  private to: PeerId[] = [];
  private frames: Uint8Array[] = [];

  get queued(): number {
    return this.frames.length;
  }

  enqueue(from: PeerId, to: PeerId, frame: Uint8Array): void {
    this.from.push(from);
    this.to.push(to);
    this.frames.push(frame);
  }

  /** Delivers what is queued now (frames sent meanwhile wait for the next call). */
  deliverAll(): number {
    const { from, to, frames } = this;
    this.from = [];
    this.to = [];
    this.frames = [];
    for (let i = 0; i < frames.length; i++) {
      this.transports.get(to[i]!)?.receive(from[i]!, frames[i]!);
    }
    return frames.length;
  }
}

class LinkCounters implements LinkStats {
  framesSent = 0;
  framesReceived = 0;
  bytesSent = 0;
  bytesReceived = 0;
  framesDropped = 0;
  malformedReceived = 0;
}

/** The Transport contract over a DirectNetwork: every peer is up, nothing is lost. */
class DirectTransport implements Transport {
  readonly localId: PeerId;
  readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
  private readonly network: DirectNetwork;
  private readonly others: readonly PeerId[];
  private readonly links = new Map<PeerId, LinkCounters>();
  private readonly frameHandlers = new Set<TransportHandlers['frame']>();
  private closed = false;

  constructor(network: DirectNetwork, localId: PeerId, all: readonly PeerId[]) {
    this.network = network;
    this.localId = localId;
    this.others = all.filter((id) => id !== localId);
    for (const peer of this.others) this.links.set(peer, new LinkCounters());
    network.transports.set(localId, this);
  }

  send(to: PeerId, frame: Uint8Array): void {
    checkFrameBytes(frame, this.maxFrameBytes);
    const link = this.links.get(to);
    if (link === undefined) return;
    if (this.closed) {
      link.framesDropped++;
      return;
    }
    link.framesSent++;
    link.bytesSent += frame.byteLength;
    this.network.enqueue(this.localId, to, frame);
  }

  receive(from: PeerId, frame: Uint8Array): void {
    const link = this.links.get(from);
    if (this.closed || link === undefined) return;
    link.framesReceived++;
    link.bytesReceived += frame.byteLength;
    for (const handler of this.frameHandlers) handler(from, frame);
  }

  on<E extends keyof TransportHandlers>(event: E, handler: TransportHandlers[E]): () => void {
    // Links never go up or down here: only frame handlers are ever called.
    if (event !== 'frame') return () => {};
    const frame = handler as TransportHandlers['frame'];
    this.frameHandlers.add(frame);
    return () => this.frameHandlers.delete(frame);
  }

  peers(): readonly PeerId[] {
    return this.closed ? [] : this.others;
  }

  stats(peer: PeerId): LinkStats {
    return this.links.get(peer) ?? new LinkCounters();
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

// ---- Storage counters -----------------------------------------------------------------

/** A NodeStorage that counts what each write() carries, passing everything through. */
class CountingStorage implements NodeStorage {
  batches = 0;
  groupsWritten = 0;
  entriesWritten = 0;

  constructor(private readonly inner: NodeStorage) {}

  get name(): string {
    return this.inner.name;
  }

  load(): Promise<NodeState> {
    return this.inner.load();
  }

  write(batch: WriteBatch): Promise<void> {
    this.batches++;
    this.groupsWritten += batch.groups.length;
    for (const part of batch.groups) this.entriesWritten += part.entries?.length ?? 0;
    return this.inner.write(batch);
  }

  get(group: GroupId, key: string): Promise<Uint8Array | null> {
    return this.inner.get(group, key);
  }

  snapshotChunks(group: GroupId, options?: SnapshotChunkOptions): AsyncIterable<Uint8Array> {
    return this.inner.snapshotChunks(group, options);
  }

  beginRestore(group: GroupId): Promise<SnapshotRestore> {
    return this.inner.beginRestore(group);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

// ---- The cluster ----------------------------------------------------------------------

interface BenchNode {
  readonly id: NodeId;
  readonly node: MeshNode;
  readonly storage: CountingStorage;
  readonly transport: DirectTransport;
}

class BenchCluster {
  readonly network = new DirectNetwork();
  readonly nodes: BenchNode[] = [];
  clockMs = 0;
  private nextTickMs = TICK_MS;

  static async start(): Promise<BenchCluster> {
    const cluster = new BenchCluster();
    const registry: RegistrySnapshot = {
      settings: {
        clusterId: 'bench',
        partitions: PARTITIONS,
        replicationFactor: 3,
        tokensPerNode: 128,
      },
      epoch: NODE_IDS.length,
      members: NODE_IDS.map((nodeId, i) => ({
        nodeId,
        kind: 'node' as const,
        state: 'up' as const,
        joinedAtEpoch: i + 1,
        changedAtEpoch: i + 1,
      })),
    };
    const transports = NODE_IDS.map((id) => new DirectTransport(cluster.network, id, NODE_IDS));
    for (let i = 0; i < NODE_IDS.length; i++) {
      const id = NODE_IDS[i]!;
      const storage = new CountingStorage(await new MemoryDisk({ name: id, sync: 'auto' }).open());
      const transport = transports[i]!;
      const node = await MeshNode.start({
        nodeId: id,
        storage,
        transport,
        registry,
        // Every member is new; only a, the first to join, bootstraps the partitions.
        newIdentity: true,
        random: mulberry32(1000 + i),
        nowMs: cluster.clockMs,
      });
      cluster.nodes.push({ id, node, storage, transport });
    }
    return cluster;
  }

  /** Ticks every node if a tick is due at `clockMs`. */
  private tickIfDue(): void {
    if (this.clockMs < this.nextTickMs) return;
    for (const n of this.nodes) n.node.tick(this.clockMs);
    this.nextTickMs = this.clockMs + TICK_MS;
  }

  /** One pump turn: deliver what is queued, tick if due, let the nodes' rounds run. */
  async turn(): Promise<number> {
    const delivered = this.network.deliverAll();
    this.tickIfDue();
    await nextTurn();
    return delivered;
  }

  /** Virtual time: turns until `condition`, the clock moving a tick whenever all is quiet. */
  async runVirtual(condition: () => boolean, maxMs: number, what: string): Promise<void> {
    const untilMs = this.clockMs + maxMs;
    while (!condition()) {
      if (this.clockMs >= untilMs)
        throw new Error(`${what}: not within ${maxMs} ms of virtual time`);
      await this.drain();
      this.clockMs = this.nextTickMs;
      await this.turn();
    }
  }

  /** Virtual time: `ms` of it pass, a tick at a time. */
  runVirtualFor(ms: number): Promise<void> {
    const untilMs = this.clockMs + ms;
    return this.runVirtual(() => this.clockMs >= untilMs, ms, `${ms} ms of virtual time`);
  }

  /** Turns until nothing is queued and no node's loop is busy. */
  async drain(): Promise<void> {
    for (let turns = 0; turns < MAX_TURNS_PER_DRAIN; turns++) {
      if (this.network.queued === 0 && !this.nodes.some((n) => n.node.busy)) return;
      await this.turn();
    }
    throw new Error(`the cluster stayed busy for ${MAX_TURNS_PER_DRAIN} turns`);
  }

  /** Every node has every partition with voters a, b, c, initialized, and a leader known. */
  inPlace(): boolean {
    return this.nodes.every((n) => {
      const groups = n.node.status().groups;
      return (
        groups.length === PARTITIONS &&
        groups.every(
          (g) =>
            g.initialized &&
            g.leader !== null &&
            g.voters.length === 3 &&
            g.learners.length === 0 &&
            g.votersOutgoing.length === 0,
        )
      );
    });
  }

  leadersPerNode(): Record<NodeId, number> {
    const out: Record<NodeId, number> = {};
    for (const n of this.nodes) {
      out[n.id] = n.node.status().groups.filter((g) => g.role === 'leader').length;
    }
    return out;
  }

  async close(): Promise<void> {
    for (const n of this.nodes) await n.node.close();
    for (const n of this.nodes) {
      await n.transport.close();
      await n.storage.close();
    }
  }
}

// ---- The load -------------------------------------------------------------------------

interface Counters {
  readonly batches: number;
  readonly groups: number;
  readonly entries: number;
  readonly frames: number;
  readonly statusBatches: number;
}

function counters(cluster: BenchCluster): Counters {
  let batches = 0;
  let groups = 0;
  let entries = 0;
  let frames = 0;
  let statusBatches = 0;
  for (const n of cluster.nodes) {
    batches += n.storage.batches;
    groups += n.storage.groupsWritten;
    entries += n.storage.entriesWritten;
    const status = n.node.status();
    frames += status.framesSent;
    statusBatches += status.batchesWritten;
  }
  return { batches, groups, entries, frames, statusBatches };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

const round1 = (x: number) => Math.round(x * 10) / 10;
const round3 = (x: number) => Math.round(x * 1000) / 1000;

interface Row {
  readonly op: 'put' | 'get';
  readonly concurrency: number;
  readonly ops: number;
  readonly seconds: number;
  readonly cpuSeconds: number;
  readonly opsPerSec: number;
  readonly opsPerCpuSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly batches: number;
  /** Null when the row wrote no batch (reads only). */
  readonly entriesPerBatch: number | null;
  readonly groupsPerBatch: number | null;
  readonly framesPerPeerPerBatch: number | null;
  readonly framesPerPeerPerOp: number;
  /** Groups written by the batches (all nodes) per request: how well writes coalesce. */
  readonly groupWritesPerOp: number;
  readonly errors: Record<string, number>;
  readonly getsFound?: number;
}

/** What the requests read and write: the keys, one value, and how far the puts got. */
interface Workload {
  readonly keys: readonly string[];
  readonly value: Uint8Array;
  /** Puts issued so far (they cycle through the keys). */
  putsIssued: number;
}

/**
 * `concurrency` requests in flight, issued from the nodes in turn: each completion issues
 * the next, until `stop()` or `limit` requests were issued. Latencies are recorded only
 * while `measuring`.
 */
class ClosedLoop {
  inFlight = 0;
  measuring = false;
  ops = 0;
  found = 0;
  readonly errors: Record<string, number> = {};
  private latencies = new Float64Array(1 << 16);
  private issued = 0;
  private stopped = false;

  constructor(
    private readonly nodes: readonly MeshNode[],
    private readonly request: (node: MeshNode, i: number) => Promise<unknown>,
    private readonly limit = Number.POSITIVE_INFINITY,
  ) {}

  start(concurrency: number): void {
    for (let i = 0; i < concurrency; i++) this.issue();
  }

  stop(): void {
    this.stopped = true;
  }

  sortedLatencies(): Float64Array {
    return this.latencies.subarray(0, this.ops).sort();
  }

  private issue(): void {
    if (this.stopped || this.issued >= this.limit) return;
    const i = this.issued++;
    const startMs = performance.now();
    this.inFlight++;
    this.request(this.nodes[i % this.nodes.length]!, i).then(
      (result) => {
        this.inFlight--;
        if (this.measuring) this.record(performance.now() - startMs, result);
        this.issue();
      },
      (error: unknown) => {
        this.inFlight--;
        const code = isMeshKvError(error) ? error.code : String(error);
        this.errors[code] = (this.errors[code] ?? 0) + 1;
        this.issue();
      },
    );
  }

  private record(latencyMs: number, result: unknown): void {
    if (this.ops === this.latencies.length) {
      const grown = new Float64Array(this.latencies.length * 2);
      grown.set(this.latencies);
      this.latencies = grown;
    }
    this.latencies[this.ops++] = latencyMs;
    if (result instanceof Uint8Array) this.found++;
  }
}

/**
 * Turns while `condition` holds, the clock following wall time, or moving `turnMs` per
 * turn: then a turn's work (what ticks find due, so what each operation costs) does not
 * depend on how much CPU the process gets, which makes builds comparable on a loaded
 * machine.
 */
async function runWall(
  cluster: BenchCluster,
  condition: () => boolean,
  turnMs: number | null = null,
): Promise<void> {
  const wallStart = performance.now();
  const clockBase = cluster.clockMs;
  let turns = 0;
  while (condition()) {
    cluster.clockMs =
      clockBase + Math.floor(turnMs === null ? performance.now() - wallStart : ++turns * turnMs);
    await cluster.turn();
  }
}

/** Writes every key not written yet (not measured), so that the gets find values. */
async function prefill(cluster: BenchCluster, workload: Workload): Promise<void> {
  const missing = workload.keys.length - workload.putsIssued;
  if (missing <= 0) return;
  const first = workload.putsIssued;
  workload.putsIssued += missing;
  const loop = new ClosedLoop(
    cluster.nodes.map((n) => n.node),
    (node, i) => node.put(workload.keys[first + i]!, workload.value),
    missing,
  );
  loop.start(1024);
  await runWall(cluster, () => loop.inFlight > 0);
  const failures = Object.values(loop.errors).reduce((sum, n) => sum + n, 0);
  if (failures > 0)
    throw new Error(`prefill: ${failures} puts failed: ${JSON.stringify(loop.errors)}`);
}

async function runRow(
  cluster: BenchCluster,
  op: 'put' | 'get',
  concurrency: number,
  args: Args,
  workload: Workload,
  profiler: Session | null,
): Promise<Row> {
  const { keys, value } = workload;
  const loop = new ClosedLoop(
    cluster.nodes.map((n) => n.node),
    op === 'put'
      ? (node) => node.put(keys[workload.putsIssued++ % keys.length]!, value)
      : (node, i) => node.get(keys[i % keys.length]!),
  );
  loop.start(concurrency);
  const warmupStart = performance.now();
  await runWall(
    cluster,
    () => performance.now() - warmupStart < args.warmupSeconds * 1000,
    args.turnMs,
  );

  const before = counters(cluster);
  if (profiler !== null && args.profileFile !== null) await profiler.post('Profiler.start');
  // Sampled allocations (every 32 KiB on average), including what was collected since.
  if (profiler !== null && args.heapProfileFile !== null) {
    await profiler.post('HeapProfiler.startSampling', {
      samplingInterval: 32_768,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  }
  const cpuStart = process.cpuUsage();
  const measureStart = performance.now();
  loop.measuring = true;
  await runWall(cluster, () => performance.now() - measureStart < args.seconds * 1000, args.turnMs);
  loop.measuring = false;
  const seconds = (performance.now() - measureStart) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  if (profiler !== null && args.profileFile !== null) {
    const { profile } = await profiler.post('Profiler.stop');
    writeFileSync(args.profileFile, JSON.stringify(profile));
  }
  if (profiler !== null && args.heapProfileFile !== null) {
    const { profile } = await profiler.post('HeapProfiler.stopSampling');
    writeFileSync(args.heapProfileFile, JSON.stringify(profile));
  }
  const after = counters(cluster);
  loop.stop();
  await runWall(cluster, () => loop.inFlight > 0);

  if (after.batches - before.batches !== after.statusBatches - before.statusBatches) {
    throw new Error('the storage wrapper and status().batchesWritten disagree');
  }
  const ops = loop.ops;
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const sorted = loop.sortedLatencies();
  const batches = after.batches - before.batches;
  const frames = after.frames - before.frames;
  const peers = NODE_IDS.length - 1;
  return {
    op,
    concurrency,
    ops,
    seconds: round3(seconds),
    cpuSeconds: round3(cpuSeconds),
    opsPerSec: Math.round(ops / seconds),
    opsPerCpuSec: Math.round(ops / cpuSeconds),
    p50Ms: round3(percentile(sorted, 0.5)),
    p99Ms: round3(percentile(sorted, 0.99)),
    batches,
    entriesPerBatch: batches === 0 ? null : round1((after.entries - before.entries) / batches),
    groupsPerBatch: batches === 0 ? null : round1((after.groups - before.groups) / batches),
    framesPerPeerPerBatch: batches === 0 ? null : round3(frames / batches / peers),
    framesPerPeerPerOp: round3(frames / ops / peers),
    groupWritesPerOp: round1((after.groups - before.groups) / ops),
    errors: loop.errors,
    ...(op === 'get' ? { getsFound: ops === 0 ? 0 : round3(loop.found / ops) } : {}),
  };
}

/**
 * Idle: frames on each directed link per second of virtual time, counted by the
 * transport, after the load stopped and `IDLE_SETTLE_MS` passed (groups quiesce then).
 */
async function measureIdle(cluster: BenchCluster) {
  const links: { name: string; transport: DirectTransport; peer: PeerId }[] = [];
  for (const n of cluster.nodes) {
    for (const peer of NODE_IDS) {
      if (peer !== n.id) links.push({ name: `${n.id}→${peer}`, transport: n.transport, peer });
    }
  }
  const sent = () => links.map((l) => l.transport.stats(l.peer).framesSent);
  await cluster.drain();
  const settleStart = sent();
  await cluster.runVirtualFor(IDLE_SETTLE_MS);
  const measureStart = sent();
  const measureFrom = cluster.clockMs;
  await cluster.runVirtualFor(IDLE_MEASURE_MS);
  const end = sent();
  const seconds = (cluster.clockMs - measureFrom) / 1000;
  const framesPerSecByLink: Record<string, number> = {};
  let total = 0;
  for (let i = 0; i < links.length; i++) {
    const frames = end[i]! - measureStart[i]!;
    total += frames;
    framesPerSecByLink[links[i]!.name] = round1(frames / seconds);
  }
  const pairs = links.length / 2;
  return {
    bench: 'node',
    idle: true,
    settleVirtualMs: IDLE_SETTLE_MS,
    framesWhileSettling: measureStart.reduce((sum, n, i) => sum + n - settleStart[i]!, 0),
    virtualSeconds: seconds,
    /** Both directions of a pair together, averaged over the pairs. */
    framesPerSecPerPeerPair: round1(total / seconds / pairs),
    framesPerSecByLink,
  };
}

function table(rows: readonly Row[]): string {
  const show = (x: number | null) => (x === null ? '—' : x.toLocaleString('en'));
  const lines = [
    '| op  | in flight | ops/s wall | ops per CPU second | p50 ms | p99 ms | entries/batch | groups/batch | group writes/op | frames/peer/batch | frames/peer/op | errors |',
    '| --- | --------: | ---------: | -----------------: | -----: | -----: | ------------: | -----------: | --------------: | ----------------: | -------------: | ------ |',
  ];
  for (const r of rows) {
    const errors = Object.entries(r.errors).map(([code, n]) => `${code} ${n}`);
    lines.push(
      `| ${r.op} | ${r.concurrency} | ${show(r.opsPerSec)} | ${show(r.opsPerCpuSec)} | ${r.p50Ms} | ${r.p99Ms} | ${show(r.entriesPerBatch)} | ${show(r.groupsPerBatch)} | ${show(r.groupWritesPerOp)} | ${show(r.framesPerPeerPerBatch)} | ${show(r.framesPerPeerPerOp)} | ${errors.join(', ') || '—'} |`,
    );
  }
  return lines.join('\n');
}

// ---- Main -----------------------------------------------------------------------------

const args = parseArgs(process.argv.slice(2));
const setupCpu = process.cpuUsage();
const setupWall = performance.now();
const cluster = await BenchCluster.start();
await cluster.runVirtual(() => cluster.inPlace(), SETUP_MAX_MS, 'three voters per partition');
const setupCpuUsed = process.cpuUsage(setupCpu);
console.log(
  JSON.stringify({
    bench: 'node',
    setup: true,
    cpus: availableParallelism(),
    loadAverage1m: round1(loadavg()[0]!),
    virtualMs: cluster.clockMs,
    seconds: round3((performance.now() - setupWall) / 1000),
    cpuSeconds: round3((setupCpuUsed.user + setupCpuUsed.system) / 1e6),
    leadersPerNode: cluster.leadersPerNode(),
  }),
);

const workload: Workload = {
  keys: Array.from({ length: KEY_COUNT }, (_, i) => `key-${i}`),
  value: new Uint8Array(VALUE_BYTES).fill(0x61),
  putsIssued: 0,
};
let profiler: Session | null = null;
if (args.profileFile !== null || args.heapProfileFile !== null) {
  profiler = new Session();
  profiler.connect();
  if (args.profileFile !== null) await profiler.post('Profiler.enable');
  if (args.heapProfileFile !== null) await profiler.post('HeapProfiler.enable');
}
const rows: Row[] = [];
for (const op of args.ops) {
  if (op === 'get') await prefill(cluster, workload);
  for (const concurrency of args.concurrencies) {
    // Only the first row is profiled: name the row to profile on the command line.
    const row = await runRow(
      cluster,
      op,
      concurrency,
      args,
      workload,
      rows.length === 0 ? profiler : null,
    );
    rows.push(row);
    console.log(JSON.stringify({ bench: 'node', ...row }));
  }
}
profiler?.disconnect();
console.log(JSON.stringify({ bench: 'node', loadAverage1m: round1(loadavg()[0]!) }));
const idle = profiler === null ? await measureIdle(cluster) : null;
if (idle !== null) console.log(JSON.stringify(idle));
await cluster.close();
console.log(`\n${table(rows)}`);
if (idle !== null) {
  console.log(
    `\nidle, ${idle.virtualSeconds} s of virtual time after ${idle.settleVirtualMs} ms to settle: ${idle.framesPerSecPerPeerPair} frames/s per peer pair (both directions)`,
  );
}
