/**
 * One seed of the deterministic simulation of a meshkv cluster: the real `MeshNode`
 * (packages/node) on every node, over the simulated network (`SimNetwork<Uint8Array>`,
 * one `SimTransport` per node), the real store (`NodeStorage` on a 'manual'-sync
 * `MemoryDisk`), and a registry run by the signaling server's own transition functions
 * (registry.ts). Nothing here stands in for product code: the harness only plays the
 * world around the nodes (time, network, disks, registry, clients) and checks what they do.
 *
 * A seed picks a scenario: 1 to 7 nodes at first (a cluster of 1 grows by joins), Q
 * partitions (4..16, so several groups per node), N replicas (3 mostly; 1, 2 or 5), link
 * faults (delay, loss, duplication, reordering), then for CHAOS_MS a random schedule of
 * partitions (symmetric and asymmetric), isolated nodes (cut off from the registry too:
 * marked down after the grace period), clogged links, crashes (`disk.crash()`: writes not
 * yet durable are lost, and the MeshNode object is dropped), restarts (`disk.open()` and
 * `MeshNode.start`), slow disks (a node's writes stay pending while the rest goes on),
 * joins, graceful leaves (`markLeft`, then `node.leave()`), and one lost disk (the node
 * comes back empty under a new id), while clients call put, get, delete, local get and
 * put {ack: 'all'} through random nodes with deadlines.
 *
 * Checks, as it runs: the Raft invariants of every group (invariants.ts, through the
 * MeshNode observer hooks), error codes from the documented set, local gets returning a
 * value some put wrote (or null). At the end the world heals (network, crashed nodes,
 * slow disks) and, within SETTLE_MAX_MS of virtual time, the cluster must converge: every
 * partition's voters are the ring placement of the final epoch (no learners, not joint),
 * every voter applied its leader's commit, nodes outside a partition's placement hold no
 * replica of it, in status or in storage (`load()`), and replicas agree on every key.
 * Then one linearizable get per key joins the history, and the whole history must be
 * linearizable per key (test/lincheck): so every acknowledged write is readable.
 *
 * Determinism: one mulberry32 PRNG seeded with the seed draws everything; the MeshNodes
 * run in promise microtasks, which the harness drains after every event (`drain`): while
 * a node whose disk is not slow is `busy`, sync those disks and yield a microtask turn. No
 * timers and no real I/O, so a seed replays exactly: `pnpm sim --seed S`.
 */
import {
  ErrorCode,
  type GroupStatus,
  isMeshKvError,
  MeshNode,
  type MeshNodeObserver,
  type MeshNodeSettings,
} from '@meshkv/node';
import {
  ConfChangeType,
  decodeConfChange,
  type Entry,
  EntryType,
  mulberry32,
  type NodeId,
  type Prng,
} from '@meshkv/raft';
import { Ring } from '@meshkv/ring';
import { MemoryDisk, type NodeStorage } from '@meshkv/storage';
import { SimNetwork, SimTransport } from '@meshkv/transport/sim-network';
import { checkKvHistory, type KvCall, type KvHistoryOp, type KvResult } from '../lincheck/kv.ts';
import { Choices } from './choices.ts';
import { GroupMonitors, SimFailure } from './invariants.ts';
import { MARKED_DOWN, SimRegistry } from './registry.ts';

export interface MeshSimOptions {
  /** Keep every trace line (for replay); otherwise only the last TRACE_TAIL_LINES. */
  readonly fullTrace?: boolean;
  /** Include every frame sent and delivered in the trace (very long). */
  readonly traceMessages?: boolean;
  /**
   * A deliberate bug in the harness, to show the checks catch one (tests only): local
   * gets, which may be stale, are recorded in the history as linearizable gets.
   */
  readonly sabotage?: 'local-reads';
}

export interface MeshSimStats {
  /** Node ids that ran (a lost disk's new id counts). */
  readonly nodes: number;
  /** Raft groups in the run (Q: one per partition). */
  readonly groups: number;
  readonly partitions: number;
  readonly replicationFactor: number;
  /** Replica moves completed: voters added by committed configuration changes. */
  readonly moves: number;
  /** Snapshots installed on followers (from the nodes' status). */
  readonly snapshotsInstalled: number;
  /** Raft messages nodes forwarded for others whose link was down (status `recordsForwarded`). */
  readonly recordsForwarded: number;
  readonly operations: number;
  readonly acknowledged: number;
  readonly indeterminate: number;
  readonly localGets: number;
  readonly crashes: number;
  readonly restarts: number;
  readonly joins: number;
  readonly leaves: number;
  readonly lostDisks: number;
  readonly downs: number;
  readonly leaders: number;
  readonly registryEpoch: number;
  readonly virtualMs: number;
}

export interface MeshSimResult {
  readonly seed: number;
  /** Null when every check passed. */
  readonly failure: { readonly invariant: string; readonly message: string } | null;
  /** The whole trace with `fullTrace`, else its last lines. */
  readonly trace: readonly string[];
  readonly stats: MeshSimStats;
}

/** Every node's tick period is about this (settings.tickMs)… */
const TICK_MS = 10;
/** …each its own, in [TICK_MS − TICK_SKEW_MS, TICK_MS + TICK_SKEW_MS] (clock skew). */
const TICK_SKEW_MS = 1;
/** Clients and chaos act on this beat. */
const BEAT_MS = 10;
/** Faults and client traffic run this long… */
const CHAOS_MS = 6_000;
/** …then the world heals and the cluster must converge within this (virtual time). */
const SETTLE_MAX_MS = 30_000;
/** How often convergence is checked while settling. */
const CONVERGENCE_CHECK_MS = 250;
/** Client deadlines are drawn from this range. */
const MIN_DEADLINE_MS = 300;
const MAX_DEADLINE_MS = 3_000;
/** A call a live node has not settled this long after its deadline is a liveness bug. */
const DEADLINE_SLACK_MS = 1_000;
const FINAL_GET_DEADLINE_MS = 5_000;
const KEYS = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
const HOT_KEYS = KEYS.slice(0, 2);
const MAX_LIVE_NODES = 7;
/**
 * A leader's placement note (GroupStatus.placement) while a configuration change it
 * proposed is not applied yet: the step just proposed, or the planner waiting for it.
 */
const CONF_CHANGE_NOTES =
  /^(addLearners|removeLearners|enterJoint|leaveJoint|configuration change pending)$/;
