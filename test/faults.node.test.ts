// Faults of real `meshkv node` processes over real WebRTC (issue 12, "Tests"): the
// signaling CLI and Node peers as child processes on temporary data directories, driven
// over their HTTP APIs by clients in this process. Processes are killed by pid (SIGKILL,
// the kill -9 of the issue) and restarted on their data directories; the network
// partition is made in the network (each peer in a network namespace of its own, its link
// cut with `ip link set down`, or shaped with tc). Every test waits on conditions with
// generous deadlines; none asserts a timing. Needs the private network namespace and root
// (`pnpm test`, or scripts/netns-run.sh). Here rather than in packages/node/test because
// it checks histories with test/lincheck (the `test` project references the node
// package, not the other way round).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { NodeStatus } from '@meshkv/node';
import { mulberry32, type Prng } from '@meshkv/raft';
import { Ring } from '@meshkv/ring';
import { expect } from 'chai';
import {
  joinedAs,
  type Proc,
  ProcessSet,
  peerStatus,
  registryStatus,
  type SignalingProcess,
  spawnPeer,
  startSignaling,
  waitForHttp,
  waitUntil,
} from '../packages/node/test/support/processes.ts';
import { type HttpKvAnswer, httpKvAnswer } from './lincheck/http-answer.ts';
import { checkKvHistory, type KvHistoryOp } from './lincheck/kv.ts';

const TOKEN = 'faults-test-token';
/** Few partitions: every move, election and catch-up is per partition. */
const PARTITIONS = 8;
const REPLICAS = 3;
/** The server-side deadline of a client request (`?timeout=`). */
const REQUEST_TIMEOUT_MS = 4_000;
/** A client gives up on an answer after this (an unknown outcome). */
const CLIENT_ABORT_MS = 15_000;
/** Bound of a load's client: a few hundred operations per load. */
const MAX_OPS_PER_CLIENT = 200;
/**
 * Bound of a Reader: enough to read through every phase of the membership test, however
 * fast the reads are answered (6,000 ran out once in CI while every step still passed).
 */
const MAX_READS = 100_000;
const SEED = Number(process.env.MESHKV_FAULTS_SEED ?? Date.now() % 1_000_000);

interface Peer {
  readonly name: string;
  readonly dataDir: string;
  readonly leave: boolean;
  /** Network namespace and addresses (the multi-namespace test); loopback otherwise. */
  readonly network?: PeerNetwork;
  proc: Proc;
  url: string;
  id: string;
  /** False from just before the test stops it: clients stop choosing it. */
  serving: boolean;
}

interface PeerNetwork {
  readonly netns: string;
  /** Address of its HTTP API and of its signaling traffic (the control network). */
  readonly controlAddress: string;
  /** Address ICE binds to (the mesh network: the one the test cuts). */
  readonly meshAddress: string;
  /** The host end of its mesh veth, in the test's namespace. */
  readonly meshLink: string;
}

interface KvAnswer {
  readonly status: number;
  readonly body: string;
  readonly code: string | null;
}

/** One request to a peer's HTTP API; rejects on a network error or the client's abort. */
async function kv(
  peer: Peer,
  method: 'GET' | 'PUT' | 'DELETE',
  key: string,
  options: { value?: string; query?: string } = {},
): Promise<KvAnswer> {
  const query = options.query ?? `timeout=${REQUEST_TIMEOUT_MS}`;
  const response = await fetch(`${peer.url}/kv/${encodeURIComponent(key)}?${query}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}` },
    body: options.value,
    signal: AbortSignal.timeout(CLIENT_ABORT_MS),
  });
  const body = await response.text();
  let code: string | null = null;
  if (response.status !== 200) {
    try {
      code = (JSON.parse(body) as { code?: string }).code ?? null;
    } catch {
      code = null;
    }
  }
  return { status: response.status, body, code };
}

interface ClusterOptions {
  /** The signaling server's grace period before a disconnected member is marked down. */
  readonly gracePeriodMs?: number;
  readonly signalingHost?: string;
  /** The network namespace and addresses of the peer of each index. */
  readonly network?: (index: number) => PeerNetwork;
}

/** A cluster of real processes: one signaling server and its peers. */
class Cluster {
  readonly processes = new ProcessSet();
  readonly peers: Peer[] = [];
  signaling!: SignalingProcess;
  private ring!: Ring;

  constructor(
    readonly dir: string,
    private readonly options: ClusterOptions = {},
  ) {}

  async startSignaling(): Promise<void> {
    this.signaling = await startSignaling(
      {
        dataDir: join(this.dir, 'signaling'),
        token: TOKEN,
        partitions: PARTITIONS,
        replicas: REPLICAS,
        gracePeriodMs: this.options.gracePeriodMs,
        host: this.options.signalingHost,
      },
      this.processes.track,
    );
    const { settings } = await registryStatus(this.signaling.url);
    this.ring = new Ring(settings);
  }

  /** Starts a new peer on a fresh data directory; resolves once it serves HTTP. */
  async addPeer(options: { leave?: boolean } = {}): Promise<Peer> {
    const index = this.peers.length;
    const name = `peer-${index + 1}`;
    const spec = {
      name,
      dataDir: join(this.dir, name),
      leave: options.leave === true,
      network: this.options.network?.(index),
    };
    const peer: Peer = { ...spec, proc: this.spawn(spec), url: '', id: '', serving: false };
    this.peers.push(peer);
    await this.ready(peer);
    return peer;
  }

