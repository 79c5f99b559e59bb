/**
 * One seed of the deterministic Raft simulation: a group of 3, 5 or 7 nodes (plus spares
 * that join later) on the simulated network, in virtual time, under a random schedule of
 * faults (delay, loss, duplication, reordering, symmetric and asymmetric partitions, an
 * isolated node, clogged links, crashes that lose what was not durable, restarts),
 * client puts/gets/deletes (reads by ReadIndex), membership changes and leadership
 * transfers. Safety invariants are checked after every step (invariants.ts); at the end
 * the network heals, the group must converge, every acknowledged write must be in every
 * replica, and the client history must be linearizable (test/lincheck).
 *
 * Nodes persist through @meshkv/storage's memory backend (node.ts): crashes lose the
 * writes still pending on a node's disk, and restarts run the real recovery path.
 *
 * Everything random comes from one mulberry32 PRNG seeded with the seed, so a seed
 * replays exactly: `pnpm sim --seed S`. The loop is async only because the store is: it
 * awaits each node's step (and the store calls inside it) before the next event, uses no
 * timers and no real I/O, so promise ordering, and with it the run, is deterministic.
 */
import {
  type ConfChange,
  ConfChangeTransition,
  ConfChangeType,
  type ConfChangeV2,
  isRaftError,
  type MemoryStorage,
  type Message,
  MessageType,
  messageTypeName,
  mulberry32,
  type NodeId,
  type Prng,
  RaftErrorCode,
} from '@meshkv/raft';
import { SimNetwork } from '@meshkv/transport/sim-network';
import {
  checkKvHistory,
  type KvCall,
  type KvHistoryOp,
  type KvResult,
  randomKvCall,
} from '../lincheck/kv.ts';
import { Choices } from './choices.ts';
import { SafetyMonitor, SimFailure } from './invariants.ts';
import { encodeContext, type NodeHost, type RaftVariant, SimNode } from './node.ts';
import { encodeCommand } from './state-machine.ts';

export interface SimOptions {
  /** Keep every trace line (for replay); otherwise only the last TRACE_TAIL_LINES. */
  readonly fullTrace?: boolean;
  /** Include every message send and delivery in the trace (very long). */
  readonly traceMessages?: boolean;
  /**
   * A deliberate bug, to show the checks catch it (tests only): gets are answered from the
   * contacted node's state machine without ReadIndex.
   */
  readonly sabotage?: 'local-reads';
}

export interface SimResult {
  readonly seed: number;
  /** Null when every check passed. */
  readonly failure: { readonly invariant: string; readonly message: string } | null;
  /** The whole trace with `fullTrace`, else its last lines. */
  readonly trace: readonly string[];
  readonly stats: {
    readonly nodes: number;
    readonly virtualMs: number;
    readonly operations: number;
    readonly acknowledged: number;
    readonly leaders: number;
    readonly crashes: number;
    /** Writes that crashes lost while they were pending on a node's disk. */
    readonly lostWrites: number;
    readonly restarts: number;
  };
}

/** Clients and chaos act on this beat; a node ticks about this often too… */
const TICK_MS = 10;
/**
 * …each at its own period in [TICK_MS − TICK_SKEW_MS, TICK_MS + TICK_SKEW_MS]: tick
 * rates then differ by up to 11/9 − 1 ≈ 22 %, within the maxTickDriftPercent (25) that
 * lease reads assume.
 */
const TICK_SKEW_MS = 1;
const MAX_TICK_DRIFT_PERCENT = 25;
/** Faults and client traffic run this long… */
const CHAOS_MS = 8_000;
/** …then the network heals, crashed nodes restart, and the group must settle within this. */
const SETTLE_MS = 6_000;
/** A client gives up on a request after this (its outcome is then unknown). */
const CLIENT_TIMEOUT_MS = 1_500;
const KEYS = ['x', 'y', 'z'];
const CLIENTS = 6;
const TRACE_TAIL_LINES = 60;
/**
 * Read contexts from this up are probes: with lease reads, reads the harness asks of
 * nodes that believe they lead, outside the client history, checked only against the
 * read-index invariant (a deposed leader serving from a broken lease is caught whether or
 * not a client reads a key written meanwhile). Client request ids stay below. (Safe
 * reads are not probed: each would cost a heartbeat round, and client reads cover them.)
 */