const TRACE_TAIL_LINES = 80;
/** Microtask turns a drain may take (a node busy for longer is stuck). */
const MAX_DRAIN_TURNS = 20_000;
/** Turns without a busy node before a drain ends (lets resolved calls' callbacks run). */
const QUIET_TURNS = 3;
/** Drains a harness-side call (storage.load, a final read) may take to settle. */
const MAX_SETTLE_ROUNDS = 1_000;
/** Network events per run at most (a livelock guard). */
const MAX_EVENTS = 3_000_000;
/** The linearizability checker's search budget per seed (all keys together). */
const LINCHECK_MAX_STEPS = 20_000_000;
/** leave() is retried with this deadline until it resolves. */
const LEAVE_DEADLINE_MS = 5_000;

/** What a client may get from a call: the documented codes. */
const DOCUMENTED_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCode));
/** Write failures whose write may have applied. */
const INDETERMINATE_CODES: ReadonlySet<string> = new Set([
  ErrorCode.TIMEOUT,
  ErrorCode.UNAVAILABLE,
  ErrorCode.OUTCOME_UNKNOWN,
  ErrorCode.CLOSED,
]);

export function runMeshSeed(seed: number, options: MeshSimOptions = {}): Promise<MeshSimResult> {
  return new MeshSimulation(seed, options).run();
}

type ClientCallKind = 'put' | 'putAll' | 'get' | 'localGet' | 'delete';

interface ClientOp {
  readonly id: number;
  readonly client: string;
  readonly node: NodeId;
  readonly kind: ClientCallKind;
  readonly call: KvCall;
  readonly callMs: number;
  readonly deadlineMs: number;
  done: boolean;
}

/** One node id's life: its disk (bound to the id) and, while it runs, its MeshNode. */
interface SimNode {
  readonly id: NodeId;
  readonly disk: MemoryDisk;
  storage: NodeStorage | null;
  transport: SimTransport | null;
  node: MeshNode | null;
  /** MeshNode.start in progress. */
  starting: boolean;
  /**
   * Crashed (may restart), closing after it left (its disk still syncs until close()
   * settles), or gone for good (left, lost disk).
   */
  state: 'running' | 'crashed' | 'closing' | 'gone';
  /** While set, the disk is slow: its writes stay pending until this time. */
  slowUntilMs: number | null;
  tickPeriodMs: number;
  nextTickAtMs: number;
  /** markLeft was done: the node hands off, then stops. */
  leaving: boolean;
  /** The MeshNode a leave() call is in progress on. */
  leaveCalledOn: MeshNode | null;
  /** Cut off by `isolate` (also from the registry). */
  isolated: boolean;
}

class MeshSimulation {
  private readonly seed: number;
  private readonly options: MeshSimOptions;
  private readonly prng: Prng;
  private readonly choices: Choices;
  private readonly network: SimNetwork<Uint8Array>;
  private registry!: SimRegistry;
  private ring!: Ring;
  private readonly monitors = new GroupMonitors();
  private readonly nodes = new Map<NodeId, SimNode>();
  private nextNodeNumber = 1;
  private readonly traceLines: string[] = [];
  /** A failure seen in a callback (a promise handler cannot throw into the loop). */
  private failure: SimFailure | null = null;
  private readonly history: KvHistoryOp[] = [];
  private readonly pending = new Map<number, ClientOp>();
  private readonly idleClients: string[] = [];
  private nextOpId = 1;
  /** Every value a put was called with, for the local-get check. */
  private readonly valuesWritten = new Set<string>();
  /** MeshNode settings this seed runs (small logs and chunks so snapshots stream). */
  private nodeSettings: Partial<MeshNodeSettings> = {};
  /** `${group}:${index}` of committed configuration changes already counted. */
  private readonly confChangesSeen = new Set<string>();
  private moves = 0;
  /** Snapshots installed by MeshNode objects since dropped (crashed, left). */
  /** The status counters of MeshNode objects dropped so far (crashed, or gone for good). */
  private readonly droppedCounters = { snapshotsInstalled: 0, recordsForwarded: 0 };
  private partitions = 0;
  private replicationFactor = 0;
  private acknowledged = 0;
  private indeterminate = 0;
  private localGets = 0;
  private crashes = 0;
  private restarts = 0;
  private joins = 0;
  private leaves = 0;
  private lostDisks = 0;
  private events = 0;
  private gracePeriodMs = 0;

  constructor(seed: number, options: MeshSimOptions) {
    this.seed = seed;
    this.options = options;
    this.prng = mulberry32(seed);
    this.choices = new Choices(this.prng);
    this.network = new SimNetwork<Uint8Array>({
      prng: this.prng,
      sizeBytes: (frame) => frame.byteLength,
      clone: (frame) => frame.slice(),
      onEvent: options.traceMessages
        ? (event) => {
            if (event.kind === 'send' || event.kind === 'deliver') {
              const bytes = (event as { payload: Uint8Array }).payload.byteLength;
              this.trace(
                `net ${event.kind} #${event.packetId} ${event.from}→${event.to} ${bytes} B`,
              );
            } else if (event.kind === 'drop') {
              this.trace(`net drop #${event.packetId} ${event.from}→${event.to} (${event.reason})`);
            }
          }
        : undefined,
    });
  }

  private get nowMs(): number {
    return this.network.nowMs;
  }

  private trace(line: string): void {
    this.traceLines.push(`${String(this.nowMs).padStart(6)} ms  ${line}`);
    if (!this.options.fullTrace && this.traceLines.length > 2 * TRACE_TAIL_LINES) {
      this.traceLines.splice(0, this.traceLines.length - TRACE_TAIL_LINES);
    }
  }

  private fail(invariant: string, message: string): void {
    this.failure ??= new SimFailure(invariant, message);
  }

  private throwIfFailed(): void {
    if (this.failure !== null) throw this.failure;
  }

  async run(): Promise<MeshSimResult> {
    let failure: MeshSimResult['failure'] = null;
    try {
      await this.setUp();
      await this.runUntil(CHAOS_MS, 'chaos');
      await this.settle();
      await this.finalChecks();
    } catch (e) {
      // A safety violation in what clients saw outranks the failure that stopped the
      // seed (often a liveness one, which would hide it).
      const reported = this.historyViolation() ?? this.failure ?? e;
      if (reported instanceof SimFailure)
        failure = { invariant: reported.invariant, message: reported.detail };
      else
        failure = {
          invariant: 'harness or node error',
          message:
            reported instanceof Error ? (reported.stack ?? reported.message) : String(reported),
        };
      this.trace(`FAILED ${failure.invariant}: ${failure.message}`);
    }
    const stats = this.stats();
    const closing = await this.shutDown();
    if (failure === null && closing !== null) {
      failure = { invariant: 'close', message: closing };
      this.trace(`FAILED close: ${closing}`);
    }
    const trace = this.options.fullTrace
      ? this.traceLines
      : this.traceLines.slice(-TRACE_TAIL_LINES);
    return { seed: this.seed, failure, trace, stats };
  }