  /** Restarts a stopped `peer` on its data directory; resolves once it serves HTTP. */
  async start(peer: Peer): Promise<void> {
    expect(peer.proc.running, `${peer.name} still runs`).to.equal(false);
    peer.proc = this.spawn(peer);
    await this.ready(peer);
  }

  private spawn(peer: Pick<Peer, 'name' | 'dataDir' | 'leave' | 'network'>): Proc {
    const network = peer.network;
    return this.processes.track(
      spawnPeer({
        signalingUrl: this.signaling.url,
        token: TOKEN,
        dataDir: peer.dataDir,
        name: peer.name,
        leave: peer.leave,
        ...(network === undefined
          ? {}
          : {
              netns: network.netns,
              http: `${network.controlAddress}:0`,
              iceBind: network.meshAddress,
            }),
      }),
    );
  }

  /** Waits until `peer`'s process serves HTTP, and checks the id it joined under. */
  private async ready(peer: Peer): Promise<void> {
    peer.url = await waitForHttp(peer.proc);
    const joined = joinedAs(peer.proc.stdout);
    expect(joined, peer.proc.stdout).to.not.equal(null);
    if (peer.id !== '') expect(joined!.id, `${peer.name} rejoins under its id`).to.equal(peer.id);
    peer.id = joined!.id;
    peer.serving = true;
  }

  /** Stops `peer`'s process by pid with `signal`; resolves with its exit code. */
  async stop(peer: Peer, signal: NodeJS.Signals): Promise<number | null> {
    peer.serving = false;
    return peer.proc.stop(signal);
  }

  serving(): Peer[] {
    return this.peers.filter((peer) => peer.serving);
  }

  partitionOf(key: string): number {
    return this.ring.partitionOf(key);
  }

  /** `/status` of every serving peer. */
  async statuses(): Promise<Map<Peer, NodeStatus>> {
    const peers = this.serving();
    const all = await Promise.all(peers.map((peer) => peerStatus(peer.url, TOKEN)));
    return new Map(peers.map((peer, i) => [peer, all[i]!]));
  }

  /** The leader of each partition that a serving peer sees leading it (the highest term). */
  async leaders(): Promise<Map<number, { peer: Peer; commit: number }>> {
    const found = new Map<number, { peer: Peer; commit: number; term: number }>();
    for (const [peer, status] of await this.statuses()) {
      for (const group of status.groups) {
        if (group.role !== 'leader') continue;
        const seen = found.get(group.partition);
        if (seen === undefined || seen.term < group.term) {
          found.set(group.partition, { peer, commit: group.commit, term: group.term });
        }
      }
    }
    return found;
  }

  /**
   * Waits until every partition has exactly the ring's replicas over the registry's `up`
   * members (each of them a serving peer): its leader's configuration is that set (no
   * learner, no joint), each of them hosts it initialized, and no other serving peer
   * hosts it. Resolves with the placement's members.
   */
  async waitPlaced(what: string, expectedUp: number): Promise<string[]> {
    let last: unknown = null;
    return waitUntil(
      async () => {
        const registry = await registryStatus(this.signaling.url);
        const up = registry.members.filter((m) => m.state === 'up').map((m) => m.nodeId);
        const statuses = await this.statuses();
        last = {
          up,
          epoch: registry.epoch,
          groups: [...statuses].map(([peer, s]) => ({
            peer: peer.id,
            epoch: s.epoch,
            groups: s.groups.map((g) => [
              g.partition,
              g.role,
              g.voters.join(','),
              g.learners.join(','),
              g.initialized,
              g.installingSnapshot,
              g.placement,
              g.followers.map((f) => `${f.id}:${f.state}:${f.match}`).join(' '),
            ]),
          })),
        };
        if (up.length !== expectedUp) return undefined;
        const byId = new Map([...statuses].map(([peer, s]) => [peer.id, s]));
        if (!up.every((id) => byId.has(id))) return undefined;
        const placement = this.ring.placement(up);
        for (let partition = 0; partition < PARTITIONS; partition++) {
          const expected = [...placement.replicasOf(partition)].sort();
          const hosts = [...byId]
            .filter(([, s]) => s.groups.some((g) => g.partition === partition))
            .map(([id]) => id)
            .sort();
          if (hosts.join() !== expected.join()) return undefined;
          const groups = expected.map(
            (id) => byId.get(id)!.groups.find((g) => g.partition === partition)!,
          );
          const leader = groups.find((g) => g.role === 'leader');
          if (leader === undefined) return undefined;
          if ([...leader.voters].sort().join() !== expected.join()) return undefined;
          if (leader.learners.length > 0 || leader.votersOutgoing.length > 0) return undefined;
          if (!groups.every((g) => g.initialized && !g.installingSnapshot)) return undefined;
        }
        return up;
      },
      what,
      () => last,
    );
  }

  /** Kills every process still running, by pid. */
  async killAll(): Promise<void> {
    for (const peer of this.peers) peer.serving = false;
    await this.processes.killAll();
  }

