/**
 * A deterministic in-test network of RawNodes (like etcd-io/raft's `network` in
 * raft_test.go): every node persists its Ready into a MemoryStorage, applies committed
 * entries to a list state machine, and sends messages through filters (cuts, isolation,
 * seeded random loss, dropped types). Safety is checked on every step: one leader per
 * term, and no two different entries applied at the same index anywhere.
 */
import { expect } from 'chai';
import {
  type Config,
  type ConfState,
  decodeConfChange,
  type Entry,
  EntryType,
  MemoryStorage,
  type Message,
  type MessageType,
  mulberry32,
  type NodeId,
  type Prng,
  RawNode,
  type ReadState,
  type Ready,
  type Snapshot,
} from '../src/index.ts';

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

export function confStateOf(voters: NodeId[], learners: NodeId[] = []): ConfState {
  return { voters, learners, votersOutgoing: [], learnersNext: [], autoLeave: false };
}

export type NodeOptions = Partial<Omit<Config, 'id' | 'groupId' | 'storage' | 'random'>>;

/** One simulated host: its RawNode, durable storage and applied state machine. */
export class TestNode {
  raw: RawNode;
  /** Applied application data, in log order (empty entries skipped). */
  state: string[] = [];
  appliedIndex = 0;
  confState: ConfState;
  readStates: ReadState[] = [];
  /** Every Ready's nonMemberCandidates, in order. */
  nonMemberCandidates: NodeId[] = [];
  /** Every Ready's softState role history, for assertions. */
  readonly roles: string[] = [];

  constructor(
    readonly id: NodeId,
    readonly storage: MemoryStorage,
    private readonly options: NodeOptions,
    private readonly seed: number,
    readonly groupId = 1,
  ) {
    this.confState = storage.initialState().confState;
    this.appliedIndex = storage.snapshot().metadata.index;
    this.raw = this.build();
  }

  private build(): RawNode {
    return new RawNode({
      id: this.id,
      groupId: this.groupId,
      storage: this.storage,
      random: mulberry32(this.seed),
      electionTick: 10,
      heartbeatTick: 1,
      ...this.options,
      applied: this.appliedIndex,
    });
  }

  /** Crash and restart: volatile state is lost; the state machine restarts from the snapshot. */
  restart(): void {
    const snap = this.storage.snapshot();
    this.state = snap.data.byteLength > 0 ? (JSON.parse(dec(snap.data)) as string[]) : [];
    this.appliedIndex = snap.metadata.index;
    this.confState = snap.metadata.confState;
    this.readStates = [];
    this.raw = this.build();
  }

  /** Records a snapshot of the applied state and compacts the log up to it. */
  snapshotAndCompact(): Snapshot {
    const snap = this.storage.createSnapshot(
      this.appliedIndex,
      this.confState,
      enc(JSON.stringify(this.state)),
    );
    this.storage.compact(this.appliedIndex);
    return snap;
  }

  get status() {
    return this.raw.status();
  }
}

export interface ClusterOptions extends NodeOptions {
  /** Seed for node PRNGs and message loss; printed by tests on failure. */
  seed?: number;
  learners?: NodeId[];
  /** Ids that start with empty storage (no configuration): they join via snapshot. */
  blank?: NodeId[];
}

export class Network {
  readonly nodes = new Map<NodeId, TestNode>();
  /** Messages delivered in order of sending; filters apply at delivery time. */
  private queue: Message[] = [];
  private readonly cuts = new Set<string>();
  private readonly lossRate = new Map<string, number>();
  private readonly ignored = new Set<MessageType>();
  /** Probability that a message is delivered twice / postponed to a later round. */
  private duplicateRate = 0;
  private delayRate = 0;
  private readonly down = new Set<NodeId>();
  /** Optional hook to inspect or rewrite each message; return null to drop it. */
  intercept: ((m: Message) => Message | null) | null = null;
  /** Optional hook to inspect each Ready as it is taken, before it is persisted or advanced. */
  onReady: ((n: TestNode, rd: Ready) => void) | null = null;
  readonly random: Prng;
  readonly leaderOfTerm = new Map<number, NodeId>();
  readonly appliedAt = new Map<number, string>();
  /** All messages delivered so far (for counting in tests). */
  readonly delivered: Message[] = [];
  readonly seed: number;