  // ---- Scenario ----

  private async setUp(): Promise<void> {
    this.partitions = this.choices.pick([4, 8, 8, 16]);
    this.replicationFactor = this.choices.pick([3, 3, 3, 3, 3, 3, 1, 2, 5]);
    const tokensPerNode = 8 + this.choices.random(9);
    const initialNodes = this.choices.chance(25) ? 1 : this.choices.pick([3, 3, 4, 5, 7]);
    this.gracePeriodMs = 500 + this.choices.random(1500);
    this.registry = new SimRegistry({
      settings: {
        partitions: this.partitions,
        replicationFactor: this.replicationFactor,
        tokensPerNode,
      },
      prng: this.prng,
      gracePeriodMs: this.gracePeriodMs,
      maxPushDelayMs: 5 + this.choices.random(50),
    });
    this.ring = new Ring({
      partitions: this.partitions,
      replicationFactor: this.replicationFactor,
      tokensPerNode,
    });
    const faults = {
      minDelayMs: 1 + this.choices.random(3),
      maxDelayMs: 5 + this.choices.random(30),
      lossProbability: this.choices.pick([0, 0, 0.01, 0.05]),
      duplicateProbability: this.choices.pick([0, 0.01, 0.05]),
      reorderProbability: this.choices.pick([0, 0.1, 0.5]),
    };
    this.network.configureAll(faults);
    this.nodeSettings = {
      tickMs: TICK_MS,
      electionTick: this.choices.pick([10, 10, 20]),
      heartbeatTick: this.choices.pick([1, 2]),
      maxSizePerMsgBytes: this.choices.pick([1024, 64 * 1024]),
      maxInflightMsgs: this.choices.pick([4, 256]),
      snapshotEveryEntries: this.choices.pick([20, 50, 200]),
      logEntriesKept: this.choices.pick([5, 20]),
      targetChunkBytes: this.choices.pick([64, 1024, 64 * 1024]),
      maxMovesPerNode: this.choices.pick([1, 4]),
      catchUpLagEntries: this.choices.pick([4, 64]),
    };
    const clients = 4 + this.choices.random(7);
    for (let i = 0; i < clients; i++) this.idleClients.push(`c${i}`);
    this.trace(
      `seed ${this.seed}: ${initialNodes} nodes, Q ${this.partitions}, N ${this.replicationFactor}, ${tokensPerNode} tokens per node, grace ${this.gracePeriodMs} ms, ${clients} clients, link faults ${JSON.stringify(faults)}, node settings ${JSON.stringify(this.nodeSettings)}`,
    );
    // The first member bootstraps every partition; the others start empty and get
    // replicas by rebalancing (a node with empty storage never creates groups itself).
    for (let i = 0; i < initialNodes; i++) await this.addNode();
  }

  /** A new node id with a new, empty disk: it joins the registry and starts. */
  private async addNode(): Promise<SimNode> {
    const id = `n${this.nextNodeNumber++}`;
    const periodMs = TICK_MS - TICK_SKEW_MS + this.choices.random(2 * TICK_SKEW_MS + 1);
    const sim: SimNode = {
      id,
      disk: new MemoryDisk({
        name: id,
        sync: 'manual',
        random: (bytes) => {
          for (let i = 0; i < bytes.length; i++) bytes[i] = this.choices.random(256);
        },
      }),
      storage: null,
      transport: null,
      node: null,
      starting: false,
      state: 'crashed',
      slowUntilMs: null,
      tickPeriodMs: periodMs,
      nextTickAtMs: 0,
      leaving: false,
      leaveCalledOn: null,
      isolated: false,
    };
    this.nodes.set(id, sim);
    await this.start(sim);
    return sim;
  }

  /** Opens the disk and starts a MeshNode on it with the registry's join reply. */
  private async start(sim: SimNode): Promise<void> {
    sim.storage = await sim.disk.open();
    sim.transport = new SimTransport(this.network, sim.id);
    sim.state = 'running';
    sim.isolated = false;
    sim.nextTickAtMs = this.nowMs + 1 + this.choices.random(sim.tickPeriodMs);
    // The registry issues an id once, to a new disk: only then may it bootstrap.
    const newIdentity = !this.registry.knows(sim.id);
    // A node that left comes back only to finish handing off: it must not rejoin.
    const registry = sim.leaving
      ? this.registry.watch(sim.id)
      : this.registry.join(sim.id, this.nowMs);
    this.trace(`${sim.id} starts (registry epoch ${registry.epoch})`);
    sim.starting = true;
    MeshNode.start({
      nodeId: sim.id,
      storage: sim.storage,
      transport: sim.transport,
      registry,
      newIdentity,
      random: mulberry32(this.choices.random(0x1_0000_0000)),
      nowMs: this.nowMs,
      settings: this.nodeSettings,
      observer: this.observer(sim.id),
    }).then(
      (node) => {
        sim.starting = false;
        sim.node = node;
      },
      (e: unknown) => {
        sim.starting = false;
        this.fail('start', `${sim.id}: MeshNode.start failed: ${errorText(e)}`);
      },
    );
    await this.drain();
    this.throwIfFailed();
    if (sim.node === null)
      throw new SimFailure('start', `${sim.id}: MeshNode.start did not settle`);
    if (sim.leaving) this.startLeave(sim);
  }

  private observer(id: NodeId): MeshNodeObserver {
    return {
      persisted: (group, entries) => this.check(() => this.monitors.onPersist(group, id, entries)),
      applied: (group, entry) =>
        this.check(() => {
          this.monitors.onApply(group, id, entry);
          this.countMoves(group, entry);
        }),
      leader: (group, term, log) => this.check(() => this.monitors.onLeader(group, id, term, log)),
      // The node's lines start with its id.
      trace: (line) => this.trace(line),
    };
  }

  /** Runs an invariant check from inside a node (its failure stops the seed at the next event). */
  private check(action: () => void): void {
    try {
      action();
    } catch (e) {
      if (e instanceof SimFailure) this.failure ??= e;
      else this.fail('harness error', errorText(e));
    }
  }