const FIRST_PROBE_CONTEXT = 0x8000_0000;
/** Chance per beat (percent) that each node believing it leads is probed. */
const PROBE_PERCENT = 20;
/** Packet events handled per run at most (a livelock guard; runs use ~10^5). */
const MAX_EVENTS = 5_000_000;

interface PendingOp {
  readonly client: string;
  readonly node: NodeId;
  readonly requestId: number;
  readonly call: KvCall;
  readonly callMs: number;
  readonly deadlineMs: number;
  /** What was committed (applied somewhere) when the client called. */
  readonly committedAtCall: number;
}

export function runSeed(seed: number, options: SimOptions = {}): Promise<SimResult> {
  return new Simulation(seed, options).run();
}

class Simulation implements NodeHost {
  readonly monitor = new SafetyMonitor();
  readonly prng: Prng;
  private readonly choices: Choices;
  readonly raftVariant: RaftVariant;
  readonly keys = KEYS;
  private readonly seed: number;
  private readonly options: SimOptions;
  private readonly network: SimNetwork<Message>;
  private readonly nodes = new Map<NodeId, SimNode>();
  /** Each node's tick period and next tick, in virtual ms (clock skew between nodes). */
  private readonly tickPeriodMs = new Map<NodeId, number>();
  private readonly nextTickAtMs = new Map<NodeId, number>();
  private readonly traceLines: string[] = [];
  /** Completed client operations, with the request id each carried. */
  private readonly history: { op: KvHistoryOp; requestId: number }[] = [];
  private readonly pending = new Map<number, PendingOp>();
  /** requestId → when and with what result it was first applied anywhere. */
  private readonly firstApplied = new Map<number, { atMs: number; result: KvResult }>();
  private readonly acknowledgedWrites = new Set<number>();
  private readonly idleClients: string[] = [];
  private nextRequestId = 1;
  /** Probe read context → what was committed when it was asked. */
  private readonly probes = new Map<number, number>();
  private nextProbe = FIRST_PROBE_CONTEXT;
  private crashes = 0;
  private restarts = 0;
  /** The step of the node the network just delivered a packet to, until awaited. */
  private delivery: Promise<void> | null = null;