  state(): object {
    return {
      seed: SEED,
      peers: this.peers.map((p) => ({ name: p.name, id: p.id, url: p.url })),
      processes: this.processes.state(),
    };
  }
}

/**
 * Clients in this process writing and reading through the serving peers, each recording
 * its operations (invoke and response times on one clock) for test/lincheck. Half the
 * writes are puts of keys written once (`d/…`: none may be lost), the rest random puts,
 * gets and deletes of a few shared keys. A request that times out or whose connection
 * fails has an unknown outcome; a refusal that promises nothing was done (503, 4xx) is
 * left out of the history.
 */
class Load {
  readonly history: KvHistoryOp[] = [];
  /** Keys written once, by value, whose put was acknowledged. */
  readonly acknowledged = new Map<string, string>();
  readonly outcomes = { ok: 0, unknown: 0, refused: 0 };
  private stopped = false;
  private readonly clients: Promise<void>[] = [];

  constructor(
    private readonly cluster: Cluster,
    private readonly options: {
      readonly name: string;
      readonly clients: number;
      readonly sharedKeys: readonly string[];
    },
  ) {
    for (let client = 0; client < options.clients; client++) {
      this.clients.push(this.run(client, mulberry32(SEED * 31 + client)));
    }
  }

  /** Acknowledged writes whose call came after `sinceMs` (performance.now()), per partition. */
  writesSince(sinceMs: number): Map<number, number> {
    const counts = new Map<number, number>();
    for (const op of this.history) {
      if (op.callMs <= sinceMs || op.call.kind === 'get' || op.result === null) continue;
      const partition = this.cluster.partitionOf(op.call.key);
      counts.set(partition, (counts.get(partition) ?? 0) + 1);
    }
    return counts;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.clients);
  }

  private async run(client: number, prng: Prng): Promise<void> {
    const name = `${this.options.name}-c${client}`;
    const shared = this.options.sharedKeys;
    for (let n = 0; n < MAX_OPS_PER_CLIENT && !this.stopped; n++) {
      const value = `${name}:${n}`;
      const roll = prng.nextInt(10);
      const call: KvHistoryOp['call'] =
        roll < 5
          ? { kind: 'put', key: `d/${name}/${n}`, value }
          : roll < 7
            ? { kind: 'put', key: shared[prng.nextInt(shared.length)]!, value }
            : roll < 9
              ? { kind: 'get', key: shared[prng.nextInt(shared.length)]! }
              : { kind: 'delete', key: shared[prng.nextInt(shared.length)]! };
      const targets = this.cluster.serving();
      if (targets.length === 0) break;
      const peer = targets[(client + n) % targets.length]!;
      const callMs = performance.now();
      let result: HttpKvAnswer;
      try {
        const answer = await kv(peer, methodOf(call.kind), call.key, {
          value: 'value' in call ? call.value : undefined,
        });
        result = httpKvAnswer(call.kind, answer.status, answer.code, answer.body);
      } catch {
        result = null;
      }
      const returnMs = performance.now();
      if (result === 'refused') {
        this.outcomes.refused++;
        continue;
      }
      this.outcomes[result === null ? 'unknown' : 'ok']++;
      this.history.push({ client: name, callMs, returnMs, call, result });
      if (result !== null && call.kind === 'put' && call.key.startsWith('d/')) {
        this.acknowledged.set(call.key, call.value);
      }
    }
  }
}

function methodOf(kind: KvHistoryOp['call']['kind']): 'GET' | 'PUT' | 'DELETE' {
  return kind === 'get' ? 'GET' : kind === 'put' ? 'PUT' : 'DELETE';
}

/**
 * Reads every key in `keys` once through the serving peers (linearizable) and appends the
 * reads to `history`; each must be answered. Resolves with the values read.
 */
async function readAll(
  cluster: Cluster,
  keys: Iterable<string>,
  history: KvHistoryOp[],
): Promise<Map<string, string | null>> {
  const values = new Map<string, string | null>();
  let i = 0;
  for (const key of keys) {
    const peers = cluster.serving();
    const peer = peers[i++ % peers.length]!;
    const callMs = performance.now();
    const answer = await kv(peer, 'GET', key);
    const returnMs = performance.now();
    expect([200, 404], `GET ${key} through ${peer.name}: ${answer.body}`).to.include(answer.status);
    const value = answer.status === 200 ? answer.body : null;
    values.set(key, value);
    history.push({
      client: 'final-reads',
      callMs,
      returnMs,
      call: { kind: 'get', key },
      result: { kind: 'get', value },
    });
  }
  return values;
}

function expectLinearizable(history: readonly KvHistoryOp[]): void {
  const result = checkKvHistory(history, { timeBudgetMs: 30_000 });
  if (result.kind === 'violation') {
    throw new Error(`not linearizable (seed ${SEED}):\n${result.report}`);
  }
  expect(result.kind, `seed ${SEED}: ${JSON.stringify(result)}`).to.equal('ok');
}

function expectAcknowledgedWrites(
  acknowledged: ReadonlyMap<string, string>,
  read: ReadonlyMap<string, string | null>,
): void {
  const lost = [...acknowledged].filter(([key, value]) => read.get(key) !== value);
  expect(lost, `acknowledged writes lost (seed ${SEED})`).to.deep.equal([]);
}