  /** A committed configuration change that makes nodes voters completes that many moves. */
  private countMoves(group: number, entry: Entry): void {
    if (entry.type !== EntryType.ConfChange) return;
    const key = `${group}:${entry.index}`;
    if (this.confChangesSeen.has(key)) return;
    this.confChangesSeen.add(key);
    for (const change of decodeConfChange(entry.data).changes) {
      if (change.type === ConfChangeType.AddNode) this.moves++;
    }
  }

  // ---- The event loop ----

  /**
   * Runs the clock to `untilMs`: network events, each node's ticks, registry pushes and
   * grace periods, slow disks catching up, and on every beat the clients and (in the
   * 'chaos' phase) the faults. Drains the nodes after every event.
   */
  private async runUntil(untilMs: number, phase: 'chaos' | 'settle'): Promise<void> {
    let nextBeatMs = Math.ceil((this.nowMs + 1) / BEAT_MS) * BEAT_MS;
    let nextActionMs = this.nowMs + 50 + this.choices.random(300);
    while (this.nowMs < untilMs) {
      this.throwIfFailed();
      const packetMs = this.network.nextEventAtMs() ?? Number.POSITIVE_INFINITY;
      let nextMs = Math.min(nextBeatMs, this.registry.nextEventAtMs() ?? Number.POSITIVE_INFINITY);
      for (const sim of this.nodes.values()) {
        if (sim.state !== 'running') continue;
        nextMs = Math.min(nextMs, sim.nextTickAtMs, sim.slowUntilMs ?? Number.POSITIVE_INFINITY);
      }
      if (packetMs <= nextMs && packetMs <= untilMs) {
        if (++this.events > MAX_EVENTS)
          throw new SimFailure('liveness', `more than ${MAX_EVENTS} network events`);
        this.network.step();
        await this.drain();
        continue;
      }
      const stepMs = Math.min(nextMs, untilMs);
      this.network.advanceTo(stepMs);
      if (stepMs < nextMs) break;
      this.registryEvents();
      for (const sim of this.nodes.values()) {
        if (sim.slowUntilMs !== null && sim.slowUntilMs <= stepMs) {
          sim.slowUntilMs = null;
          this.trace(`${sim.id}'s disk catches up (${sim.disk.pendingWrites} writes pending)`);
        }
      }
      for (const sim of this.nodes.values()) {
        if (sim.state !== 'running' || sim.nextTickAtMs !== stepMs) continue;
        sim.nextTickAtMs += sim.tickPeriodMs;
        sim.node?.tick(stepMs);
      }
      await this.drain();
      if (stepMs !== nextBeatMs) continue;
      nextBeatMs += BEAT_MS;
      this.checkClientDeadlines();
      if (phase === 'chaos') {
        this.clientTraffic();
        if (this.nowMs >= nextActionMs) {
          await this.chaosAction();
          nextActionMs = this.nowMs + 50 + this.choices.random(400);
        }
        await this.drain();
      }
    }
    this.throwIfFailed();
  }

  /** Registry pushes and grace periods due now (changes go into the trace). */
  private registryEvents(): void {
    const dueMs = this.registry.nextEventAtMs();
    if (dueMs === undefined || dueMs > this.nowMs) return;
    const changesBefore = this.registry.changes.length;
    for (const { nodeId, snapshot } of this.registry.runDue(this.nowMs)) {
      this.nodes.get(nodeId)?.node?.updateRegistry(snapshot);
    }
    for (const change of this.registry.changes.slice(changesBefore))
      this.trace(`registry ${change}`);
  }

  /**
   * Lets the nodes run until none whose disk is not slow is busy: syncs those disks and
   * yields microtask turns. A slow disk's writes stay pending (its node waits on them).
   */
  private async drain(): Promise<void> {
    let quiet = 0;
    for (let turn = 0; ; turn++) {
      let busy: NodeId | null = null;
      for (const sim of this.nodes.values()) {
        if (sim.node !== null && sim.node.failure !== undefined && sim.node.failure !== null) {
          throw new SimFailure('node failure', `${sim.id} stopped: ${errorText(sim.node.failure)}`);
        }
        // A closing node's close() waits for its last batch: keep its disk going.
        if (sim.state === 'closing') sim.disk.syncAll();
        if (sim.state !== 'running' || sim.slowUntilMs !== null) continue;
        sim.disk.syncAll();
        if (sim.starting || sim.node?.busy) busy = sim.id;
      }
      if (busy === null) {
        if (++quiet > QUIET_TURNS) return;
      } else {
        quiet = 0;
        if (turn > MAX_DRAIN_TURNS)
          throw new SimFailure(
            'liveness',
            `${busy} stayed busy for ${MAX_DRAIN_TURNS} microtask turns at ${this.nowMs} ms (a loop that never ends)`,
          );
      }
      await undefined;
    }
  }

  // ---- Clients ----

  private runningNodes(): SimNode[] {
    return [...this.nodes.values()].filter((sim) => sim.state === 'running' && sim.node !== null);
  }

  private clientTraffic(): void {
    while (this.idleClients.length > 0 && this.choices.chance(50)) {
      const targets = this.runningNodes();
      if (targets.length === 0) return;
      const client = this.idleClients.shift()!;
      const sim = this.choices.pick(targets);
      // Half the calls go to two hot keys: contention, where ordering bugs show.
      const key = this.choices.pick(this.choices.chance(50) ? HOT_KEYS : KEYS);
      const id = this.nextOpId++;
      const roll = this.choices.random(100);
      const kind: ClientCallKind =
        roll < 30
          ? 'put'
          : roll < 45
            ? 'putAll'
            : roll < 70
              ? 'get'
              : roll < 85
                ? 'localGet'
                : 'delete';
      const call: KvCall =
        kind === 'put' || kind === 'putAll'
          ? { kind: 'put', key, value: `v${id}` }
          : kind === 'delete'
            ? { kind: 'delete', key }
            : { kind: 'get', key };
      const deadlineMs =
        MIN_DEADLINE_MS + this.choices.random(MAX_DEADLINE_MS - MIN_DEADLINE_MS + 1);
      this.issue({
        id,
        client,
        node: sim.id,
        kind,
        call,
        callMs: this.nowMs,
        deadlineMs,
        done: false,
      });
    }
  }