  constructor(
    ids: NodeId[],
    readonly options: ClusterOptions = {},
  ) {
    this.seed = options.seed ?? 1;
    this.random = mulberry32(this.seed * 7919 + 13);
    const { seed: _s, learners = [], blank = [], ...nodeOptions } = options;
    const voters = ids.filter((id) => !learners.includes(id));
    ids.forEach((id, i) => {
      const storage = blank.includes(id)
        ? new MemoryStorage()
        : new MemoryStorage({ confState: confStateOf(voters, learners) });
      this.nodes.set(id, new TestNode(id, storage, nodeOptions, this.seed * 1000 + i + 1));
    });
  }

  node(id: NodeId): TestNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** Adds a node with empty storage (to be added by a conf change and caught up). */
  addBlank(id: NodeId, options: NodeOptions = {}): TestNode {
    const n = new TestNode(
      id,
      new MemoryStorage(),
      { ...this.nodeOptions(), ...options },
      this.seed * 1000 + 500 + this.nodes.size,
    );
    this.nodes.set(id, n);
    return n;
  }

  private nodeOptions(): NodeOptions {
    const { seed: _s, learners: _l, blank: _b, ...rest } = this.options;
    return rest;
  }

  leader(): TestNode | undefined {
    const leaders = [...this.nodes.values()].filter(
      (n) => !this.down.has(n.id) && n.status.role === 'leader',
    );
    if (leaders.length === 0) return undefined;
    // Stale leaders of older terms may linger in a minority; the newest term wins.
    return leaders.reduce((a, b) => (b.status.term > a.status.term ? b : a));
  }

  /** Processes one Ready of `n`, as a host would: persist, send, apply, advance. */
  private handleReady(n: TestNode): void {
    const rd = n.raw.ready();
    this.onReady?.(n, rd);
    if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
    n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
    if (rd.softState) {
      n.roles.push(rd.softState.role);
      if (rd.softState.role === 'leader') {
        const term = n.raw.status().term;
        const other = this.leaderOfTerm.get(term);
        expect(
          other === undefined || other === n.id,
          `two leaders in term ${term}: ${other} and ${n.id}`,
        ).to.equal(true);
        this.leaderOfTerm.set(term, n.id);
      }
    }
    this.queue.push(...rd.messages);
    if (rd.snapshot) {
      const data = rd.snapshot.data;
      n.state = data.byteLength > 0 ? (JSON.parse(dec(data)) as string[]) : [];
      n.appliedIndex = rd.snapshot.metadata.index;
      n.confState = rd.snapshot.metadata.confState;
    }
    for (const e of rd.committedEntries) this.apply(n, e);
    n.readStates.push(...rd.readStates);
    n.nonMemberCandidates.push(...rd.nonMemberCandidates);
    n.raw.advance();
  }

  private apply(n: TestNode, e: Entry): void {
    expect(e.index, `${n.id} applies out of order`).to.equal(n.appliedIndex + 1);
    const key = `${e.term}:${e.type}:${dec(e.data)}`;
    const seen = this.appliedAt.get(e.index);
    expect(
      seen === undefined || seen === key,
      `index ${e.index} applied as ${seen} and ${key}`,
    ).to.equal(true);
    this.appliedAt.set(e.index, key);
    n.appliedIndex = e.index;
    if (e.type === EntryType.ConfChange) {
      n.confState = n.raw.applyConfChange(decodeConfChange(e.data));
    } else if (e.data.byteLength > 0) {
      n.state.push(dec(e.data));
    }
  }

  private deliverable(m: Message): Message | null {
    if (this.down.has(m.to) || this.down.has(m.from)) return null;
    if (this.cuts.has(`${m.from}>${m.to}`)) return null;
    if (this.ignored.has(m.type)) return null;
    const loss = this.lossRate.get(`${m.from}>${m.to}`) ?? this.lossRate.get('*') ?? 0;
    if (loss > 0 && this.chance(loss)) return null;
    return this.intercept ? this.intercept(m) : m;
  }

  private chance(rate: number): boolean {
    return this.random.nextInt(1_000_000) < rate * 1_000_000;
  }