/**
 * A client reading `expected` keys in turn through the serving peers until stopped: each
 * read must return the key's value. A connection refused or closed by a peer being stopped
 * is retried on the next peer (a client's choice of peer, not the data's availability);
 * any other answer is a failure.
 */
class Reader {
  readonly failures: object[] = [];
  reads = 0;
  private stopped = false;
  private readonly done: Promise<void>;

  constructor(
    private readonly cluster: Cluster,
    private readonly expected: ReadonlyMap<string, string>,
    private readonly history: KvHistoryOp[],
  ) {
    this.done = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }

  /** What the test is doing (for failure reports). */
  phase = 'start';

  /** Each serving peer's view of `partition` (for failure reports). */
  private async groupsOf(partition: number): Promise<object[]> {
    const views: object[] = [];
    const statuses = await this.cluster.statuses().catch(() => new Map<Peer, NodeStatus>());
    for (const [peer, status] of statuses) {
      const group = status.groups.find((g) => g.partition === partition);
      views.push({ peer: peer.id, peers: status.peers, group });
    }
    return views;
  }

  /** Whether it stopped at its bound (MAX_READS) rather than when told. */
  get finishedEarly(): boolean {
    return this.reads + this.failures.length >= MAX_READS;
  }

  private async run(): Promise<void> {
    const keys = [...this.expected.keys()];
    for (let n = 0; !this.stopped && n < MAX_READS; n++) {
      const key = keys[n % keys.length]!;
      for (let attempt = 0; ; attempt++) {
        const peers = this.cluster.serving();
        const peer = peers[(n + attempt) % peers.length]!;
        const callMs = performance.now();
        let answer: KvAnswer;
        try {
          answer = await kv(peer, 'GET', key, { query: 'timeout=10000' });
        } catch (error) {
          if (attempt < 8) continue;
          this.failures.push({ key, peer: peer.id, error: String(error) });
          break;
        }
        if (answer.code === 'CLOSED' && attempt < 8) continue;
        if (answer.status !== 200 || answer.body !== this.expected.get(key)) {
          this.failures.push({
            key,
            peer: peer.id,
            phase: this.phase,
            calledMsAgo: performance.now() - callMs,
            ...answer,
            groups: await this.groupsOf(this.cluster.partitionOf(key)),
          });
        } else {
          this.reads++;
          this.history.push({
            client: 'reader',
            callMs,
            returnMs: performance.now(),
            call: { kind: 'get', key },
            result: { kind: 'get', value: answer.body },
          });
        }
        break;
      }
    }
  }
}