  constructor(seed: number, options: SimOptions) {
    this.seed = seed;
    this.options = options;
    this.prng = mulberry32(seed);
    this.choices = new Choices(this.prng);
    const checkQuorum = this.choices.chance(80);
    this.raftVariant = {
      electionTick: this.choices.pick([10, 10, 20]),
      heartbeatTick: this.choices.pick([1, 2, 3]),
      preVote: this.choices.chance(80),
      checkQuorum,
      // Lease reads need CheckQuorum.
      readOnlyOption: checkQuorum && this.choices.chance(50) ? 'lease' : 'safe',
      stepDownOnRemoval: this.choices.chance(80),
      maxTickDriftPercent: MAX_TICK_DRIFT_PERCENT,
    };
    this.network = new SimNetwork<Message>({
      prng: this.prng,
      onEvent: options.traceMessages
        ? (event) => {
            if (event.kind === 'send' || event.kind === 'deliver') {
              const m = (event as { payload: Message }).payload;
              this.trace(
                `net ${event.kind} #${event.packetId} ${event.from}→${event.to} ${describeMessage(m)}`,
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

  trace(line: string): void {
    this.traceLines.push(`${String(this.nowMs).padStart(6)} ms  ${line}`);
    if (!this.options.fullTrace && this.traceLines.length > 2 * TRACE_TAIL_LINES) {
      this.traceLines.splice(0, this.traceLines.length - TRACE_TAIL_LINES);
    }
  }

  crashed(node: NodeId): void {
    this.network.setDown(node, true);
  }

  send(from: NodeId, message: Message): void {
    this.network.send(from, message.to, message);
  }

  applied(node: NodeId, requestId: number, result: KvResult): void {
    if (!this.firstApplied.has(requestId))
      this.firstApplied.set(requestId, { atMs: this.nowMs, result });
    const op = this.pending.get(requestId);
    if (op !== undefined && op.node === node) this.complete(op, result);
  }

  readReady(
    node: NodeId,
    context: number,
    index: number,
    read: (key: string) => string | null,
  ): void {
    const probe = this.probes.get(context);
    if (probe !== undefined) {
      this.probes.delete(context);
      this.monitor.checkReadIndex(node, index, probe);
      return;
    }
    const op = this.pending.get(context);
    if (op === undefined || op.node !== node || op.call.kind !== 'get') return;
    this.monitor.checkReadIndex(node, index, op.committedAtCall);
    this.complete(op, { kind: 'get', value: read(op.call.key) });
  }

  private complete(op: PendingOp, result: KvResult | null): void {
    this.pending.delete(op.requestId);
    this.idleClients.push(op.client);
    this.history.push({
      op: { client: op.client, callMs: op.callMs, returnMs: this.nowMs, call: op.call, result },
      requestId: op.requestId,
    });
    if (result !== null && op.call.kind !== 'get') this.acknowledgedWrites.add(op.requestId);
    this.trace(
      `${op.client} ← #${op.requestId} ${describeCall(op.call)} = ${result === null ? 'timeout' : describeResult(result)}`,
    );
  }

  async run(): Promise<SimResult> {
    let failure: SimResult['failure'] = null;
    let size = 3;
    try {
      size = this.choices.pick([3, 3, 3, 5, 5, 7]);
      const spares = this.choices.random(3);
      await this.setUp(size, spares);
      await this.chaos();
      await this.settle();
      await this.finalChecks();
    } catch (e) {
      if (e instanceof SimFailure) failure = { invariant: e.invariant, message: e.message };
      else if (isRaftError(e, RaftErrorCode.Invariant))
        failure = { invariant: 'raft invariant', message: String(e) };
      else
        failure = {
          invariant: 'harness or raft error',
          message: e instanceof Error ? (e.stack ?? e.message) : String(e),
        };
      this.trace(`FAILED ${failure.message}`);
    }
    const trace = this.options.fullTrace
      ? this.traceLines
      : this.traceLines.slice(-TRACE_TAIL_LINES);
    return {
      seed: this.seed,
      failure,
      trace,
      stats: {
        nodes: size,
        virtualMs: this.nowMs,
        operations: this.history.length,
        acknowledged: this.history.filter(({ op }) => op.result !== null).length,
        leaders: this.monitor.termsWithLeader(),
        crashes: this.crashes,
        lostWrites: [...this.nodes.values()].reduce((sum, node) => sum + node.lostWrites, 0),
        restarts: this.restarts,
      },
    };
  }

  private async setUp(size: number, spares: number): Promise<void> {
    const voters = Array.from({ length: size }, (_, i) => `n${i + 1}`);
    const all = [...voters, ...Array.from({ length: spares }, (_, i) => `n${size + i + 1}`)];
    const faults = {
      minDelayMs: 1 + this.choices.random(3),
      maxDelayMs: 5 + this.choices.random(40),
      lossProbability: this.choices.pick([0, 0, 0.01, 0.05, 0.1]),
      duplicateProbability: this.choices.pick([0, 0.01, 0.05]),
      reorderProbability: this.choices.pick([0, 0.1, 0.5, 1]),
    };
    this.network.configureAll(faults);
    for (const id of all) {
      const periodMs = TICK_MS - TICK_SKEW_MS + this.choices.random(2 * TICK_SKEW_MS + 1);
      this.tickPeriodMs.set(id, periodMs);
      this.nextTickAtMs.set(id, 1 + this.choices.random(periodMs));
    }
    this.trace(
      `seed ${this.seed}: voters [${voters}], spares [${all.slice(size)}], raft ${JSON.stringify(this.raftVariant)}, link faults ${JSON.stringify(faults)}, tick periods ms ${JSON.stringify(Object.fromEntries(this.tickPeriodMs))}`,
    );
    for (const id of all) {
      const node = new SimNode(id, this, voters.includes(id) ? voters : null);
      this.nodes.set(id, node);
      this.network.addNode(id, (_from, message) => {
        if (this.delivery !== null) throw new Error('a delivery was not awaited');
        this.delivery = node.receive(message);
      });
      await node.start();
    }
    for (let i = 0; i < CLIENTS; i++) this.idleClients.push(`c${i}`);
  }

  /**
   * Runs the clock to `untilMs`: packet events, each node's ticks (at its own period),
   * and on every TICK_MS beat client traffic and chaos actions.
   */
  private async runUntil(
    untilMs: number,
    clientTraffic: boolean,
    chaosAction: (() => Promise<void>) | null,
  ): Promise<void> {
    let nextBeatMs = Math.ceil((this.nowMs + 1) / TICK_MS) * TICK_MS;
    let nextActionMs = this.nowMs + 50 + this.choices.random(300);
    let events = 0;
    while (this.nowMs < untilMs) {
      const packetMs = this.network.nextEventAtMs() ?? Number.POSITIVE_INFINITY;
      let nextMs = nextBeatMs;
      for (const atMs of this.nextTickAtMs.values()) nextMs = Math.min(nextMs, atMs);
      if (packetMs <= nextMs && packetMs <= untilMs) {
        if (++events > MAX_EVENTS)
          throw new SimFailure('liveness', `more than ${MAX_EVENTS} packet events`);
        this.network.step();
        const delivery = this.delivery;
        this.delivery = null;
        await delivery;
        continue;
      }
      const stepMs = Math.min(nextMs, untilMs);
      this.network.advanceTo(stepMs);
      if (stepMs < nextMs) break;
      for (const [id, node] of this.nodes) {
        const atMs = this.nextTickAtMs.get(id)!;
        if (atMs !== stepMs) continue;
        this.nextTickAtMs.set(id, atMs + this.tickPeriodMs.get(id)!);
        if (node.isUp) await node.tick();
      }
      if (stepMs !== nextBeatMs) continue;
      nextBeatMs += TICK_MS;
      this.timeOutClients();
      if (clientTraffic) {
        await this.clientTraffic();
        if (this.raftVariant.readOnlyOption === 'lease') await this.probeLeaders();
      }
      if (chaosAction !== null && this.nowMs >= nextActionMs) {
        await chaosAction();
        nextActionMs = this.nowMs + 50 + this.choices.random(400);
      }
      if (this.nowMs % 500 === 0) this.monitor.checkLogMatching(this.logs());
    }
  }

  /** The logs of the nodes that are up (a down node's log is rebuilt when it restarts). */
  private logs(): Map<NodeId, MemoryStorage> {
    const logs = new Map<NodeId, MemoryStorage>();
    for (const [id, node] of this.nodes) {
      if (node.raftStorage !== null) logs.set(id, node.raftStorage);
    }
    return logs;
  }

  // ---- Clients ----

  private async clientTraffic(): Promise<void> {
    while (this.idleClients.length > 0 && this.choices.chance(30)) {
      const client = this.idleClients.shift()!;
      const requestId = this.nextRequestId++;
      const call = randomKvCall(this.prng, this.choices.pick(KEYS), `v${requestId}`);
      // Clients often go to a node that believes it leads: after a partition that may be
      // a deposed leader that does not know it yet (stale reads show up there).
      const leaders = [...this.nodes.values()].filter((n) => n.rawNode?.status().role === 'leader');
      const node =
        leaders.length > 0 && this.choices.chance(50)
          ? this.choices.pick(leaders)
          : this.choices.pick([...this.nodes.values()]);
      const op: PendingOp = {
        client,
        node: node.id,
        requestId,
        call,
        callMs: this.nowMs,
        deadlineMs: this.nowMs + CLIENT_TIMEOUT_MS,
        committedAtCall: this.monitor.highestApplied(),
      };
      this.trace(`${client} → ${node.id} #${requestId} ${describeCall(call)}`);
      if (!node.isUp) {
        // Connection refused: the request certainly did not run.
        this.refuse(op, 'node is down');
        continue;
      }
      this.pending.set(requestId, op);
      if (call.kind === 'get' && this.options.sabotage === 'local-reads') {
        this.complete(op, { kind: 'get', value: node.stateMachine.get(call.key) });
        continue;
      }
      try {
        await node.act((raw) =>
          call.kind === 'get'
            ? raw.readIndex(encodeContext(requestId))
            : raw.propose(encodeCommand({ requestId, call })),
        );
      } catch (e) {
        if (
          isRaftError(e, RaftErrorCode.ProposalDropped) ||
          isRaftError(e, RaftErrorCode.ReadIndexDropped)
        ) {
          // Refused up front: it never entered the log.
          this.pending.delete(requestId);
          this.refuse(op, (e as Error).message);
        } else {
          throw e;
        }
      }
    }
  }

  private async probeLeaders(): Promise<void> {
    for (const node of this.nodes.values()) {
      if (node.rawNode?.status().role !== 'leader' || !this.choices.chance(PROBE_PERCENT)) continue;
      const context = this.nextProbe++;
      // Probes lost (leader change, crash) are never answered: keep the map bounded.
      if (this.probes.size >= 10_000) this.probes.clear();
      this.probes.set(context, this.monitor.highestApplied());
      try {
        await node.act((raw) => raw.readIndex(encodeContext(context)));
      } catch (e) {
        if (!isRaftError(e, RaftErrorCode.ReadIndexDropped)) throw e;
        this.probes.delete(context);
      }
    }
  }

  private refuse(op: PendingOp, why: string): void {
    this.idleClients.push(op.client);
    this.trace(`${op.client} ← #${op.requestId} refused: ${why}`);
  }

  private timeOutClients(): void {
    for (const op of [...this.pending.values()]) {
      if (this.nowMs >= op.deadlineMs) this.complete(op, null);
    }
  }

  // ---- Faults ----

  private async chaos(): Promise<void> {
    await this.runUntil(CHAOS_MS, true, () => this.chaosAction());
  }

  private async chaosAction(): Promise<void> {
    const ids = [...this.nodes.keys()];
    const roll = this.choices.random(100);
    const durationMs = 100 + this.choices.random(1500);
    if (roll < 12) {
      const shuffled = this.choices.shuffle(ids);
      const cut = 1 + this.choices.random(ids.length - 1);
      const sides = [shuffled.slice(0, cut), shuffled.slice(cut)];
      this.network.partition(sides);
      this.trace(`partition [${sides[0]}] | [${sides[1]}]`);
    } else if (roll < 20) {
      const from = this.choices.pick(ids);
      const to = this.choices.pick(ids.filter((id) => id !== from));
      this.network.setBlocked(from, to, true);
      this.trace(`block ${from}→${to} (one way)`);
    } else if (roll < 27) {
      const node = this.leader()?.id ?? this.choices.pick(ids);
      this.network.isolate(node);
      this.trace(`isolate ${node}`);
    } else if (roll < 40) {
      this.network.heal();
      this.trace('heal');
    } else if (roll < 47) {
      const from = this.choices.pick(ids);
      const to = this.choices.pick(ids.filter((id) => id !== from));
      this.network.clog(from, to, durationMs);
      this.trace(`clog ${from}→${to} for ${durationMs} ms`);
    } else if (roll < 60) {
      const up = [...this.nodes.values()].filter((n) => n.isUp);
      if (up.length === 0) return;
      const node = this.choices.chance(30)
        ? (this.leader() ?? this.choices.pick(up))
        : this.choices.pick(up);
      if (this.choices.chance(25)) {
        node.crashAtNextPersist = this.choices.chance(50) ? 'write pending' : 'write durable';
        this.trace(`${node.id} will crash at its next persist (${node.crashAtNextPersist})`);
      } else {
        this.crash(node);
      }
      this.crashes++;
    } else if (roll < 72) {
      const down = [...this.nodes.values()].filter((n) => !n.isUp);
      if (down.length > 0) await this.restart(this.choices.pick(down));
    } else if (roll < 80) {
      await this.transferLeadership();
    } else if (roll < 92) {
      await this.changeMembership();
    }
  }

  private crash(node: SimNode): void {
    const lost = node.crash();
    this.network.setDown(node.id, true);
    this.trace(`${node.id} crashes (${lost} writes pending on its disk lost)`);
  }

  private async restart(node: SimNode): Promise<void> {
    this.network.setDown(node.id, false);
    await node.start();
    this.restarts++;
    this.trace(
      `${node.id} restarts (term ${node.rawNode!.status().term}, commit ${node.rawNode!.status().commit}, applied ${node.applied})`,
    );
  }

  /** The up node that believes it leads the highest term, if any. */
  private leader(): SimNode | undefined {
    let best: SimNode | undefined;
    let bestTerm = -1;
    for (const node of this.nodes.values()) {
      const status = node.rawNode?.status();
      if (status?.role === 'leader' && status.term > bestTerm) {
        best = node;
        bestTerm = status.term;
      }
    }
    return best;
  }

  private async transferLeadership(): Promise<void> {
    const leader = this.leader();
    if (leader === undefined) return;
    const voters = leader.rawNode!.status().config.voters.filter((id) => id !== leader.id);
    if (voters.length === 0) return;
    const target = this.choices.pick(voters);
    this.trace(`transfer leadership ${leader.id} → ${target}`);
    try {
      await leader.act((raw) => raw.transferLeader(target));
    } catch (e) {
      if (!isRaftError(e)) throw e;
      this.trace(`transfer refused: ${(e as Error).message}`);
    }
  }

  private async changeMembership(): Promise<void> {
    const leader = this.leader();
    if (leader === undefined) return;
    const config = leader.rawNode!.status().config;
    if (config.votersOutgoing.length > 0) return; // joint: raft leaves it on its own (auto)
    const members = new Set([...config.voters, ...config.learners]);
    const outsiders = [...this.nodes.keys()].filter((id) => !members.has(id));
    // Only changes that keep 3 to 7 voters; pick among those that apply now.
    const options: { what: string; change: ConfChange | ConfChangeV2 }[] = [];
    if (outsiders.length > 0) {
      const id = this.choices.pick(outsiders);
      options.push({
        what: `add learner ${id}`,
        change: { type: ConfChangeType.AddLearnerNode, nodeId: id },
      });
    }
    if (config.learners.length > 0 && config.voters.length < 7) {
      const id = this.choices.pick(config.learners);
      options.push({ what: `promote ${id}`, change: { type: ConfChangeType.AddNode, nodeId: id } });
    }
    if (config.voters.length > 3) {
      const id = this.choices.pick(config.voters);
      options.push({
        what: `remove voter ${id}`,
        change: { type: ConfChangeType.RemoveNode, nodeId: id },
      });
      const demoted = this.choices.pick(config.voters);
      options.push({
        what: `demote ${demoted} to learner`,
        change: { type: ConfChangeType.AddLearnerNode, nodeId: demoted },
      });
    }
    if (config.learners.length > 0) {
      // Joint consensus: swap a learner in for a voter in one step.
      const incoming = this.choices.pick(config.learners);
      const outgoing = this.choices.pick(config.voters);
      options.push({
        what: `joint swap: ${incoming} in, ${outgoing} out`,
        change: {
          transition: ConfChangeTransition.Auto,
          changes: [
            { type: ConfChangeType.AddNode, nodeId: incoming },
            { type: ConfChangeType.RemoveNode, nodeId: outgoing },
          ],
        },
      });
    }
    if (options.length === 0) return;
    const { what, change } = this.choices.pick(options);
    this.trace(`${leader.id} proposes: ${what}`);
    try {
      await leader.act((raw) => raw.proposeConfChange(change));
    } catch (e) {
      if (!isRaftError(e, RaftErrorCode.ProposalDropped)) throw e;
      this.trace(`membership change refused: ${(e as Error).message}`);
    }
  }

  // ---- The end ----

  private async settle(): Promise<void> {
    this.network.heal();
    this.network.configureAll({
      lossProbability: 0,
      duplicateProbability: 0,
      maxDelayMs: 10,
      minDelayMs: 1,
    });
    for (const node of this.nodes.values()) {
      node.crashAtNextPersist = null;
      if (!node.isUp) await this.restart(node);
    }
    // A replica removed while partitioned keeps running and campaigning here: raft must
    // keep it from disrupting the group (members ignore its vote requests), in every
    // PreVote/CheckQuorum variant; MeshNode's removal of such replicas is not modelled.
    this.trace('settle: network healed, every node up, no more faults or client requests');
    await this.runUntil(CHAOS_MS + SETTLE_MS, false, null);
  }

  private async finalChecks(): Promise<void> {
    for (const op of [...this.pending.values()]) this.complete(op, null);
    this.monitor.checkLogMatching(this.logs());
    const leader = this.leader();
    if (leader === undefined)
      throw new SimFailure('liveness', `no leader ${SETTLE_MS} ms after the network healed`);
    const status = leader.rawNode!.status();
    const members = [...status.config.voters, ...status.config.learners];
    for (const id of members) {
      const node = this.nodes.get(id)!;
      if (node.applied !== status.commit) {
        throw new SimFailure(
          'liveness',
          `${id} applied ${node.applied} but leader ${leader.id} committed ${status.commit}, ${SETTLE_MS} ms after healing`,
        );
      }
      const fingerprint = node.stateMachine.fingerprint();
      if (fingerprint !== leader.stateMachine.fingerprint()) {
        throw new SimFailure(
          'state machine safety',
          `${id} and ${leader.id} hold different data at index ${status.commit}`,
        );
      }
      for (const requestId of this.acknowledgedWrites) {
        if (!node.stateMachine.hasApplied(requestId)) {
          throw new SimFailure(
            'durability',
            `acknowledged write #${requestId} is missing from ${id}`,
          );
        }
      }
      await node.checkStore();
    }
    const history = this.history.map((entry) => this.resolveOutcome(entry));
    const result = checkKvHistory(history, { maxSteps: 20_000_000 });
    if (result.kind === 'violation') throw new SimFailure('linearizability', result.report);
    if (result.kind === 'unknown')
      throw new SimFailure('linearizability', `undecided: ${result.reason}`);
    this.trace(
      `ok: ${history.length} client operations linearizable; ${this.monitor.termsWithLeader()} terms had a leader`,
    );
  }

  /**
   * A timed-out write whose entry was applied did take effect, no later than its first
   * application anywhere; its result is what the state machine computed. Giving the
   * checker that instead of "unknown" keeps the search small and the check as strict.
   */
  private resolveOutcome({ op, requestId }: { op: KvHistoryOp; requestId: number }): KvHistoryOp {
    if (op.result !== null || op.call.kind === 'get') return op;
    const applied = this.firstApplied.get(requestId);
    if (applied === undefined) return op;
    return { ...op, returnMs: Math.max(op.callMs, applied.atMs), result: applied.result };
  }
}

function describeCall(call: KvCall): string {
  return call.kind === 'put' ? `put(${call.key}, ${call.value})` : `${call.kind}(${call.key})`;
}

function describeResult(result: KvResult): string {
  if (result.kind === 'put') return 'ok';
  if (result.kind === 'get') return result.value === null ? 'null' : result.value;
  return result.removed ? 'removed' : 'not found';
}

function describeMessage(m: Message): string {
  const parts = [`${messageTypeName(m.type)} t${m.term}`];
  if (m.type === MessageType.App || m.type === MessageType.AppResp)
    parts.push(`i${m.index} lt${m.logTerm} n${m.entries.length}`);
  if (m.snapshot !== null) {
    parts.push(
      `snap i${m.snapshot.metadata.index} @${m.snapshot.offsetBytes}+${m.snapshot.data.byteLength}/${m.snapshot.totalBytes}`,
    );
  }
  if (m.type === MessageType.SnapResp) parts.push(`i${m.index}`);
  if (m.commit > 0) parts.push(`c${m.commit}`);
  if (m.reject) parts.push('reject');
  return parts.join(' ');
}