  /** Loses, duplicates and reorders messages at the given rates (seeded). */
  unreliable(rates: { loss?: number; duplicate?: number; delay?: number } = {}): void {
    this.loss(rates.loss ?? 0.1);
    this.duplicateRate = rates.duplicate ?? 0.05;
    this.delayRate = rates.delay ?? 0.2;
  }

  /** Processes Readies and delivers messages until nothing is left to do. */
  stabilize(maxRounds = 10_000): void {
    for (let round = 0; round < maxRounds; round++) {
      let busy = false;
      for (const n of this.nodes.values()) {
        if (this.down.has(n.id) || !n.raw.hasReady()) continue;
        busy = true;
        this.handleReady(n);
      }
      const batch = this.queue;
      this.queue = [];
      for (const m of batch) {
        if (this.delayRate > 0 && this.chance(this.delayRate)) {
          // Postponed behind later messages: this is how messages get reordered.
          this.queue.push(m);
          busy = true;
          continue;
        }
        if (this.duplicateRate > 0 && this.chance(this.duplicateRate)) this.queue.push(m);
        const d = this.deliverable(m);
        if (!d) continue;
        busy = true;
        this.delivered.push(d);
        const target = this.nodes.get(d.to);
        if (!target) continue;
        try {
          target.raw.step(d);
        } catch (e) {
          // A host drops messages from non-members; anything else is a bug.
          if (!(e instanceof Error && e.message.startsWith('StepPeerNotFound'))) throw e;
        }
      }
      if (!busy) return;
    }
    throw new Error('network did not stabilize');
  }

  /** Delivers only the messages queued now, without processing further Readies. */
  tick(ids: NodeId[] = [...this.nodes.keys()], ticks = 1): void {
    for (let i = 0; i < ticks; i++) {
      for (const id of ids) if (!this.down.has(id)) this.node(id).raw.tick();
      this.stabilize();
    }
  }

  /** Ticks every live node until `done` holds (at most `maxTicks`). */
  tickUntil(done: () => boolean, maxTicks = 1000): void {
    for (let i = 0; i < maxTicks; i++) {
      if (done()) return;
      this.tick();
    }
    expect(done(), `condition not reached within ${maxTicks} ticks (seed ${this.seed})`).to.equal(
      true,
    );
  }

  /** Ticks until some live node leads with a quorum behind it; returns it. */
  electLeader(maxTicks = 1000): TestNode {
    this.tickUntil(() => {
      const l = this.leader();
      return (
        l !== undefined &&
        this.liveIds().every((id) => this.node(id).status.lead === l.id || !this.reaches(l.id, id))
      );
    }, maxTicks);
    return this.leader()!;
  }

  private reaches(a: NodeId, b: NodeId): boolean {
    return !this.cuts.has(`${a}>${b}`) && !this.cuts.has(`${b}>${a}`);
  }

  liveIds(): NodeId[] {
    return [...this.nodes.keys()].filter((id) => !this.down.has(id));
  }

  campaign(id: NodeId): void {
    this.node(id).raw.campaign();
    this.stabilize();
  }

  propose(id: NodeId, data: string): void {
    this.node(id).raw.propose(enc(data));
    this.stabilize();
  }

  cut(a: NodeId, b: NodeId): void {
    this.cuts.add(`${a}>${b}`);
    this.cuts.add(`${b}>${a}`);
  }