/** Runs `ip args…` (iproute2) or another network command; throws with its stderr. */
function net(command: 'ip' | 'tc', ...args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Hooks of a describe whose tests share one cluster: the signaling server and 3 peers
 * (`leaves[i]`: peer i stops with --leave), every partition placed, before the first test;
 * the cluster's state printed when a test fails; every process killed by pid after the
 * last, whatever failed. Returns the cluster (once the hooks have run).
 */
function sharedCluster(
  dirPrefix: string,
  options: () => ClusterOptions = () => ({}),
  leaves: readonly boolean[] = [false, false, false],
): () => Cluster {
  let dir: string | undefined;
  let cluster: Cluster | undefined;
  before(async () => {
    const startedMs = performance.now();
    dir = mkdtempSync(join(tmpdir(), dirPrefix));
    const started = new Cluster(dir, options());
    cluster = started;
    try {
      await started.startSignaling();
      // All at once: the first to join bootstraps the partitions, the others join it.
      await Promise.all(leaves.map((leave) => started.addPeer({ leave })));
      await started.waitPlaced(`${leaves.length} replicas of every partition`, leaves.length);
      console.log(
        `      cluster placed in ${((performance.now() - startedMs) / 1000).toFixed(1)} s`,
      );
    } catch (error) {
      console.log(JSON.stringify(started.state()));
      throw error;
    }
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed') console.log(JSON.stringify(cluster?.state()));
  });
  after(async () => {
    await cluster?.killAll();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });
  return () => {
    if (cluster === undefined) throw new Error('the cluster did not start');
    return cluster;
  };
}

/** PUT through `peer`, recorded in `history` (an unknown outcome unless 200); the answer. */
async function recordedPut(
  history: KvHistoryOp[],
  client: string,
  peer: Peer,
  key: string,
  value: string,
  query?: string,
): Promise<KvAnswer> {
  const callMs = performance.now();
  const answer = await kv(peer, 'PUT', key, { value, query });
  history.push({
    client,
    callMs,
    returnMs: performance.now(),
    call: { kind: 'put', key, value },
    result: answer.status === 200 ? { kind: 'put' } : null,
  });
  return answer;
}

/** One key per partition, named `prefix/…`. */
function keyPerPartition(cluster: Cluster, prefix: string): string[] {
  const keys = new Map<number, string>();
  for (let i = 0; keys.size < PARTITIONS; i++) {
    const key = `${prefix}/${i}`;
    if (!keys.has(cluster.partitionOf(key))) keys.set(cluster.partitionOf(key), key);
  }
  return [...keys.values()];
}

describe('faults of meshkv node processes over WebRTC', function () {
  // Generous: each step waits on its condition with its own deadline.
  this.timeout(240_000);

  before(() => console.log(`faults: seed ${SEED} (MESHKV_FAULTS_SEED to replay the load)`));

  describe('3 peers: basic operations, ack all, local reads, kill -9 under load, kill -9 of everything', () => {
    const current = sharedCluster('meshkv-faults-');
    /** Keys written once whose put was acknowledged, across the tests of this cluster. */
    const acknowledged = new Map<string, string>();
    const history: KvHistoryOp[] = [];

    // A test that failed half-way may leave a peer stopped: the next starts with all three.
    afterEach(async () => {
      const cluster = current();
      const stopped = cluster.peers.filter((peer) => !peer.proc.running);
      if (stopped.length === 0 || !cluster.signaling.proc.running) return;
      await Promise.all(stopped.map((peer) => cluster.start(peer)));
      await cluster.waitPlaced('every peer back after the test', 3);
    });

    it('puts, gets and deletes through every peer', async () => {
      const cluster = current();
      const [a, b, c] = cluster.peers as [Peer, Peer, Peer];
      expect((await kv(a, 'PUT', 'basic', { value: 'one' })).status).to.equal(200);
      expect(await kv(b, 'GET', 'basic')).to.include({ status: 200, body: 'one' });
      expect((await kv(c, 'DELETE', 'basic')).status).to.equal(200);
      expect(await kv(a, 'GET', 'basic')).to.include({ status: 404, code: 'KEY_NOT_FOUND' });
      expect(await kv(b, 'DELETE', 'basic')).to.include({ status: 404, code: 'KEY_NOT_FOUND' });
      for (let i = 0; i < 16; i++) {
        const peer = cluster.peers[i % 3]!;
        const answer = await recordedPut(history, 'basic', peer, `d/basic/${i}`, `v${i}`);
        expect(answer.status, answer.body).to.equal(200);
        acknowledged.set(`d/basic/${i}`, `v${i}`);
      }
      expectAcknowledgedWrites(acknowledged, await readAll(cluster, acknowledged.keys(), history));
    });

    it("ack 'all' fails with ACK_INCOMPLETE while a replica's process is stopped; local reads answer with the leader's down", async () => {
      const cluster = current();
      const key = 'ack-all';
      const partition = cluster.partitionOf(key);
      const leader = (await cluster.leaders()).get(partition)!.peer;
      const follower = cluster.peers.find((p) => p !== leader)!;
      const other = cluster.peers.find((p) => p !== leader && p !== follower)!;
      // Every voter applied it: a local read anywhere sees it.
      expect((await kv(leader, 'PUT', key, { value: 'all', query: 'ack=all' })).status).to.equal(
        200,
      );

      expect(await cluster.stop(follower, 'SIGKILL')).to.equal(null);
      const incomplete = await kv(leader, 'PUT', key, {
        value: 'not-all',
        query: 'ack=all&timeout=3000',
      });
      expect(incomplete, incomplete.body).to.include({ status: 500, code: 'ACK_INCOMPLETE' });
      // Committed on the majority all the same.
      expect(await kv(other, 'GET', key)).to.include({ status: 200, body: 'not-all' });
      await cluster.start(follower);
      await cluster.waitPlaced('the follower back', 3);
      expect((await kv(leader, 'PUT', key, { value: 'all', query: 'ack=all' })).status).to.equal(
        200,
      );

      // The leader's process down: a local read is answered by a replica that has it,
      // whether or not the survivors have elected a new leader yet.
      expect(await cluster.stop(leader, 'SIGKILL')).to.equal(null);
      const local = await kv(other, 'GET', key, { query: 'consistency=local' });
      expect(local, local.body).to.include({ status: 200, body: 'all' });
      await cluster.start(leader);
      await cluster.waitPlaced('the old leader back', 3);
    });

    it('kill -9 of a partition leader under load: writes go on, the restart catches up, no acknowledged write is lost, the history is linearizable', async () => {
      const cluster = current();
      const sharedKeys = ['s/0', 's/1', 's/2', 's/3'];
      const load = new Load(cluster, { name: 'kill', clients: 4, sharedKeys });
      await waitUntil(
        () => (load.outcomes.ok >= 60 ? true : undefined),
        '60 answered operations before the kill',
        () => load.outcomes,
      );
      // The victim leads the partition of the first shared key (and maybe others).
      const leaders = await cluster.leaders();
      const victim = leaders.get(cluster.partitionOf(sharedKeys[0]!))!.peer;
      const led = [...leaders].filter(([, l]) => l.peer === victim).map(([p]) => p);
      const killedAtMs = performance.now();
      expect(await cluster.stop(victim, 'SIGKILL')).to.equal(null);

      // Writes continue: every partition the victim led commits writes issued after the kill.
      await waitUntil(
        () => {
          const since = load.writesSince(killedAtMs);
          return led.every((p) => (since.get(p) ?? 0) >= 3) ? true : undefined;
        },
        `writes after the kill in the partitions ${victim.id} led (${led.join(', ')})`,
        () => ({ outcomes: load.outcomes, since: [...load.writesSince(killedAtMs)] }),
      );

      // The restart on its data dir catches up with the commits made meanwhile.
      await cluster.start(victim);
      const commits = await cluster.leaders();
      await waitUntil(
        async () => {
          const status = await peerStatus(victim.url, TOKEN);
          return [...commits].every(([partition, { commit }]) =>
            status.groups.some(
              (g) => g.partition === partition && g.initialized && g.applied >= commit,
            ),
          )
            ? true
            : undefined;
        },
        `${victim.id} to apply what was committed while it was down`,
        () => ({ commits: [...commits].map(([p, l]) => [p, l.commit]) }),
      );
      await load.stop();
      await cluster.waitPlaced('every replica back after the restart', 3);

      for (const [key, value] of load.acknowledged) acknowledged.set(key, value);
      history.push(...load.history);
      const keys = [...sharedKeys, ...load.acknowledged.keys()];
      expectAcknowledgedWrites(load.acknowledged, await readAll(cluster, keys, history));
      expect(load.outcomes.ok).to.be.greaterThan(0);
      expectLinearizable(history);
      console.log(`      kill -9 under load: ${JSON.stringify(load.outcomes)}`);
    });

    it('kill -9 of every process, then a restart of all: every acknowledged write is there', async () => {
      const cluster = current();
      await cluster.killAll();
      await cluster.startSignaling();
      await Promise.all(cluster.peers.map((peer) => cluster.start(peer)));
      await cluster.waitPlaced('every partition placed after the restart of all', 3);
      const sharedKeys = ['s/0', 's/1', 's/2', 's/3'];
      const read = await readAll(cluster, [...sharedKeys, ...acknowledged.keys()], history);
      expectAcknowledgedWrites(acknowledged, read);
      expectLinearizable(history);
    });
  });

  describe('membership under load: a 4th and a 5th peer join, one leaves, one is killed and marked down', () => {
    /** Short, so that a killed member is marked down (and re-placed) within the test. */
    const GRACE_PERIOD_MS = 2_000;
    const current = sharedCluster(
      'meshkv-faults-members-',
      () => ({ gracePeriodMs: GRACE_PERIOD_MS }),
      [false, true, false],
    );

    it('keeps every key readable and ends with N replicas exactly where the ring places them', async () => {
      const cluster = current();
      const history: KvHistoryOp[] = [];
      const seeded = new Map<string, string>();
      for (let i = 0; i < 24; i++) seeded.set(`r/${i}`, `seeded-${i}`);
      for (const [key, value] of seeded) {
        const answer = await recordedPut(history, 'seed', cluster.peers[0]!, key, value);
        expect(answer.status, answer.body).to.equal(200);
      }
      const reader = new Reader(cluster, seeded, history);
      const sharedKeys = ['m/0', 'm/1', 'm/2'];
      const load = new Load(cluster, { name: 'members', clients: 2, sharedKeys });
      const [first, leaver, victim] = cluster.peers as [Peer, Peer, Peer];
      // Reads answered by the end of each phase (for the log: a read may wait out a leadership
      // transfer's retry backoff across a short phase).
      const readsByPhase: Record<string, number> = {};
      let readsBefore = 0;
      const phaseDone = (phase: string, next: string): void => {
        reader.phase = next;
        readsByPhase[phase] = reader.reads - readsBefore;
        readsBefore = reader.reads;
      };

      reader.phase = 'joins';
      await Promise.all([cluster.addPeer(), cluster.addPeer()]);
      await cluster.waitPlaced('the placement over 5 members', 5);
      phaseDone('joins', 'leave');

      expect(await cluster.stop(leaver, 'SIGTERM'), JSON.stringify(leaver.proc.state())).to.equal(
        0,
      );
      expect(leaver.proc.stdout).to.match(/^left: no replica here$/m);
      const afterLeave = await cluster.waitPlaced(
        'the placement over 4 members after the leave',
        4,
      );
      expect(afterLeave).to.not.include(leaver.id);
      phaseDone('leave', 'kill');

      expect(await cluster.stop(victim, 'SIGKILL')).to.equal(null);
      await waitUntil(async () => {
        const registry = await registryStatus(cluster.signaling.url);
        return registry.members.find((m) => m.nodeId === victim.id)?.state === 'down'
          ? true
          : undefined;
      }, `the registry to mark ${victim.id} down after its grace period`);
      const final = await cluster.waitPlaced('the placement over the 3 members left', 3);
      expect(final).to.include(first.id).and.not.include(victim.id);
      phaseDone('kill', 'end');

      await load.stop();
      await reader.stop();
      expect(reader.failures, `reads that failed (seed ${SEED})`).to.deep.equal([]);
      // It read until stopped (not cut short by its bound), and every read was answered.
      expect(reader.finishedEarly, 'the reader ran out of reads').to.equal(false);
      expect(reader.reads).to.be.greaterThan(0);
      history.push(...load.history);
      const keys = [...seeded.keys(), ...sharedKeys, ...load.acknowledged.keys()];
      const read = await readAll(cluster, keys, history);
      expectAcknowledgedWrites(seeded, read);
      expectAcknowledgedWrites(load.acknowledged, read);
      expectLinearizable(history);
      console.log(
        `      membership under load: ${JSON.stringify(load.outcomes)}, reads by phase ${JSON.stringify(readsByPhase)}`,
      );
    });
  });

  describe('a network partition made in the network: each peer in a network namespace of its own', () => {
    /** Unique per run: namespace names are global to the machine. */
    const run = `${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
    const namespaces = [0, 1, 2].map((i) => `mkf-${run}-${i}`);
    /** Bridges and host ends of the veths live in this test's (private) namespace. */
    const CONTROL_BRIDGE = 'mkfctl';
    const MESH_BRIDGE = 'mkfmesh';
    const CONTROL_HOST = '10.78.0.1';
    /** Whether the before hook began making them (only then are they deleted). */
    let networkMade = false;

    before(async function () {
      if (process.env.MESHKV_NETNS !== '1' || process.getuid?.() !== 0) {
        console.log('      skipped: needs root inside scripts/netns-run.sh');
        this.skip();
      }
      networkMade = true;
      // Two networks: the control one (signaling, HTTP from this process) and the mesh one
      // (ICE, i.e. every Raft message): cutting a peer's mesh link partitions it from the
      // other peers while the test still talks to it.
      net('ip', 'link', 'add', CONTROL_BRIDGE, 'type', 'bridge');
      net('ip', 'addr', 'add', `${CONTROL_HOST}/24`, 'dev', CONTROL_BRIDGE);
      net('ip', 'link', 'set', CONTROL_BRIDGE, 'up');
      net('ip', 'link', 'add', MESH_BRIDGE, 'type', 'bridge');
      net('ip', 'link', 'set', MESH_BRIDGE, 'up');
      for (const [i, netns] of namespaces.entries()) {
        net('ip', 'netns', 'add', netns);
        net('ip', 'netns', 'exec', netns, 'ip', 'link', 'set', 'lo', 'up');
        for (const [link, bridge, subnet] of [
          [`mkc${i}`, CONTROL_BRIDGE, '10.78.0'],
          [`mkm${i}`, MESH_BRIDGE, '10.77.0'],
        ] as const) {
          net('ip', 'link', 'add', link, 'type', 'veth', 'peer', 'name', `${link}p`);
          net('ip', 'link', 'set', `${link}p`, 'netns', netns);
          net('ip', 'link', 'set', link, 'master', bridge, 'up');
          net(
            'ip',
            'netns',
            'exec',
            netns,
            'ip',
            'addr',
            'add',
            `${subnet}.${10 + i}/24`,
            'dev',
            `${link}p`,
          );
          net('ip', 'netns', 'exec', netns, 'ip', 'link', 'set', `${link}p`, 'up');
        }
      }
    });

    // Hooks run in the order they are declared: the namespaces are made before the cluster
    // starts, and deleted after its processes are killed.
    const current = sharedCluster('meshkv-faults-netns-', () => ({
      signalingHost: CONTROL_HOST,
      network: (i) => ({
        netns: namespaces[i]!,
        controlAddress: `10.78.0.${10 + i}`,
        meshAddress: `10.77.0.${10 + i}`,
        meshLink: `mkm${i}`,
      }),
    }));

    after(() => {
      if (!networkMade) return;
      // Deleting a namespace destroys the veth ends in it, and with them their pairs.
      // A failure is reported, not thrown: the other deletions must still run.
      for (const args of [
        ...namespaces.map((netns) => ['netns', 'del', netns]),
        ['link', 'del', CONTROL_BRIDGE],
        ['link', 'del', MESH_BRIDGE],
      ]) {
        try {
          net('ip', ...args);
        } catch (error) {
          console.log(`      cleanup: ip ${args.join(' ')} failed: ${String(error)}`);
        }
      }
    });

    it('writes succeed over shaped links (tc: a rate limit with a short queue, so delay and drops)', async () => {
      const cluster = current();
      // The kernel here has no netem (no delay or random loss qdisc); tbf is there: packets
      // queue behind a 512 kbit/s rate (4 KiB bursts) for up to 10 ms and are dropped beyond
      // it: an 8 KB value sent to two followers at once overflows it (SCTP retransmits).
      for (const peer of cluster.peers) {
        net(
          'tc',
          'qdisc',
          'add',
          'dev',
          peer.network!.meshLink,
          'root',
          'tbf',
          'rate',
          '512kbit',
          'burst',
          '4kb',
          'latency',
          '10ms',
        );
      }
      try {
        const failures: object[] = [];
        await Promise.all(
          cluster.peers.map(async (peer, client) => {
            for (let i = 0; i < 6; i++) {
              const key = `shaped/${client}/${i}`;
              const answer = await kv(peer, 'PUT', key, {
                value: 'x'.repeat(8000),
                query: 'timeout=20000',
              });
              if (answer.status !== 200) failures.push({ key, peer: peer.id, ...answer });
            }
          }),
        );
        expect(failures).to.deep.equal([]);
        const dropped = cluster.peers.map(
          (peer) =>
            /dropped (\d+)/.exec(
              net('tc', '-s', 'qdisc', 'show', 'dev', peer.network!.meshLink),
            )?.[1],
        );
        console.log(
          `      shaped links: packets dropped by tbf per peer link: ${dropped.join(', ')}`,
        );
      } finally {
        for (const peer of cluster.peers) {
          net('tc', 'qdisc', 'del', 'dev', peer.network!.meshLink, 'root');
        }
      }
    });

    it('one missing link: two peers that cannot reach each other keep up through the third', async () => {
      const cluster = current();
      const [a, b, relay] = cluster.peers as [Peer, Peer, Peer];
      // A route of its own for the other's mesh address: each of a and b drops what it
      // sends the other, the third still reaches both (the shape of a NAT pair whose
      // WebRTC connection never comes up).
      const cut = (add: boolean) => {
        for (const [from, to] of [
          [a, b],
          [b, a],
        ] as const) {
          const route = [
            'route',
            add ? 'add' : 'del',
            'blackhole',
            `${to.network!.meshAddress}/32`,
          ];
          net('ip', 'netns', 'exec', from.network!.netns, 'ip', ...route);
        }
      };
      cut(true);
      let healed = false;
      try {
        await waitUntil(async () => {
          const [statusA, statusB] = await Promise.all([a, b].map((p) => peerStatus(p.url, TOKEN)));
          return statusA!.unreachable.includes(b.id) && statusB!.unreachable.includes(a.id)
            ? true
            : undefined;
        }, 'a and b to see their link down');
        // Writes through every peer, in every partition: a's and b's replicas of the
        // partitions the other leads hear of them only through the relay.
        const written = new Map<string, string>();
        for (const [i, key] of keyPerPartition(cluster, 'missing-link').entries()) {
          const peer = cluster.peers[i % 3]!;
          const value = `through-${peer.id}`;
          const answer = await kv(peer, 'PUT', key, { value, query: 'timeout=20000' });
          expect(answer.status, `PUT ${key} through ${peer.id}: ${answer.body}`).to.equal(200);
          written.set(key, value);
        }
        // Each side's own replica applies every write, those led across the cut included.
        for (const peer of [a, b]) {
          await waitUntil(async () => {
            for (const [key, value] of written) {
              const answer = await kv(peer, 'GET', key, { query: 'consistency=local' });
              if (answer.status !== 200 || answer.body !== value) return undefined;
            }
            return true;
          }, `${peer.id}'s replicas to apply every write while cut from the other`);
        }
        const relayStatus = await peerStatus(relay.url, TOKEN);
        expect(relayStatus.recordsForwarded, 'records the third peer forwarded').to.be.above(0);
        cut(false);
        healed = true;
        await waitUntil(async () => {
          const statuses = await Promise.all([a, b].map((p) => peerStatus(p.url, TOKEN)));
          return statuses.every((s) => s.unreachable.length === 0) ? true : undefined;
        }, 'the link between a and b to come back');
      } finally {
        if (!healed) cut(false);
      }
    });

    it('the cut-off minority cannot commit, the majority can, and the healed minority converges', async () => {
      const cluster = current();
      const history: KvHistoryOp[] = [];
      // The minority is the peer leading the most partitions: its leaders must step down.
      const led = new Map<Peer, number>();
      for (const { peer } of (await cluster.leaders()).values())
        led.set(peer, (led.get(peer) ?? 0) + 1);
      const minority = [...led].sort((a, b) => b[1] - a[1])[0]![0];
      const majority = cluster.peers.filter((peer) => peer !== minority);
      net('ip', 'link', 'set', minority.network!.meshLink, 'down');
      let healed = false;
      try {
        // The minority: no write commits, whether it led the partition or forwards to the
        // leader it knew. Their outcomes are unknown (a TIMEOUT may have applied).
        const refused = await Promise.all(
          keyPerPartition(cluster, 'minority').map(async (key) => {
            const value = 'from-the-minority';
            const answer = await recordedPut(
              history,
              'minority',
              minority,
              key,
              value,
              'timeout=3000',
            );
            return [key, answer.status, answer.code] as const;
          }),
        );
        for (const [key, status, code] of refused) {
          expect([503, 504], `PUT ${key} on the minority: ${status} ${code}`).to.include(status);
          expect(['TIMEOUT', 'UNAVAILABLE'], `PUT ${key} on the minority`).to.include(code);
        }
        // The majority commits in every partition (after electing new leaders where the
        // minority led).
        const written = new Map<string, string>();
        for (const [i, key] of keyPerPartition(cluster, 'majority').entries()) {
          const peer = majority[i % 2]!;
          const value = `from-${peer.id}`;
          const answer = await recordedPut(history, 'majority', peer, key, value, 'timeout=20000');
          expect(answer.status, `PUT ${key} on the majority: ${answer.body}`).to.equal(200);
          written.set(key, `from-${peer.id}`);
        }

        net('ip', 'link', 'set', minority.network!.meshLink, 'up');
        healed = true;
        // The healed minority's own replicas catch up: its local reads see the majority's writes.
        await waitUntil(async () => {
          for (const [key, value] of written) {
            const answer = await kv(minority, 'GET', key, { query: 'consistency=local' });
            if (answer.status !== 200 || answer.body !== value) return undefined;
          }
          return true;
        }, "the healed minority to read the majority's writes locally");
        await cluster.waitPlaced('every partition whole again after the heal', 3);
        const read = await readAll(
          cluster,
          [...written.keys(), ...keyPerPartition(cluster, 'minority')],
          history,
        );
        expectAcknowledgedWrites(written, read);
        expectLinearizable(history);
      } finally {
        if (!healed) net('ip', 'link', 'set', minority.network!.meshLink, 'up');
      }
    });
  });
});