  /** Calls the node's API for `op`; the result is recorded when the promise settles. */
  private issue(op: ClientOp): void {
    const node = this.nodes.get(op.node)!.node!;
    this.pending.set(op.id, op);
    this.trace(
      `${op.client} → ${op.node} #${op.id} ${describeOp(op)} (deadline ${op.deadlineMs} ms)`,
    );
    if (op.call.kind === 'put') this.valuesWritten.add(op.call.value);
    const options = { deadlineMs: op.deadlineMs };
    let call: Promise<unknown>;
    switch (op.kind) {
      case 'put':
        call = node.put(op.call.key, putValue(op.call), options);
        break;
      case 'putAll':
        call = node.put(op.call.key, putValue(op.call), { ack: 'all', deadlineMs: op.deadlineMs });
        break;
      case 'get':
        call = node.get(op.call.key, options);
        break;
      case 'localGet':
        call = node.get(op.call.key, { consistency: 'local', deadlineMs: op.deadlineMs });
        break;
      case 'delete':
        call = node.delete(op.call.key, options);
        break;
    }
    call.then(
      (value) => this.settled(op, value, null),
      (error: unknown) => this.settled(op, undefined, error),
    );
  }

  private settled(op: ClientOp, value: unknown, error: unknown): void {
    if (op.done) return; // its node crashed: the client gave up then
    op.done = true;
    this.pending.delete(op.id);
    this.idleClients.push(op.client);
    if (error !== null) {
      this.failed(op, error);
      return;
    }
    const result = this.resultOf(op, value);
    if (result === null) return;
    this.trace(`${op.client} ← #${op.id} ${describeOp(op)} = ${describeResult(result)}`);
    if (op.kind === 'localGet') {
      this.localGets++;
      const seen = (result as { value: string | null }).value;
      if (seen !== null && !this.valuesWritten.has(seen)) {
        this.fail(
          'local get',
          `#${op.id} ${describeOp(op)} at ${op.node} returned ${JSON.stringify(seen)}, which no put wrote`,
        );
      }
      if (this.options.sabotage !== 'local-reads') return;
    }
    this.record(op, result);
    if (op.call.kind !== 'get') this.acknowledged++;
  }

  /** The call's result as the checker models it, or null after a harness-side failure. */
  private resultOf(op: ClientOp, value: unknown): KvResult | null {
    switch (op.call.kind) {
      case 'put':
        if (value !== true) {
          this.fail('api', `#${op.id} ${describeOp(op)} resolved with ${String(value)}, not true`);
          return null;
        }
        return { kind: 'put' };
      case 'delete':
        if (typeof value !== 'boolean') {
          this.fail(
            'api',
            `#${op.id} ${describeOp(op)} resolved with ${String(value)}, not a boolean`,
          );
          return null;
        }
        return { kind: 'delete', removed: value };
      case 'get':
        if (value !== null && !(value instanceof Uint8Array)) {
          this.fail('api', `#${op.id} ${describeOp(op)} resolved with ${String(value)}`);
          return null;
        }
        return { kind: 'get', value: value === null ? null : textDecoder.decode(value) };
    }
  }

  private failed(op: ClientOp, error: unknown): void {
    if (!isMeshKvError(error) || !DOCUMENTED_CODES.has(error.code)) {
      this.fail(
        'api',
        `#${op.id} ${describeOp(op)} at ${op.node} rejected with ${errorText(error)}, not a MeshKvError with a documented code`,
      );
      return;
    }
    const { code } = error;
    this.trace(`${op.client} ← #${op.id} ${describeOp(op)} failed: ${code}: ${error.message}`);
    if (
      code === ErrorCode.KEY_INVALID ||
      code === ErrorCode.VALUE_INVALID ||
      code === ErrorCode.VALUE_TOO_LARGE ||
      (code === ErrorCode.ACK_INCOMPLETE && op.kind !== 'putAll')
    ) {
      this.fail('api', `#${op.id} ${describeOp(op)}: ${code} for a valid call: ${error.message}`);
      return;
    }
    if (op.call.kind === 'get') return; // a failed read constrains nothing
    if (code === ErrorCode.ACK_INCOMPLETE) {
      // Committed on a majority: the write took effect before this answer.
      this.record(op, { kind: 'put' });
      this.acknowledged++;
    } else if (INDETERMINATE_CODES.has(code) && error.details.mayHaveApplied !== false) {
      this.record(op, null);
      this.indeterminate++;
    }
    // OVERLOADED, or a failure the node says surely did not apply: it never happened.
  }

  private record(op: ClientOp, result: KvResult | null): void {
    this.history.push({
      client: op.client,
      callMs: op.callMs,
      returnMs: this.nowMs,
      call: op.call,
      result,
    });
  }

  /** A call to a live node that outlives its deadline by DEADLINE_SLACK_MS is stuck. */
  private checkClientDeadlines(): void {
    for (const op of this.pending.values()) {
      if (this.nowMs > op.callMs + op.deadlineMs + DEADLINE_SLACK_MS) {
        throw new SimFailure(
          'liveness',
          `#${op.id} ${describeOp(op)} at ${op.node} is not settled ${this.nowMs - op.callMs} ms after its call (deadline ${op.deadlineMs} ms)`,
        );
      }
    }
  }

  /** The node crashed: its callers lose the connection; their writes may have applied. */
  private abandonCalls(node: NodeId): void {
    for (const op of [...this.pending.values()]) {
      if (op.node !== node) continue;
      op.done = true;
      this.pending.delete(op.id);
      this.idleClients.push(op.client);
      this.trace(`${op.client} ← #${op.id} ${describeOp(op)}: connection lost`);
      if (op.call.kind !== 'get') {
        this.record(op, null);
        this.indeterminate++;
      }
    }
  }

  // ---- Faults ----