  /** Cuts `id` off from every other node. */
  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) if (other !== id) this.cut(id, other);
  }

  /** Removes every cut, loss, duplication, delay and ignored type. */
  heal(): void {
    this.cuts.clear();
    this.lossRate.clear();
    this.ignored.clear();
    this.duplicateRate = 0;
    this.delayRate = 0;
  }

  /** Drops messages from `from` to `to` ('*' for all links) with probability `rate`. */
  loss(rate: number, from = '*', to = '*'): void {
    this.lossRate.set(from === '*' ? '*' : `${from}>${to}`, rate);
  }

  ignore(type: MessageType): void {
    this.ignored.add(type);
  }

  /** Stops a node: its messages are lost; storage survives. */
  crash(id: NodeId): void {
    this.down.add(id);
  }

  /** Restarts a crashed (or running) node from its storage. */
  restart(id: NodeId): void {
    this.down.delete(id);
    this.node(id).restart();
  }

  isDown(id: NodeId): boolean {
    return this.down.has(id);
  }

  /** Number of live nodes whose state machine holds `data`. */
  appliedCount(data: string): number {
    return this.liveIds().filter((id) => this.node(id).state.includes(data)).length;
  }

  /**
   * The end of a randomized scenario: heals the network, restarts crashed nodes, waits for
   * a leader with a settled configuration, writes a last value and checks that every
   * member applied the same history.
   */
  finalAgreement(): void {
    this.heal();
    for (const id of this.nodes.keys()) if (this.isDown(id)) this.restart(id);
    this.tickUntil(() => this.leader()?.confState.votersOutgoing.length === 0, 3000);
    const leader = this.leader()!;
    this.propose(leader.id, 'final');
    const members = [...leader.confState.voters, ...leader.confState.learners];
    this.tickUntil(() => members.every((id) => this.node(id).state.includes('final')), 3000);
    const histories = new Set(members.map((id) => this.node(id).state.join(',')));
    expect(histories.size, 'members applied the same history').to.equal(1);
  }

  /** Drops queued, undelivered messages (as a crash of the network would). */
  dropQueued(): void {
    this.queue = [];
  }
}

/**
 * Storage holding `voters` as of index 0, so the log starts at index 1 as in the
 * paper's figures (real groups bootstrap at index 1, see bootstrapSnapshot).
 */
export function storageAtZero(voters: NodeId[], learners: NodeId[] = []): MemoryStorage {
  const storage = new MemoryStorage();
  storage.applySnapshot({
    metadata: { index: 0, term: 0, confState: confStateOf(voters, learners) },
    data: new Uint8Array(0),
  });
  return storage;
}

/** A single RawNode (PreVote off unless asked) for unit-style tests that inspect messages. */
export function singleNode(
  id: NodeId,
  voters: NodeId[],
  options: NodeOptions & { storage?: MemoryStorage; seed?: number } = {},
): { raw: RawNode; storage: MemoryStorage } {
  const { storage: given, seed = 1, ...rest } = options;
  const storage = given ?? storageAtZero(voters);
  const raw = new RawNode({
    id,
    groupId: 1,
    storage,
    random: mulberry32(seed),
    electionTick: 10,
    heartbeatTick: 1,
    preVote: false,
    ...rest,
  });
  return { raw, storage };
}

/** Persists a single node's Ready and returns its messages (and the Ready). */
export function drain(raw: RawNode, storage: MemoryStorage): Message[] {
  const out: Message[] = [];
  while (raw.hasReady()) {
    const rd = raw.ready();
    if (rd.snapshot) storage.applySnapshot(rd.snapshot);
    storage.append(rd.entries);
    if (rd.hardState) storage.setHardState(rd.hardState);
    out.push(...rd.messages);
    raw.advance();
  }
  return out;
}

export function entry(index: number, term: number, data = ''): Entry {
  return { index, term, type: EntryType.Normal, data: enc(data) };
}

/**
 * Seeds for randomized scenarios: `defaults`, or those in RAFT_SEEDS ("1-500" or
 * "3,17,29") to search more of the space. Failing tests print the seed to replay.
 */
export function scenarioSeeds(defaults: number[]): number[] {
  const spec = process.env.RAFT_SEEDS;
  if (!spec) return defaults;
  const range = /^(\d+)-(\d+)$/.exec(spec);
  if (range) {
    const [from, to] = [Number(range[1]), Number(range[2])];
    return Array.from({ length: to - from + 1 }, (_, i) => from + i);
  }
  return spec.split(',').map(Number);
}

/** Runs a randomized scenario for each seed, naming the seed in any failure. */
export function forEachSeed(defaults: number[], scenario: (seed: number) => void): void {
  for (const seed of scenarioSeeds(defaults)) {
    try {
      scenario(seed);
    } catch (e) {
      throw new Error(`seed ${seed} (replay: RAFT_SEEDS=${seed}): ${(e as Error).message}`);
    }
  }
}

/** Every live node that applied something new snapshots its state and compacts its log. */
export function compactAll(net: Network): void {
  for (const id of net.liveIds()) {
    const n = net.node(id);
    if (n.appliedIndex > n.storage.snapshot().metadata.index) n.snapshotAndCompact();
  }
}
