/**
 * A small deterministic cluster for the node's scenario tests: MeshNodes over the
 * simulated network (SimTransport), each with a MemoryDisk ('auto' sync), a registry
 * snapshot built by hand, and virtual time: `run(ms)` ticks every node every tickMs and
 * delivers the network's packets in time order, draining the nodes' microtasks between
 * events. (The full chaos simulation, with crashes, slow disks and the registry's real
 * transitions, is test/sim.)
 */
import { mulberry32, type NodeId } from '@meshkv/raft';
import { MemoryDisk, type NodeStorage } from '@meshkv/storage';
import type { LinkStats, PeerId, Transport, TransportHandlers } from '@meshkv/transport';
import type { Member, RegistrySnapshot } from '@meshkv/transport/signaling-protocol';
import { SimNetwork, SimTransport } from '@meshkv/transport/sim-network';
import { MeshNode, type MeshNodeObserver, type MeshNodeSettings } from '../../src/mesh-node.ts';

export const TICK_MS = 10;
const MAX_TRACE_LINES = 10_000;

export interface ClusterOptions {
  readonly seed?: number;
  readonly partitions?: number;
  readonly replicationFactor?: number;
  readonly settings?: Partial<MeshNodeSettings>;
  readonly trace?: boolean;
  /**
   * Links as the WebRTC mesh has them: `peers()` lists only the peers this node has
   * exchanged a frame with (a link opens on demand, when something is sent).
   */
  readonly onDemandLinks?: boolean;
  /** Per node at each start: a storage wrapper and observer hooks (a shell's metrics). */
  readonly instrument?: (id: NodeId, transport: Transport) => Instruments;
}

export interface Instruments {
  readonly storage?: (storage: NodeStorage) => NodeStorage;
  readonly observer?: MeshNodeObserver;
}

/** A SimTransport whose links are up only once a frame went either way (see onDemandLinks). */
class OnDemandLinks implements Transport {
  private readonly talked = new Set<PeerId>();
  private readonly downHandlers = new Set<TransportHandlers['peerDown']>();
  constructor(private readonly inner: SimTransport) {
    inner.on('frame', (from) => this.talked.add(from));
  }
  get localId(): PeerId {
    return this.inner.localId;
  }
  get maxFrameBytes(): number {
    return this.inner.maxFrameBytes;
  }
  send(to: PeerId, frame: Uint8Array): void {
    this.talked.add(to);
    this.inner.send(to, frame);
  }
  on<E extends keyof TransportHandlers>(event: E, handler: TransportHandlers[E]): () => void {
    const off = this.inner.on(event, handler);
    if (event !== 'peerDown') return off;
    const down = handler as TransportHandlers['peerDown'];
    this.downHandlers.add(down);
    return () => {
      this.downHandlers.delete(down);
      off();
    };
  }