  private async chaosAction(): Promise<void> {
    const ids = [...this.nodes.values()]
      .filter((sim) => sim.state === 'running' || sim.state === 'crashed')
      .map((sim) => sim.id);
    const running = this.runningNodes();
    const roll = this.choices.random(100);
    const durationMs = 100 + this.choices.random(1500);
    if (roll < 10 && ids.length > 1) {
      const shuffled = this.choices.shuffle(ids);
      const cut = 1 + this.choices.random(ids.length - 1);
      const sides = [shuffled.slice(0, cut), shuffled.slice(cut)];
      this.network.partition(sides);
      this.reconnectIsolated();
      this.trace(`partition [${sides[0]}] | [${sides[1]}]`);
    } else if (roll < 16 && ids.length > 1) {
      const from = this.choices.pick(ids);
      const to = this.choices.pick(ids.filter((id) => id !== from));
      this.network.setBlocked(from, to, true);
      this.trace(`block ${from}→${to} (one way)`);
    } else if (roll < 22 && running.length > 0) {
      const sim = this.choices.pick(running);
      this.network.isolate(sim.id);
      sim.isolated = true;
      this.registry.disconnect(sim.id, this.nowMs);
      this.trace(`isolate ${sim.id} (from the registry too)`);
    } else if (roll < 34) {
      this.network.heal();
      this.reconnectIsolated();
      this.trace('heal');
    } else if (roll < 40 && ids.length > 1) {
      const from = this.choices.pick(ids);
      const to = this.choices.pick(ids.filter((id) => id !== from));
      this.network.clog(from, to, durationMs);
      this.trace(`clog ${from}→${to} for ${durationMs} ms`);
    } else if (roll < 52 && running.length > 0) {
      this.crash(this.choices.pick(running));
    } else if (roll < 64) {
      const crashed = [...this.nodes.values()].filter((sim) => sim.state === 'crashed');
      if (crashed.length > 0) await this.restart(this.choices.pick(crashed));
    } else if (roll < 72 && running.length > 0) {
      const sim = this.choices.pick(running);
      if (sim.slowUntilMs === null) {
        sim.slowUntilMs = this.nowMs + durationMs;
        this.trace(`${sim.id}'s disk is slow for ${durationMs} ms`);
      }
    } else if (roll < 78) {
      if (this.liveNodeCount() < MAX_LIVE_NODES) {
        this.joins++;
        const sim = await this.addNode();
        this.trace(`${sim.id} joined`);
      }
    } else if (roll < 81) {
      await this.gracefulLeave();
    } else if (roll < 86) {
      await this.loseDisk();
    }
  }

  /** Nodes not gone for good (running or crashed, to come back). */
  private liveNodeCount(): number {
    return [...this.nodes.values()].filter(
      (sim) => sim.state === 'running' || sim.state === 'crashed',
    ).length;
  }

  /** Isolation ended (heal or a new partition): isolated nodes reach the registry again. */
  private reconnectIsolated(): void {
    for (const sim of this.nodes.values()) {
      if (!sim.isolated) continue;
      sim.isolated = false;
      if (sim.state !== 'running') continue;
      const snapshot = sim.leaving
        ? this.registry.watch(sim.id)
        : this.registry.join(sim.id, this.nowMs);
      sim.node?.updateRegistry(snapshot);
    }
  }

  /** Power loss: unsynced writes are lost, the MeshNode object is dropped. */
  private crash(sim: SimNode): void {
    const pendingWrites = sim.disk.pendingWrites;
    if (sim.node !== null) this.keepCounters(sim.node);
    sim.disk.crash();
    void sim.transport?.close();
    // A dead process runs nothing more: the dropped object must not either (its calls
    // fail with CLOSED, which nobody hears: their callers gave up below).
    sim.node?.close().catch(() => undefined);
    sim.transport = null;
    sim.node = null;
    sim.storage = null;
    sim.state = 'crashed';
    sim.slowUntilMs = null;
    sim.isolated = false;
    sim.leaveCalledOn = null;
    this.registry.disconnect(sim.id, this.nowMs);
    this.crashes++;
    this.abandonCalls(sim.id);
    this.trace(`${sim.id} crashes (${pendingWrites} writes pending on its disk lost)`);
  }

  private async restart(sim: SimNode): Promise<void> {
    this.restarts++;
    this.trace(`${sim.id} restarts`);
    await this.start(sim);
  }

  /**
   * A graceful leave: the registry marks the member left, the node hears of it at once,
   * then `leave()` hands its replicas off (retried until it resolves); then it stops.
   * Only while enough members stay up to hold N replicas of everything.
   */
  private async gracefulLeave(): Promise<void> {
    const candidates = this.runningNodes().filter((sim) => !sim.leaving);
    const up = this.registry.upMembers().length;
    if (candidates.length === 0 || up - 1 < Math.max(1, this.replicationFactor)) return;
    if (this.leaves >= 2) return;
    const sim = this.choices.pick(candidates);
    this.leaves++;
    sim.leaving = true;
    this.registry.leave(sim.id, this.nowMs);
    sim.node!.updateRegistry(this.registry.snapshot);
    this.trace(`${sim.id} leaves gracefully (registry epoch ${this.registry.snapshot.epoch})`);
    this.startLeave(sim);
    await this.drain();
  }

  private startLeave(sim: SimNode): void {
    const node = sim.node;
    if (node === null || sim.leaveCalledOn === node) return;
    sim.leaveCalledOn = node;
    node.leave({ deadlineMs: LEAVE_DEADLINE_MS }).then(
      () => {
        // Crashed meanwhile: it leaves again after its restart.
        if (sim.leaveCalledOn !== node) return;
        sim.leaveCalledOn = null;
        this.trace(`${sim.id} handed everything off; it stops`);
        this.stopForGood(sim, node);
      },
      (error: unknown) => {
        if (sim.leaveCalledOn !== node) return;
        sim.leaveCalledOn = null;
        if (!isMeshKvError(error, ErrorCode.TIMEOUT)) {
          this.fail('api', `${sim.id}: leave() rejected with ${errorText(error)}`);
          return;
        }
        this.trace(`${sim.id}: leave() timed out; calling it again (${errorText(error)})`);
        this.startLeave(sim);
      },
    );
  }

  /** A node that left: closed, its disk and id never used again. */
  private stopForGood(sim: SimNode, node: MeshNode): void {
    this.keepCounters(node);
    sim.state = 'closing';
    sim.node = null;
    this.registry.forget(sim.id);
    const transport = sim.transport;
    const storage = sim.storage;
    sim.transport = null;
    sim.storage = null;
    // Calls still pending on it fail with CLOSED (recorded as they settle).
    node
      .close()
      .then(async () => {
        await transport?.close();
        await storage?.close();
        sim.state = 'gone';
      })
      .catch((e: unknown) => this.fail('api', `${sim.id}: close() failed: ${errorText(e)}`));
  }

  /**
   * A node loses its disk: it crashes for good, and the machine comes back empty under a
   * new id (identity is bound to storage). Only for a node whose every group has at least
   * 3 voters in each half of its configuration, as its leader sees it and as every other
   * running replica does, so that the rest of every commit quorum it was part of still
   * holds what was committed and can elect without it: a replica that lost its disk is a
   * voter that forgot, and Raft tolerates one per such group. The followers' views count
   * because a configuration takes effect when applied: seed 777004705's leader had
   * committed the step out of a joint configuration whose old half was [n4, n7] and was
   * cut off before its followers learned it; n7 then lost its disk, and n4 and n5, still
   * joint, needed n7's vote for ever.
   */
  private async loseDisk(): Promise<void> {
    if (this.lostDisks > 0 || this.replicationFactor < 3) return;
    if (this.liveNodeCount() >= MAX_LIVE_NODES) return;
    const leaders = this.leaderViews();
    const running = this.runningNodes();
    const hostedBy = new Map(running.map((sim) => [sim, sim.node!.status().groups]));
    const views = new Map<number, GroupStatus[]>();
    for (const groups of hostedBy.values()) {
      for (const view of groups) {
        const known = views.get(view.partition);
        if (known === undefined) views.set(view.partition, [view]);
        else known.push(view);
      }
    }
    const tolerates = (view: GroupStatus) =>
      view.voters.length >= 3 &&
      (view.votersOutgoing.length === 0 || view.votersOutgoing.length >= 3);
    const safe = running.filter((sim) => {
      if (sim.leaving) return false;
      for (const hosted of hostedBy.get(sim)!) {
        const view = leaders.get(hosted.partition);
        if (view === undefined) return false;
        if (!views.get(hosted.partition)!.every(tolerates)) return false;
        // A change proposed but not applied may leave fewer voters (seed 23: the leader had
        // just proposed removing a down member, leaving [n1, n3]; n3 then lost its disk).
        if (CONF_CHANGE_NOTES.test(view.placement)) return false;
      }
      return true;
    });
    if (safe.length === 0) return;
    const sim = this.choices.pick(safe);
    this.lostDisks++;
    this.crash(sim);
    sim.state = 'gone';
    this.trace(`${sim.id} lost its disk; the machine rejoins under a new id`);
    const fresh = await this.addNode();
    this.trace(`${sim.id}'s machine is back as ${fresh.id}`);
  }

  // ---- The end ----

  /** Heals everything, then waits (bounded) until the cluster converged. */
  private async settle(): Promise<void> {
    this.network.heal();
    this.reconnectIsolated();
    this.network.configureAll({
      lossProbability: 0,
      duplicateProbability: 0,
      reorderProbability: 0,
    });
    for (const sim of this.nodes.values()) sim.slowUntilMs = null;
    for (const sim of [...this.nodes.values()]) {
      if (sim.state === 'crashed') await this.restart(sim);
    }
    this.trace('settle: network healed, every node up, no more faults or client calls');
    const deadlineMs = this.nowMs + SETTLE_MAX_MS;
    let problem: string | null = 'not checked yet';
    while (this.nowMs < deadlineMs) {
      await this.runUntil(Math.min(deadlineMs, this.nowMs + CONVERGENCE_CHECK_MS), 'settle');
      problem = await this.convergenceProblem();
      if (problem === null) break;
    }
    if (problem !== null)
      throw new SimFailure('convergence', `${SETTLE_MAX_MS} ms after healing: ${problem}`);
    this.trace(`settle: converged ${this.nowMs - deadlineMs + SETTLE_MAX_MS} ms after healing`);
  }

  /**
   * Per partition, the view of the node that leads it in the highest term (null if no
   * running node leads it).
   */
  private leaderViews(): Map<number, GroupStatus & { node: NodeId }> {
    const best = new Map<number, GroupStatus & { node: NodeId }>();
    for (const sim of this.runningNodes()) {
      for (const view of sim.node!.status().groups) {
        if (view.role !== 'leader') continue;
        const known = best.get(view.partition);
        if (known === undefined || view.term > known.term)
          best.set(view.partition, { ...view, node: sim.id });
      }
    }
    return best;
  }

  /** What keeps the cluster from having converged, or null. */
  private async convergenceProblem(): Promise<string | null> {
    // A call still running may write between the replica comparisons below.
    if (this.pending.size > 0) return `${this.pending.size} client calls still pending`;
    const leaving = [...this.nodes.values()].filter((sim) => sim.leaving && sim.state !== 'gone');
    if (leaving.length > 0) return `${leaving.map((s) => s.id)} did not finish leaving`;
    const up = this.registry.upMembers();
    const placement = this.ring.placement(up);
    const leaders = this.leaderViews();
    const hosted = new Map<NodeId, Map<number, GroupStatus>>();
    for (const sim of this.runningNodes()) {
      hosted.set(sim.id, new Map(sim.node!.status().groups.map((v) => [v.partition, v])));
    }
    for (let p = 0; p < this.partitions; p++) {
      const target = [...placement.replicasOf(p)].sort();
      const leader = leaders.get(p);
      if (leader === undefined) return `partition ${p} has no leader (placement [${target}])`;
      const voters = [...leader.voters].sort();
      if (
        voters.join() !== target.join() ||
        leader.learners.length > 0 ||
        leader.votersOutgoing.length > 0
      ) {
        return `partition ${p}: leader ${leader.node} has voters [${voters}], learners [${leader.learners}], outgoing [${leader.votersOutgoing}]; the placement of epoch ${this.registry.snapshot.epoch} (up: ${up}) is [${target}]`;
      }
      // A new leader's commit may trail what its predecessor committed until an entry of
      // its own term commits: only a commit at its last index covers everything.
      if (leader.commit !== leader.lastIndex)
        return `partition ${p}: leader ${leader.node} committed ${leader.commit} of ${leader.lastIndex}`;
      for (const id of target) {
        const replica = hosted.get(id)?.get(p);
        if (replica === undefined) return `partition ${p}: voter ${id} hosts no replica`;
        if (replica.applied !== leader.commit)
          return `partition ${p}: ${id} applied ${replica.applied}, the leader committed ${leader.commit}`;
      }
      for (const [id, groups] of hosted) {
        if (!target.includes(id) && groups.has(p))
          return `partition ${p}: ${id} is outside its placement [${target}] but still hosts a replica`;
      }
    }
    // Removed replicas hold no data: what each store holds matches the placement.
    for (const sim of this.runningNodes()) {
      const state = await this.settleCall(sim.storage!.load(), `${sim.id} storage.load()`);
      const expected = new Set(placement.partitionsOf(sim.id));
      for (const group of state.groups.keys()) {
        // Group ids from Q up are the node's own records (tombstones), not partitions.
        if (group < this.partitions && !expected.has(group))
          return `${sim.id} still stores group ${group}, outside its partitions [${[...expected]}]`;
      }
    }
    return null;
  }

  /** Awaits a promise while the nodes run (microtasks drained, disks synced). */
  private async settleCall<T>(promise: Promise<T>, what: string): Promise<T> {
    const box: { outcome: { ok: true; value: T } | { ok: false; error: unknown } | null } = {
      outcome: null,
    };
    promise.then(
      (value) => {
        box.outcome = { ok: true, value };
      },
      (error: unknown) => {
        box.outcome = { ok: false, error };
      },
    );
    for (let round = 0; box.outcome === null && round < MAX_SETTLE_ROUNDS; round++) {
      await this.drain();
      if (box.outcome === null) await undefined;
    }
    const { outcome } = box;
    if (outcome === null) throw new SimFailure('liveness', `${what} did not settle`);
    if (!outcome.ok)
      throw new SimFailure('harness or node error', `${what} failed: ${errorText(outcome.error)}`);
    return outcome.value;
  }