  /** The mesh closes the link to `peer` for want of use (on purpose: not failed). */
  closeIdle(peer: PeerId, reason: string): void {
    this.talked.delete(peer);
    for (const handler of this.downHandlers) handler(peer, reason, false);
  }
  peers(): readonly PeerId[] {
    return this.inner.peers().filter((peer) => this.talked.has(peer));
  }
  stats(peer: PeerId): LinkStats {
    return this.inner.stats(peer);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

interface Running {
  node: MeshNode;
  storage: NodeStorage;
  transport: SimTransport;
  /** With onDemandLinks: the node's view of its links. */
  links: OnDemandLinks | null;
}

export class TestCluster {
  readonly network: SimNetwork<Uint8Array>;
  readonly disks = new Map<NodeId, MemoryDisk>();
  readonly running = new Map<NodeId, Running>();
  readonly traceLines: string[] = [];
  private registry: RegistrySnapshot;
  private readonly seed: number;
  private readonly settings: Partial<MeshNodeSettings>;
  private readonly traceOn: boolean;
  private readonly onDemandLinks: boolean;
  private readonly instrument: ((id: NodeId, transport: Transport) => Instruments) | undefined;
  private nextTickMs = 0;
  /** Nodes whose storage writes are held (holdWrites): each held write's start. */
  private readonly heldWrites = new Map<NodeId, (() => void)[]>();

  constructor(options: ClusterOptions = {}) {
    this.seed = options.seed ?? 1;
    this.network = new SimNetwork<Uint8Array>({
      prng: mulberry32(this.seed),
      sizeBytes: (frame) => frame.length,
    });
    this.registry = {
      settings: {
        clusterId: 'test',
        partitions: options.partitions ?? 4,
        replicationFactor: options.replicationFactor ?? 3,
        tokensPerNode: 16,
      },
      epoch: 0,
      members: [],
    };
    this.settings = { tickMs: TICK_MS, ...options.settings };
    this.traceOn = options.trace ?? false;
    this.onDemandLinks = options.onDemandLinks ?? false;
    this.instrument = options.instrument;
  }

  get partitions(): number {
    return this.registry.settings.partitions;
  }

  get nowMs(): number {
    return this.network.nowMs;
  }

  node(id: NodeId): MeshNode {
    const running = this.running.get(id);
    if (running === undefined) throw new Error(`${id} is not running`);
    return running.node;
  }

  /** Registers `id` (up) in the registry and pushes the snapshot to every running node. */
  private register(id: NodeId, state: Member['state']): boolean {
    const epoch = this.registry.epoch + 1;
    const existing = this.registry.members.find((m) => m.nodeId === id);
    const member: Member = {
      nodeId: id,
      kind: 'node',
      state,
      joinedAtEpoch: existing?.joinedAtEpoch ?? epoch,
      changedAtEpoch: epoch,
    };
    const members = this.registry.members.filter((m) => m.nodeId !== id);
    members.push(member);
    members.sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
    this.registry = { settings: this.registry.settings, epoch, members };
    for (const { node } of this.running.values()) node.updateRegistry(this.registry);
    return existing === undefined;
  }

  /** A new member joins (or a known one restarts with its disk). */
  async start(id: NodeId): Promise<MeshNode> {
    const isNew = !this.disks.has(id);
    if (isNew) this.disks.set(id, new MemoryDisk({ name: id }));
    this.register(id, 'up');
    const storage = await this.disks.get(id)!.open();
    const transport = new SimTransport(this.network, id);
    const links = this.onDemandLinks ? new OnDemandLinks(transport) : transport;
    const instruments = this.instrument?.(id, links) ?? {};
    const observer = instruments.observer;
    const node = await MeshNode.start({
      nodeId: id,
      storage: this.holdable(id, instruments.storage?.(storage) ?? storage),
      transport: links,
      registry: this.registry,
      newIdentity: isNew,
      random: mulberry32(this.seed * 1000 + this.running.size + this.disks.size),
      nowMs: this.nowMs,
      settings: this.settings,
      observer: { ...observer, trace: (line) => this.trace(line) },
    });
    this.running.set(id, {
      node,
      storage,
      transport,
      links: links instanceof OnDemandLinks ? links : null,
    });
    await this.drain();
    return node;
  }

  /**
   * A slow disk: `id`'s storage writes wait (unstarted) until releaseWrites, while the
   * rest of the cluster runs on (`drain` does not wait for a node whose writes are held).
   */
  holdWrites(id: NodeId): void {
    if (!this.heldWrites.has(id)) this.heldWrites.set(id, []);
  }

  /** Starts `id`'s held writes, in order, and lets later ones through. */
  releaseWrites(id: NodeId): void {
    const held = this.heldWrites.get(id) ?? [];
    this.heldWrites.delete(id);
    for (const start of held) start();
  }

  private holdable(id: NodeId, storage: NodeStorage): NodeStorage {
    const held = this.heldWrites;
    return new Proxy(storage, {
      get(target, property) {
        if (property === 'write') {
          return (batch: Parameters<NodeStorage['write']>[0]) => {
            const queue = held.get(id);
            if (queue === undefined) return target.write(batch);
            return new Promise<void>((resolve, reject) => {
              queue.push(() => target.write(batch).then(resolve, reject));
            });
          };
        }
        const value: unknown = Reflect.get(target, property);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }

  /** The registry marks `id` left (or down): leaders move its replicas away. */
  markLeft(id: NodeId): void {
    this.register(id, 'left');
  }

  markDown(id: NodeId): void {
    this.register(id, 'down');
  }

  /** Stops a node (as a process exit: its disk keeps what was written). */
  async stop(id: NodeId): Promise<void> {
    const running = this.running.get(id);
    if (running === undefined) return;
    this.running.delete(id);
    await running.node.close();
    await running.transport.close();
    await running.storage.close();
  }

  /** Keeps the last MAX_TRACE_LINES lines (printed when a test fails, all with TRACE=1). */
  trace(line: string): void {
    const stamped = `${String(this.nowMs).padStart(6)} ${line}`;
    if (this.traceOn) console.log(stamped);
    this.traceLines.push(stamped);
    if (this.traceLines.length > 2 * MAX_TRACE_LINES) this.traceLines.splice(0, MAX_TRACE_LINES);
  }

  /**
   * The WebRTC mesh's idle close of the link between `x` and `y` (onDemandLinks): `x`
   * closes it for want of use and tells `y`; it opens again when a frame goes either way.
   */
  closeIdle(x: NodeId, y: NodeId): void {
    const [ours, theirs] = [this.running.get(x)?.links, this.running.get(y)?.links];
    if (!ours || !theirs) throw new Error('closeIdle needs onDemandLinks and both nodes running');
    ours.closeIdle(y, 'idle');
    theirs.closeIdle(x, 'closed by peer');
  }

  /** Lets the nodes' microtasks run until none is busy (bounded). */
  async drain(): Promise<void> {
    for (let turns = 0; turns < 100_000; turns++) {
      if (!this.anyBusy()) {
        // A few more turns: promise chains outside the loop (store reads) settle too.
        for (let i = 0; i < 20; i++) await undefined;
        if (!this.anyBusy()) return;
      }
      await undefined;
    }
    throw new Error('the nodes stayed busy for 100,000 microtask turns');
  }

  /** Whether a node is in a round, not counting those waiting on held writes. */
  private anyBusy(): boolean {
    for (const [id, { node }] of this.running) {
      if (node.busy && !this.heldWrites.has(id)) return true;
    }
    return false;
  }

  /**
   * Runs virtual time forward by `ms`: ticks and packet deliveries in time order; stops
   * early, right after the event that made it true, once `stopWhen` holds.
   */
  async run(ms: number, stopWhen?: () => boolean): Promise<void> {
    const until = this.nowMs + ms;
    for (;;) {
      if (stopWhen?.() === true) return;
      const nextPacket = this.network.nextEventAtMs();
      const nextTick = Math.max(this.nextTickMs, this.nowMs);
      if (nextTick > until && (nextPacket === undefined || nextPacket > until)) break;
      if (nextPacket !== undefined && nextPacket <= nextTick) {
        this.network.step();
      } else {
        this.network.advanceTo(nextTick, 0);
        for (const { node } of this.running.values()) node.tick(nextTick);
        this.nextTickMs = nextTick + TICK_MS;
      }
      await this.drain();
    }
    this.network.advanceTo(until, 0);
  }

  /** Runs until `promise` settles (or `maxMs` of virtual time pass), returning its outcome. */
  async settle<T>(promise: Promise<T>, maxMs = 30_000): Promise<T> {
    let done = false;
    const watched = promise.finally(() => {
      done = true;
    });
    watched.catch(() => {});
    for (let elapsed = 0; !done && elapsed < maxMs; elapsed += TICK_MS) await this.run(TICK_MS);
    if (!done) throw new Error(`not settled after ${maxMs} ms of virtual time`);
    return watched;
  }

  /** Runs until `condition` holds (checked every tick), failing after `maxMs`. */
  async until(condition: () => boolean, what: string, maxMs = 60_000): Promise<void> {
    for (let elapsed = 0; !condition(); elapsed += TICK_MS) {
      if (elapsed >= maxMs) throw new Error(`${what}: not within ${maxMs} ms of virtual time`);
      await this.run(TICK_MS);
    }
  }

  /** As `until`, checked after every event: for a state that may last less than a tick. */
  async untilEvent(condition: () => boolean, what: string, maxMs = 60_000): Promise<void> {
    await this.run(maxMs, condition);
    if (!condition()) throw new Error(`${what}: not within ${maxMs} ms of virtual time`);
  }

  async close(): Promise<void> {
    for (const id of [...this.heldWrites.keys()]) this.releaseWrites(id);
    for (const id of [...this.running.keys()]) await this.stop(id);
  }
}