  private async finalChecks(): Promise<void> {
    await this.checkReplicasAgree();
    // One linearizable get per key joins the history: every acknowledged write must
    // show in it (or be overwritten by a later one), which the checker decides.
    const targets = this.runningNodes();
    for (const key of KEYS) {
      const sim = this.choices.pick(targets);
      this.issue({
        id: this.nextOpId++,
        client: 'final',
        node: sim.id,
        kind: 'get',
        call: { kind: 'get', key },
        callMs: this.nowMs,
        deadlineMs: FINAL_GET_DEADLINE_MS,
        done: false,
      });
    }
    const untilMs = this.nowMs + FINAL_GET_DEADLINE_MS + DEADLINE_SLACK_MS;
    while (this.pending.size > 0 && this.nowMs < untilMs) {
      await this.runUntil(Math.min(untilMs, this.nowMs + BEAT_MS), 'settle');
    }
    const finals = this.history.filter((op) => op.client === 'final');
    if (finals.length !== KEYS.length) {
      throw new SimFailure(
        'durability',
        `only ${finals.length} of ${KEYS.length} final gets succeeded on a converged cluster`,
      );
    }
    const violation = this.historyViolation();
    if (violation !== null) throw violation;
    this.trace(
      `ok: ${this.history.length} operations linearizable; final values ${finals.map((op) => `${op.call.key}=${op.result?.kind === 'get' ? op.result.value : '?'}`).join(' ')}`,
    );
  }

  /**
   * Whether the client history (calls still pending count as unknown outcomes) is not
   * linearizable, or could not be decided within the budget.
   */
  private historyViolation(): SimFailure | null {
    const history = [...this.history];
    for (const op of this.pending.values()) {
      if (op.call.kind !== 'get') {
        history.push({
          client: op.client,
          callMs: op.callMs,
          returnMs: this.nowMs,
          call: op.call,
          result: null,
        });
      }
    }
    const result = checkKvHistory(history, { maxSteps: LINCHECK_MAX_STEPS });
    if (result.kind === 'violation') return new SimFailure('linearizability', result.report);
    if (result.kind === 'unknown')
      return new SimFailure('linearizability', `undecided: ${result.reason}`);
    return null;
  }

  /** Every voter of a partition holds the same value of every key of it (local reads). */
  private async checkReplicasAgree(): Promise<void> {
    const placement = this.ring.placement(this.registry.upMembers());
    for (const key of KEYS) {
      const p = this.ring.partitionOf(key);
      const values = new Map<NodeId, string | null>();
      for (const id of placement.replicasOf(p)) {
        const node = this.nodes.get(id)!.node!;
        const value = await this.settleCall(
          node.get(key, { consistency: 'local', deadlineMs: FINAL_GET_DEADLINE_MS }),
          `${id} local get(${key})`,
        );
        values.set(id, value === null ? null : textDecoder.decode(value));
      }
      if (new Set(values.values()).size > 1) {
        throw new SimFailure(
          'replica agreement',
          `partition ${p}, key ${JSON.stringify(key)}: ${[...values].map(([id, v]) => `${id}=${JSON.stringify(v)}`).join(', ')}`,
        );
      }
    }
  }

  /**
   * Closes every node still running (as a shell does on exit), so nothing of this seed
   * runs on in the process. Returns why a close did not finish, or null.
   */
  private async shutDown(): Promise<string | null> {
    let problem: string | null = null;
    for (const sim of this.nodes.values()) {
      const node = sim.node;
      if (node === null) continue;
      sim.node = null;
      sim.state = 'closing';
      try {
        await this.settleCall(node.close(), `${sim.id} close()`);
        await this.settleCall(sim.transport!.close(), `${sim.id} transport close()`);
        await this.settleCall(sim.storage!.close(), `${sim.id} storage close()`);
      } catch (e) {
        problem ??= e instanceof SimFailure ? e.detail : errorText(e);
      }
      sim.state = 'gone';
    }
    return problem;
  }

  private keepCounters(node: MeshNode): void {
    const status = node.status();
    this.droppedCounters.snapshotsInstalled += status.snapshotsInstalled;
    this.droppedCounters.recordsForwarded += status.recordsForwarded;
  }

  private stats(): MeshSimStats {
    let { snapshotsInstalled, recordsForwarded } = this.droppedCounters;
    for (const sim of this.runningNodes()) {
      const status = sim.node!.status();
      snapshotsInstalled += status.snapshotsInstalled;
      recordsForwarded += status.recordsForwarded;
    }
    return {
      nodes: this.nodes.size,
      groups: this.partitions,
      partitions: this.partitions,
      replicationFactor: this.replicationFactor,
      moves: this.moves,
      snapshotsInstalled,
      recordsForwarded,
      operations: this.history.length,
      acknowledged: this.acknowledged,
      indeterminate: this.indeterminate,
      localGets: this.localGets,
      crashes: this.crashes,
      restarts: this.restarts,
      joins: this.joins,
      leaves: this.leaves,
      lostDisks: this.lostDisks,
      downs: this.registry.changes.filter((change) => change.endsWith(MARKED_DOWN)).length,
      leaders: this.monitors.termsWithLeader(),
      registryEpoch: this.registry.snapshot.epoch,
      virtualMs: this.nowMs,
    };
  }
}

// ---- Helpers ----

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** Puts alternate between string and byte values (both are the same UTF-8 bytes). */
function putValue(call: KvCall): string | Uint8Array {
  if (call.kind !== 'put') throw new Error(`${call.kind} has no value`);
  const id = Number(call.value.slice(1));
  return id % 2 === 0 ? call.value : textEncoder.encode(call.value);
}

function describeOp(op: ClientOp): string {
  const { call } = op;
  if (call.kind === 'put')
    return `${op.kind === 'putAll' ? 'put[all]' : 'put'}(${call.key}, ${call.value})`;
  return `${op.kind === 'localGet' ? 'get[local]' : call.kind}(${call.key})`;
}

function describeResult(result: KvResult): string {
  if (result.kind === 'put') return 'ok';
  if (result.kind === 'get') return result.value === null ? 'null' : result.value;
  return result.removed ? 'removed' : 'not found';
}

function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}
