/**
 * MeshNode: one node of a meshkv cluster — the Raft group of every partition it
 * replicates, driven by one loop (loop.ts), serving put/get/delete from any node
 * (router.ts), streaming KV snapshots (snapshots.ts) and moving replicas toward the ring
 * placement (rebalancer.ts). Isomorphic and deterministic: time comes only from `tick`,
 * the network from a Transport, the disk from a NodeStorage, membership from registry
 * snapshots, randomness from the injected Prng. The Node process, the browser tab and the
 * simulation are shells around this very class.
 */
import {
  bootstrapSnapshot,
  type ConfState,
  type Entry,
  emptyConfState,
  type GroupId,
  isRaftError,
  type Message,
  MessageType,
  type NodeId,
  type Prng,
  type ProgressStatus,
  RaftErrorCode,
  type Ready,
  type Role,
} from '@meshkv/raft';
import { type Placement, Ring } from '@meshkv/ring';
import type { NodeStorage } from '@meshkv/storage';
import type { PeerId, Transport } from '@meshkv/transport';
import type { RegistrySnapshot } from '@meshkv/transport/signaling-protocol';
import { closed, ErrorCode, MeshKvError, validateKey, valueBytes } from './errors.ts';
import { type GroupRaftSettings, GroupReplica } from './group.ts';
import { type LogView, type LoopSettings, NodeLoop } from './loop.ts';
import { Outbox } from './outbox.ts';
import type { AppliedCommand, PartitionOptions } from './partition.ts';
import {
  movesInConfig,
  planReconfiguration,
  type RebalanceStep,
  toConfChange,
} from './rebalancer.ts';
import {
  incarnationOf,
  isReplicaIn,
  MAX_NODE_ID_FOR_REPLICAS,
  nodeOfReplica,
  replicaId,
  replicaOfNode,
} from './replica-id.ts';
import { Router, type RouterSettings } from './router.ts';
import { type SnapshotSettings, SnapshotStreams } from './snapshots.ts';
import {
  loadRetirements,
  loadTombstones,
  NODE_META_GROUP,
  nodeMetaPart,
  type RetirementRecord,
  type Tombstone,
} from './tombstones.ts';
import { type DirectRecord, decodeFrame, type WireRecord } from './wire.ts';

export interface MeshNodeSettings
  extends GroupRaftSettings,
    RouterSettings,
    LoopSettings,
    SnapshotSettings {
  /** How often the shell calls tick(), in ms (the raft ticks count these). */
  readonly tickMs: number;
  /** A request's deadline when the call gives none. */
  readonly defaultDeadlineMs: number;
  /** The longest deadline a call may ask for. */
  readonly maxDeadlineMs: number;
  /** Replica moves (learners being added) a node leads at once. */
  readonly maxMovesPerNode: number;
  /** A leader whose group was idle (raft's isIdle) this many ticks in a row quiesces it. */
  readonly quiesceAfterTicks: number;
  /**
   * A hibernating leader repeats its QUIESCE this often (ms): it keeps the links to its
   * members open (the WebRTC mesh closes a link after 60 s without frames, and a closed
   * leader link wakes its followers) and re-hibernates a member that missed the first.
   */
  readonly quiesceKeepaliveMs: number;
  /**
   * A replica this node is not placed for, that heard no Raft message for this many ticks,
   * is collected (README "Removed replicas"): a learner or an empty replica deletes itself;
   * a voter wakes and campaigns, so that members answer whether it is still one.
   */
  readonly replicaGcTicks: number;
  /** Leaders check their group against the placement every this many ticks. */
  readonly rebalanceEveryTicks: number;
  /** A learner within this many entries of the leader's log counts as caught up. */
  readonly catchUpLagEntries: number;
  readonly partition: PartitionOptions;
}

export const meshNodeDefaults: MeshNodeSettings = Object.freeze({
  tickMs: 100,
  electionTick: 10,
  heartbeatTick: 1,
  maxSizePerMsgBytes: 1024 * 1024,
  maxInflightMsgs: 256,
  maxUncommittedEntriesBytes: 64 * 1024 * 1024,
  maxPendingReadIndexRequests: 4096,
  maxPendingRequests: 10_000,
  maxServedRequests: 50_000,
  retryMinMs: 200,
  retryMaxMs: 2_000,
  maxGroupsPerBatch: 4096,
  snapshotEveryEntries: 10_000,
  logEntriesKept: 1_000,
  maxDeferredAppliedWrites: 4_096,
  maxOpenStreams: 8,
  maxIncomingStreams: 4,
  streamIdleTicks: 100,
  pullResendTicks: 10,
  targetChunkBytes: 1024 * 1024,
  defaultDeadlineMs: 5_000,
  maxDeadlineMs: 60_000,
  maxMovesPerNode: 4,
  quiesceAfterTicks: 5,
  quiesceKeepaliveMs: 20_000,
  replicaGcTicks: 300,
  rebalanceEveryTicks: 5,
  catchUpLagEntries: 64,
  partition: Object.freeze({}),
});

export interface MeshNodeObserver {
  /** `entries` of `group` are durable in this node's log (right after the batch write). */
  persisted?(group: GroupId, entries: readonly Entry[]): void;
  /** This node applied `entry` of `group` (in index order; after a restart entries apply again). */
  applied?(group: GroupId, entry: Entry): void;
  /** This node became leader of `group` in `term`; `log` is its raft log at that moment. */
  leader?(group: GroupId, term: number, log: LogView): void;
  /** One line for a trace (elections, configuration changes, moves, snapshots). */
  trace?(line: string): void;
  /** Raft refused a write proposed here (its uncommitted log is full, or it lost the lead). */
  proposalDropped?(group: GroupId, reason: 'full' | 'not_leader'): void;
}

export interface MeshNodeOptions {
  /** The registry's id for this node (bound to its storage by the member secret). */
  readonly nodeId: NodeId;
  /** Opened by the shell; the shell closes it after close(). */
  readonly storage: NodeStorage;
  /** `localId === nodeId`; the shell closes it after close(). */
  readonly transport: Transport;
  /** The latest registry snapshot (the join reply). */
  readonly registry: RegistrySnapshot;
  /**
   * The registry issued `nodeId` at this start: the storage is new. Only such a node, and
   * only as the registry's first member, creates the partitions (bootstrap); a node whose
   * storage merely holds no group never does.
   */
  readonly newIdentity: boolean;
  readonly random: Prng;
  /** The shell's clock when starting (ms). */
  readonly nowMs: number;
  readonly settings?: Partial<MeshNodeSettings>;
  readonly observer?: MeshNodeObserver;
}

export interface PutOptions {
  /** 'all': resolve once every voter applied the write (else ACK_INCOMPLETE). */
  readonly ack?: 'majority' | 'all';
  readonly deadlineMs?: number;
}
export interface GetOptions {
  /** 'local': the nearest replica answers, possibly stale. */
  readonly consistency?: 'linearizable' | 'local';
  readonly deadlineMs?: number;
}
export interface DeleteOptions {
  readonly deadlineMs?: number;
}

export interface FollowerStatus {
  readonly id: NodeId;
  readonly match: number;
  /** Entries behind the leader's last index. */
  readonly lag: number;
  readonly state: string;
}

export interface GroupStatus {
  readonly partition: number;
  /** This node's replica id in the group (replica-id.ts): a new one each time it is added. */
  readonly replica: NodeId;
  readonly role: Role;
  readonly term: number;
  readonly leader: NodeId | null;
  readonly commit: number;
  readonly applied: number;
  readonly lastIndex: number;
  /** Entries held in the log (after the last compaction). */
  readonly logEntries: number;
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
  readonly votersOutgoing: readonly NodeId[];
  /** Leader only: each other member's replication. */
  readonly followers: readonly FollowerStatus[];
  /** Whether the replica holds the partition's data yet. */
  readonly initialized: boolean;
  /** A snapshot is being installed (its KV state streams in). */
  readonly installingSnapshot: boolean;
  /**
   * Removed from the configuration, kept (its vote and log, serving nothing) until a
   * majority of the voters applied the change durably (README "Removed replicas").
   */
  readonly retiring: boolean;
  /** Why the leader did not step the group toward the placement, if it is not in place. */
  readonly placement: string;
}

export interface NodeStatus {
  readonly nodeId: NodeId;
  readonly epoch: number;
  readonly nowMs: number;
  readonly peers: readonly NodeId[];
  /**
   * Members the registry has up (or leaving) whose link from here failed and has not come
   * back: requests for partitions they lead go through another replica (router.ts).
   */
  readonly unreachable: readonly NodeId[];
  readonly groups: readonly GroupStatus[];
  /** Learners this node's led groups are catching up. */
  readonly movesInProgress: number;
  readonly pendingRequests: number;
  /** Requests this node's leaders are serving, for any node (bounded by maxServedRequests). */
  readonly servedRequests: number;
  readonly snapshotsInstalled: number;
  readonly batchesWritten: number;
  readonly framesSent: number;
  /** Records (Raft messages and the rest) also sent through a relay because their link was down (README "One missing link"). */
  readonly recordsRelayed: number;
  /** Records this node forwarded for other nodes. */
  readonly recordsForwarded: number;
  readonly closed: boolean;
}

const MESSAGE_TYPES_THAT_CREATE = new Set<number>([
  MessageType.App,
  MessageType.Heartbeat,
  MessageType.Snap,
]);

/** A learner a leader here removed, and the index of the configuration without it. */
interface RemovalNotice {
  readonly replica: NodeId;
  readonly removedAtIndex: number;
  /** Told every rebalancing pass until this tick (no answer comes; duplicates are harmless). */
  readonly untilTick: number;
}

/** Bounds the notices kept per group (moves change a group one replica at a time). */
const MAX_REMOVAL_NOTICES_PER_GROUP = 8;

export class MeshNode {
  readonly nodeId: NodeId;
  private readonly settings: MeshNodeSettings;
  private readonly storage: NodeStorage;
  private readonly transport: Transport;
  private readonly random: Prng;
  private readonly observer: MeshNodeObserver;
  private readonly groups = new Map<GroupId, GroupReplica>();
  private readonly outbox: Outbox;
  private readonly loop: NodeLoop;
  private readonly router: Router;
  private readonly snapshots: SnapshotStreams;
  private registry: RegistrySnapshot;
  private ring: Ring;
  private placement: Placement;
  private nowMsValue: number;
  private ticks = 0;
  private closedReason: string | null = null;
  private readonly unsubscribe: (() => void)[] = [];
  private readonly listeners = new Set<(status: NodeStatus) => void>();
  /** Peers whose link went down and has not come up since (isLive). */
  private readonly failedPeers = new Set<NodeId>();
  /** Called on every tick (leave() waits with one). */
  private readonly tickWatchers = new Set<() => void>();
  private statusChanged = true;
  private readonly placementNotes = new Map<GroupId, string>();
  private movesInProgress = 0;
  /** A configuration changed since the last rebalancing pass: plan at the next tick. */
  private rebalanceSoon = false;
  private fatalError: unknown = null;
  /**
   * Learners this node's leaders removed from their groups, to be told so once the removal
   * is durable here (sendRemovalNotices), by partition.
   */
  private readonly removalNotices = new Map<GroupId, RemovalNotice[]>();
  /** Last term and vote of replicas deleted here (tombstones.ts), by partition. */
  private tombstones = new Map<GroupId, Tombstone>();
  private hostsMetaGroup = false;

  private constructor(options: MeshNodeOptions, settings: MeshNodeSettings) {
    this.nodeId = options.nodeId;
    this.settings = settings;
    this.storage = options.storage;
    this.transport = options.transport;
    this.random = options.random;
    this.observer = options.observer ?? {};
    this.registry = options.registry;
    this.ring = new Ring(ringSettings(options.registry));
    this.placement = this.ring.placement(upMembers(options.registry));
    this.nowMsValue = options.nowMs;
    // Frames as large as the transport takes; it must carry the node's largest record.
    this.outbox = new Outbox(options.transport, options.transport.maxFrameBytes, (to, group) =>
      this.relayFor(to, group),
    );
    this.snapshots = new SnapshotStreams(
      {
        storage: options.storage,
        random: options.random,
        send: (to, record) => this.sendRecord(to, record),
        wake: () => this.loop.wake(),
        touch: (replica) => this.loop.touch(replica),
        trace: (line) => this.trace(line),
        reload: (replica, why) => {
          replica.reload();
          this.trace(`group ${replica.group}: reloaded from durable state (${why})`);
        },
        streamLost: (group, peer) => {
          const replica = this.groups.get(group);
          if (replica === undefined || replica.raw.role !== 'leader') return;
          const member = replicaOfNode(replica.confState, peer);
          if (member === null) return;
          replica.raw.reportSnapshot(member, 'failure');
          this.loop.touch(replica);
        },
      },
      settings,
    );
    this.router = new Router(
      {
        nodeId: options.nodeId,
        nowMs: () => this.nowMsValue,
        replica: (partition) => {
          const replica = this.groups.get(partition);
          return replica?.retiring === null ? replica : undefined;
        },
        placementReplicas: (partition) => this.placement.replicasOf(partition),
        linkUp: (peer) => this.isLive(peer),
        sendRequest: (to, request) => this.sendRecord(to, request),
        sendResponse: (to, response) => this.sendRecord(to, response),
        touch: (replica) => this.loop.touch(replica),
        proposalDropped: (partition, reason) => this.observer.proposalDropped?.(partition, reason),
      },
      settings,
      `${options.nodeId}/${options.random.nextInt(0x1_0000_0000).toString(36)}`,
      1 + options.random.nextInt(0xffff_ffff),
    );
    this.loop = new NodeLoop(
      {
        nodeId: options.nodeId,
        storage: options.storage,
        outbox: this.outbox,
        snapshots: this.snapshots,
        groups: () => this.groups.values(),
        hosts: (replica) => this.groups.get(replica.group) === replica,
        readyTaken: (replica, ready) => this.readyTaken(replica, ready),
        applied: (replica, results) => this.appliedResults(replica, results),
        confChanged: (replica, confState, index, before) => {
          this.statusChanged = true;
          this.rebalanceSoon = true;
          if (replica.raw.role === 'leader') this.noteRemovals(replica, confState, index, before);
        },
        nonMembers: (replica, ids) => {
          for (const id of ids) {
            const node = nodeOfReplica(id);
            if (node === '' || node === this.nodeId) continue;
            // Told of the durable configuration only: the asker deletes itself on it.
            const durable = replica.durableApplied;
            if (isReplicaIn(durable.confState, id)) continue;
            this.outbox.record(node, {
              kind: 'notMember',
              group: replica.group,
              configIndex: durable.index,
              replica: id,
            });
          }
        },
        removed: (replica) => this.forgetGroup(replica),
        metaPart: (removed, retired) => {
          if (removed !== null) {
            for (const [group, tombstone] of removed) this.tombstones.set(group, tombstone);
          }
          let records: Map<GroupId, RetirementRecord> | null = null;
          if (retired !== null) {
            records = new Map();
            for (const replica of retired) {
              const replicaId = replica.replicaId;
              records.set(replica.group, {
                replica: replicaId,
                removedAtIndex: replica.retiring!.removedAtIndex,
              });
            }
          }
          const part = nodeMetaPart(removed, records, !this.hostsMetaGroup);
          this.hostsMetaGroup = true;
          return part;
        },
        fatal: (error) => this.fail(error),
        persisted: this.observer.persisted?.bind(this.observer),
        appliedEntry: this.observer.applied?.bind(this.observer),
        leader: (replica, term, log) => this.observer.leader?.(replica.group, term, log),
        trace: (line) => this.trace(line),
      },
      settings,
    );
  }

  /**
   * Loads the storage and rebuilds every hosted group. The registry's first member, at
   * its first start (`newIdentity`) with empty storage, creates every partition as a
   * one-voter group; every other node starts with what its storage holds and gets
   * replicas by rebalancing.
   */
  static async start(options: MeshNodeOptions): Promise<MeshNode> {
    const settings = resolveSettings(options.settings);
    if (options.transport.localId !== options.nodeId) {
      throw new RangeError(
        `the transport is ${options.transport.localId}'s, this node is ${options.nodeId}`,
      );
    }
    if (options.nodeId.length > MAX_NODE_ID_FOR_REPLICAS || options.nodeId.includes('@')) {
      throw new RangeError(
        `node id '${options.nodeId}' is too long to name replicas: at most ${MAX_NODE_ID_FOR_REPLICAS} characters, no '@'`,
      );
    }
    if (!options.registry.members.some((m) => m.nodeId === options.nodeId)) {
      throw new RangeError(`${options.nodeId} is not a member of the registry snapshot`);
    }
    const node = new MeshNode(options, settings);
    const state = await options.storage.load();
    const raftSettings = settings;
    node.hostsMetaGroup = state.groups.has(NODE_META_GROUP);
    node.tombstones = await loadTombstones(
      options.storage,
      node.hostsMetaGroup,
      node.ring.settings.partitions,
    );
    const retirements = await loadRetirements(
      options.storage,
      node.hostsMetaGroup,
      node.ring.settings.partitions,
    );
    for (const groupState of state.groups.values()) {
      if (groupState.group === NODE_META_GROUP) continue;
      node.adopt(
        GroupReplica.fromStored(
          groupState,
          retirements.get(groupState.group) ?? null,
          options.nodeId,
          options.storage,
          raftSettings,
          options.random,
          settings.partition,
        ),
      );
    }
    if (
      state.groups.size === 0 &&
      options.newIdentity &&
      isFirstMember(options.registry, options.nodeId)
    ) {
      const own = replicaId(options.nodeId, 1);
      const confState = { ...emptyConfState, voters: [own] };
      for (let group = 0; group < node.ring.settings.partitions; group++) {
        node.adopt(
          GroupReplica.created(
            group,
            own,
            bootstrapSnapshot(confState),
            null,
            options.storage,
            raftSettings,
            options.random,
            settings.partition,
          ),
        );
        // Its only voter: no election to wait for (the cluster serves at once, instead of
        // each group waiting out a randomized election timeout, 1–2 s by default).
        node.groups.get(group)!.raw.campaign();
      }
      node.trace(`bootstraps ${node.ring.settings.partitions} partitions as one-voter groups`);
    }
    node.listen();
    node.loop.wake();
    return node;
  }

  /** Queues a node record for `to`; it leaves with the next round's frames (woken now). */
  private sendRecord(to: NodeId, record: DirectRecord): void {
    this.outbox.record(to, record);
    this.loop.wake();
  }

  /** Hosts `replica`: its raft log hands out snapshots only with a KV stream for them. */
  private adopt(replica: GroupReplica): void {
    const group = replica.group;
    replica.lastHeardTick = this.ticks;
    replica.log.claimStream = (snapshotIndex) => this.snapshots.claim(group, snapshotIndex);
    this.groups.set(group, replica);
    this.statusChanged = true;
    this.loop.touch(replica);
  }

  private listen(): void {
    this.unsubscribe.push(
      this.transport.on('frame', (from, frame) => this.onFrame(from, frame)),
      this.transport.on('peerUp', (peer) => {
        this.failedPeers.delete(peer);
        this.statusChanged = true;
      }),
      this.transport.on('peerDown', (peer, _reason, failed) => {
        // A link closed on purpose (unused for a minute, evicted, closed by the peer) is no
        // failure: the member stays live and the next send reopens the link. Counted as
        // failed, a member this node shares no group with went unreachable after a quiet
        // minute, and the planner would never add it to a group (rule 6).
        if (failed) this.failedPeers.add(peer);
        this.statusChanged = true;
        for (const replica of this.groups.values()) {
          if (replica.raw.role === 'leader') {
            const member = failed ? replicaOfNode(replica.confState, peer) : null;
            if (member !== null) {
              replica.raw.reportUnreachable(member);
              this.loop.touch(replica);
            }
          } else if (replica.raw.lead !== null && nodeOfReplica(replica.raw.lead) === peer) {
            // A hibernating follower of a leader it cannot reach must time out and campaign;
            // so must one whose leader's link closed even on purpose (its keepalives should
            // have kept it open).
            replica.quiesced = false;
          }
        }
      }),
    );
  }

  get busy(): boolean {
    return this.loop.busy;
  }

  /** The node's clock: the last tick's nowMs. */
  get nowMs(): number {
    return this.nowMsValue;
  }

  /** The shell calls this every tickMs with its clock: ticks every group, expires deadlines. */
  tick(nowMs: number): void {
    if (this.closedReason !== null) return;
    if (nowMs > this.nowMsValue) this.nowMsValue = nowMs;
    this.ticks++;
    for (const replica of this.groups.values()) {
      // Idleness is judged before the tick: a tick queues the next heartbeats.
      if (replica.removal !== null || replica.quiesced || this.maybeQuiesce(replica)) continue;
      replica.raw.tick();
    }
    this.router.onTick();
    this.snapshots.onTick();
    this.loop.tick();
    this.keepHibernatingLinks();
    if (this.ticks % this.settings.rebalanceEveryTicks === 0) {
      this.rebalance();
      this.collectStrayReplicas();
      if (this.removalNotices.size > 0) this.sendRemovalNotices();
    } else if (this.rebalanceSoon || this.movesInProgress > 0) {
      // A move's next step is planned at the next tick, not the next pass: a move is four
      // or five steps (learners, catch-up, swap, leave, hand-off), each waiting a whole
      // pass made growing 64 partitions to three voters take ~48 s instead of ~10 s.
      this.rebalance();
    }
    this.loop.wake();
    if (this.statusChanged && this.listeners.size > 0) {
      this.statusChanged = false;
      const status = this.status();
      for (const listener of this.listeners) listener(status);
    }
    for (const watcher of this.tickWatchers) watcher();
  }

  /**
   * CockroachDB's quiescence: a leader whose group stayed idle for quiesceAfterTicks tells
   * its members to hibernate and stops ticking it; nobody sends heartbeats for it until a
   * message, proposal or read wakes it. Liveness only: a follower wakes when the link to
   * its leader goes down (and then campaigns as usual); safety never depends on ticks.
   */
  private maybeQuiesce(replica: GroupReplica): boolean {
    const raw = replica.raw;
    if (raw.role !== 'leader' || !raw.isIdle() || replica.heldReady !== null) {
      replica.idleTicks = 0;
      return false;
    }
    if (++replica.idleTicks < this.settings.quiesceAfterTicks) return false;
    replica.quiesced = true;
    replica.idleTicks = 0;
    this.sendQuiesce(replica);
    return true;
  }

  /** Tells the group's other members to hibernate at the leader's term and commit. */
  private sendQuiesce(replica: GroupReplica): void {
    const c = replica.confState;
    const term = replica.raw.term;
    const commit = replica.applied.index;
    for (const id of new Set([...c.voters, ...c.learners])) {
      if (id === replica.replicaId) continue;
      this.outbox.record(nodeOfReplica(id), {
        kind: 'quiesce',
        group: replica.group,
        term,
        commit,
      });
    }
    this.loop.wake();
  }

  /** Every quiesceKeepaliveMs, each hibernating leader repeats its QUIESCE. */
  private keepHibernatingLinks(): void {
    const everyTicks = Math.max(
      1,
      Math.round(this.settings.quiesceKeepaliveMs / this.settings.tickMs),
    );
    if (this.ticks % everyTicks !== 0) return;
    for (const replica of this.groups.values()) {
      if (replica.quiesced && replica.raw.role === 'leader' && replica.removal === null) {
        this.sendQuiesce(replica);
      }
    }
  }

  /**
   * Whether `peer` counts as live: the registry has it up (or leaving), and its link is up
   * or has not failed since it was last up. Links open on demand (the WebRTC mesh connects
   * when something is sent), so a member the node never spoke to is live until a link to
   * it fails.
   */
  private isLive(peer: NodeId): boolean {
    if (peer === this.nodeId) return true;
    if (!this.registeredUp(peer)) return false;
    return !this.failedPeers.has(peer) || this.transport.peers().includes(peer);
  }

  /** Whether the registry has `peer` up (or leaving): a member this node may talk to. */
  private registeredUp(peer: NodeId): boolean {
    const state = this.registry.members.find((m) => m.nodeId === peer)?.state;
    return state === 'up' || state === 'left';
  }

  /**
   * One missing link (README): a record for `to`, whose link failed and has not come back
   * while the registry has it up, also goes through a node linked to both, we hope: a
   * replica of the record's partition (it exchanges Raft messages with `to` anyway), else
   * any member linked to this node. Null when the link is fine (the usual case, checked
   * first).
   */
  private relayFor(to: NodeId, group: GroupId): NodeId | null {
    if (!this.failedPeers.has(to)) return null;
    const linked = this.transport.peers();
    if (linked.includes(to) || !this.registeredUp(to)) return null;
    if (group >= 0 && group < this.ring.settings.partitions) {
      for (const id of this.placement.replicasOf(group)) {
        if (id !== to && id !== this.nodeId && linked.includes(id)) return id;
      }
    }
    for (const member of this.registry.members) {
      const id = member.nodeId;
      if (id !== to && id !== this.nodeId && member.state === 'up' && linked.includes(id)) {
        return id;
      }
    }
    return null;
  }

  /** A newer registry snapshot; older or equal epochs are ignored. */
  updateRegistry(snapshot: RegistrySnapshot): void {
    if (snapshot.epoch <= this.registry.epoch) return;
    this.registry = snapshot;
    this.placement = this.ring.placement(upMembers(snapshot));
    this.statusChanged = true;
    this.wakeFollowersOfLostLeaders();
    this.trace(`registry epoch ${snapshot.epoch}: placement over [${this.placement.members}]`);
  }

  /**
   * A hibernating follower whose leader is no longer live (the registry has it down or
   * gone, or its link failed) must time out and campaign: nothing else would wake it once
   * that leader never comes back (a lost disk rejoins under a new id).
   */
  private wakeFollowersOfLostLeaders(): void {
    for (const replica of this.groups.values()) {
      if (!replica.quiesced || replica.raw.role === 'leader') continue;
      const lead = replica.raw.lead;
      if (lead === null || !this.isLive(nodeOfReplica(lead))) replica.quiesced = false;
    }
  }

  /**
   * Asks the leader of `partition` to hand its leadership to this node's replica (thesis
   * §3.10; etcd's `move-leader`): for an operator moving load, or a test putting a leader
   * where it wants one. Returns once asked: the leader brings this replica's log up to
   * date and tells it to campaign, and abandons a transfer it cannot finish within an
   * election timeout; `status()` shows the outcome. Throws UNAVAILABLE if no voter of the
   * partition runs here, or it knows no leader to ask yet.
   */
  takeLeadership(partition: number): void {
    const replica = this.groups.get(partition);
    if (replica === undefined || this.closedReason !== null) {
      throw new MeshKvError(
        ErrorCode.UNAVAILABLE,
        `no replica of partition ${String(partition)} runs on ${this.nodeId}`,
        { partition },
      );
    }
    try {
      replica.raw.transferLeader(replica.replicaId);
    } catch (e) {
      if (!isRaftError(e)) throw e;
      throw new MeshKvError(
        ErrorCode.UNAVAILABLE,
        `cannot take the leadership of partition ${partition}: ${(e as Error).message}`,
        { partition },
      );
    }
    replica.leadershipAskedTick = this.ticks;
    replica.quiesced = false;
    this.loop.touch(replica);
  }

  /**
   * Whether `replica` (a leader) leads by request (takeLeadership): the term it won within
   * two election timeouts of the request (raft abandons a transfer after one) is kept.
   */
  private leadsByRequest(replica: GroupReplica): boolean {
    const term = replica.raw.term;
    if (
      replica.leadershipAskedTick >= 0 &&
      this.ticks - replica.leadershipAskedTick <= 2 * this.settings.electionTick
    ) {
      replica.keptLeadershipTerm = term;
      replica.leadershipAskedTick = -1;
    }
    return replica.keptLeadershipTerm === term;
  }

  // ---- The KV API -------------------------------------------------------------------------

  async put(key: string, value: string | Uint8Array, options: PutOptions = {}): Promise<true> {
    validateKey(key);
    const bytes = valueBytes(value);
    const ack = options.ack ?? 'majority';
    if (ack !== 'majority' && ack !== 'all') {
      throw new MeshKvError(
        ErrorCode.VALUE_INVALID,
        `ack must be 'majority' or 'all', got ${String(ack)}`,
      );
    }
    const outcome = await this.router.request(
      'put',
      this.ring.partitionOf(key),
      key,
      bytes,
      this.deadline(options.deadlineMs),
      ack === 'all',
    );
    if (outcome.kind !== 'boolean') throw new Error('put answered with a value');
    return true;
  }

  async get(key: string, options: GetOptions = {}): Promise<Uint8Array | null> {
    validateKey(key);
    const consistency = options.consistency ?? 'linearizable';
    if (consistency !== 'linearizable' && consistency !== 'local') {
      throw new MeshKvError(
        ErrorCode.VALUE_INVALID,
        `consistency must be 'linearizable' or 'local', got ${String(consistency)}`,
      );
    }
    const outcome = await this.router.request(
      consistency === 'local' ? 'localGet' : 'get',
      this.ring.partitionOf(key),
      key,
      null,
      this.deadline(options.deadlineMs),
      false,
    );
    if (outcome.kind !== 'value') throw new Error('get answered with a boolean');
    return outcome.value;
  }

  async delete(key: string, options: DeleteOptions = {}): Promise<boolean> {
    validateKey(key);
    const outcome = await this.router.request(
      'delete',
      this.ring.partitionOf(key),
      key,
      null,
      this.deadline(options.deadlineMs),
      false,
    );
    if (outcome.kind !== 'boolean') throw new Error('delete answered with a value');
    return outcome.value;
  }

  private deadline(deadlineMs: number | undefined): number {
    const chosen = deadlineMs ?? this.settings.defaultDeadlineMs;
    if (!Number.isSafeInteger(chosen) || chosen < 1 || chosen > this.settings.maxDeadlineMs) {
      throw new MeshKvError(
        ErrorCode.VALUE_INVALID,
        `deadlineMs must be an integer in [1, ${this.settings.maxDeadlineMs}], got ${String(deadlineMs)}`,
        { got: String(deadlineMs) },
      );
    }
    return chosen;
  }

  // ---- Membership -------------------------------------------------------------------------

  /**
   * Resolves once this node hosts no replica: the registry must already say it `left`, so
   * that the leaders move its replicas away. Fails with TIMEOUT at the deadline.
   */
  leave(options: { deadlineMs?: number } = {}): Promise<void> {
    const deadlineMs = options.deadlineMs ?? this.settings.maxDeadlineMs;
    const until = this.nowMsValue + deadlineMs;
    return new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (this.groups.size === 0) {
          stop();
          resolve();
        } else if (this.closedReason !== null) {
          stop();
          reject(closed(this.closedReason));
        } else if (this.nowMsValue >= until) {
          stop();
          reject(
            new MeshKvError(
              ErrorCode.TIMEOUT,
              `leave timed out after ${deadlineMs} ms: ${this.groups.size} replicas still here (partitions ${[...this.groups.keys()].slice(0, 10).join(', ')})`,
              { deadlineMs },
            ),
          );
        }
      };
      // Checked every tick (the deadline passes even if nothing changes) and at once.
      this.tickWatchers.add(check);
      const stop = () => this.tickWatchers.delete(check);
      check();
    });
  }

  /**
   * Leaders step their groups toward the placement, one configuration step at a time
   * (rebalancer.ts); the budget bounds the learners this node's groups catch up at once.
   */
  private rebalance(): void {
    this.rebalanceSoon = false;
    // Live: a link up now, to a member the registry does not hold down (a leaving member
    // is live: it must still ack the joint configuration that hands its replicas over).
    const reachable = new Set<NodeId>([this.nodeId]);
    for (const member of this.registry.members) {
      if (this.isLive(member.nodeId)) reachable.add(member.nodeId);
    }
    const led: GroupReplica[] = [];
    let moves = 0;
    for (const replica of this.groups.values()) {
      if (replica.removal !== null || replica.heldReady !== null) continue;
      if (replica.raw.role !== 'leader') continue;
      led.push(replica);
      moves += movesInConfig(replica.confState);
    }
    this.movesInProgress = moves;
    for (const replica of led) {
      const status = replica.raw.status();
      // The planner thinks in nodes; the configuration holds replicas (replica-id.ts).
      const progress = new Map<NodeId, ProgressStatus>();
      for (const [id, pr] of status.progress) progress.set(nodeOfReplica(id), pr);
      const target = this.placement.replicasOf(replica.group);
      if (target.length === 0) {
        this.placementNotes.set(replica.group, 'no member is up: nothing to place it on');
        continue;
      }
      const step = planReconfiguration({
        self: this.nodeId,
        confState: confOfNodes(status.config),
        confChangePending: replica.lastConfChangeIndex > replica.applied.index,
        leadTransferee:
          status.leadTransferee === null ? null : nodeOfReplica(status.leadTransferee),
        target,
        progress,
        lastIndex: status.lastIndex,
        reachable,
        catchUpLagEntries: this.settings.catchUpLagEntries,
        movesInProgress: moves,
        maxMovesPerNode: this.settings.maxMovesPerNode,
        leadershipTaken: this.leadsByRequest(replica),
      });
      if (step.kind === 'none') {
        this.placementNotes.set(replica.group, step.reason);
        continue;
      }
      this.placementNotes.set(replica.group, step.kind);
      replica.quiesced = false;
      this.loop.touch(replica);
      if (step.kind === 'addLearners') moves += step.nodes.length;
      try {
        const replicaStep = stepOfReplicas(step, status.config, status.lastIndex + 1);
        if (replicaStep.kind === 'transferLeader') {
          replica.raw.transferLeader(replicaStep.to);
        } else {
          const change = toConfChange(replicaStep);
          if (change !== null) replica.raw.proposeConfChange(change);
        }
        this.trace(`group ${replica.group}: ${JSON.stringify(step)}`);
      } catch (e) {
        if (!isRaftError(e)) throw e;
        this.placementNotes.set(replica.group, `${step.kind} refused: ${(e as Error).message}`);
      }
    }
  }

  /**
   * Replica GC for what the NOT_MEMBER answers cannot reach: a learner removed while it was
   * cut off never campaigns, a hibernating voter never ticks, and a voter that missed
   * several changes campaigns among members that may all be gone (deleted, or left the
   * cluster). A silent replica outside the placement is woken and asks the nodes of the
   * partition's placement, where the group's current members are, whether it is still a
   * member (MEMBER_QUERY, once per `replicaGcTicks`); a NOT_MEMBER answer deletes it. An
   * empty replica is deleted at once: it holds no entries (nothing acknowledged to
   * lose), and its tombstone keeps its term and vote. A learner with data is not: its
   * log may hold the committed change that promoted it (a promoted replica votes and
   * acknowledges before it applies the change), so only the group can tell.
   */
  private collectStrayReplicas(): void {
    for (const replica of this.groups.values()) {
      if (replica.removal !== null || replica.heldReady !== null) continue;
      if (replica.retiring !== null) this.askVotersIfRetired(replica);
      if (this.ticks - replica.lastHeardTick < this.settings.replicaGcTicks) continue;
      if (this.placement.replicasOf(replica.group).includes(this.nodeId)) continue;
      if (replica.retiring !== null) {
        // Its voters may have moved on and left the group meanwhile: the placement knows.
        this.askPlacementIfMember(replica);
        continue;
      }
      if (replica.raw.role === 'leader') continue;
      if (replica.initialized) {
        replica.quiesced = false;
        this.askPlacementIfMember(replica);
        continue;
      }
      replica.removal = 'not placed here, and silent';
      this.trace(
        `group ${replica.group}: not placed here and no message for ${this.settings.replicaGcTicks} ticks: deleting this empty replica`,
      );
      this.loop.touch(replica);
    }
  }

  private askPlacementIfMember(replica: GroupReplica): void {
    if (this.ticks - replica.lastMemberQueryTick < this.settings.replicaGcTicks) return;
    replica.lastMemberQueryTick = this.ticks;
    for (const node of this.placement.replicasOf(replica.group)) {
      if (node === this.nodeId || !this.isLive(node)) continue;
      this.outbox.record(node, {
        kind: 'memberQuery',
        group: replica.group,
        replica: replica.replicaId,
      });
    }
  }

  /**
   * A leader applied a configuration without learners of `before`: each is told so once
   * that is durable here, every rebalancing pass for `replicaGcTicks` (while the registry
   * has its node up). A learner that missed the commit of its removal — cut off meanwhile,
   * or removed by a new leader before their link was open — hears nothing more from the
   * group: it would wait out `replicaGcTicks` of silence and ask, serving stale local
   * reads and showing a replica the group no longer has meanwhile. Learners only: a
   * removed voter's vote may still be needed by members that have not durably applied the
   * change (a leader back in the joint configuration), which is why a retiring voter waits
   * for a majority (confirmRetirement); this leader alone cannot say so. Best effort:
   * replica GC, which needs no notice, stays the backstop.
   */
  private noteRemovals(
    replica: GroupReplica,
    confState: ConfState,
    index: number,
    before: ConfState,
  ): void {
    let notices = this.removalNotices.get(replica.group);
    for (const id of before.learners) {
      if (isReplicaIn(confState, id) || nodeOfReplica(id) === this.nodeId) continue;
      if (notices === undefined) {
        notices = [];
        this.removalNotices.set(replica.group, notices);
      }
      if (notices.some((n) => n.replica === id)) continue;
      if (notices.length >= MAX_REMOVAL_NOTICES_PER_GROUP) notices.shift();
      notices.push({
        replica: id,
        removedAtIndex: index,
        untilTick: this.ticks + this.settings.replicaGcTicks,
      });
    }
  }

  /** NOT_MEMBER to the replicas noted by noteRemovals whose removal is durable here. */
  private sendRemovalNotices(): void {
    for (const [group, notices] of this.removalNotices) {
      const replica = this.groups.get(group);
      if (replica === undefined || replica.removal !== null || replica.retiring !== null) {
        this.removalNotices.delete(group);
        continue;
      }
      const durable = replica.durableApplied;
      // A member of that configuration itself (answerMemberQuery's rule).
      const member = replicaOfNode(durable.confState, this.nodeId) === replica.replicaId;
      for (let i = notices.length - 1; i >= 0; i--) {
        const notice = notices[i]!;
        const node = nodeOfReplica(notice.replica);
        if (this.ticks >= notice.untilTick || isReplicaIn(durable.confState, notice.replica)) {
          notices.splice(i, 1); // Long enough for replica GC, or added back since.
          continue;
        }
        if (!member || notice.removedAtIndex > durable.index || !this.registeredUp(node)) continue;
        this.outbox.record(node, {
          kind: 'notMember',
          group,
          configIndex: durable.index,
          replica: notice.replica,
        });
      }
      if (notices.length === 0) this.removalNotices.delete(group);
    }
  }

  /** A retiring replica asks its configuration's voters, every rebalancing pass. */
  private askVotersIfRetired(replica: GroupReplica): void {
    for (const id of replica.confState.voters) {
      const node = nodeOfReplica(id);
      if (node === this.nodeId || !this.isLive(node)) continue;
      this.outbox.record(node, {
        kind: 'memberQuery',
        group: replica.group,
        replica: replica.replicaId,
      });
    }
  }

  /**
   * MEMBER_QUERY: NOT_MEMBER if this node's replica, a member, applied durably a
   * configuration without the asker at or past the index that added it (incarnation:
   * replica-id.ts). Such a configuration is committed, and a replica id is never added
   * twice, so the asker was removed for good (or its addition never committed); durably,
   * so this node never needs the asker again for it (a retiring asker counts on that).
   * Anything else stays unanswered.
   */
  private answerMemberQuery(from: PeerId, group: GroupId, asker: NodeId): void {
    const replica = this.groups.get(group);
    if (replica === undefined || nodeOfReplica(asker) !== from) return;
    if (replica.removal !== null || replica.retiring !== null) return;
    const durable = replica.durableApplied;
    if (durable.index < incarnationOf(asker)) return;
    if (replicaOfNode(durable.confState, from) === asker) return;
    if (replicaOfNode(durable.confState, this.nodeId) !== replica.replicaId) return;
    this.outbox.record(from, {
      kind: 'notMember',
      group,
      configIndex: durable.index,
      replica: asker,
    });
  }

  /**
   * NOT_MEMBER to a retiring replica: one more voter confirms; a majority ends it. An
   * answer from outside those voters (the placement's, asked after a long silence) with a
   * later configuration ends it too: the group went through further changes without it.
   */
  private confirmRetirement(from: PeerId, replica: GroupReplica, configIndex: number): void {
    const retiring = replica.retiring!;
    if (configIndex < retiring.removedAtIndex) return;
    const voters = replica.confState.voters;
    let why: string;
    if (replicaOfNode(replica.confState, from) !== null) {
      retiring.confirmedBy.add(from);
      let confirmed = 0;
      for (const id of voters) if (retiring.confirmedBy.has(nodeOfReplica(id))) confirmed++;
      if (confirmed * 2 <= voters.length) return;
      why = `${confirmed} of its ${voters.length} voters applied its removal at ${retiring.removedAtIndex} durably`;
    } else {
      if (configIndex === retiring.removedAtIndex) return;
      if (this.ticks - replica.lastHeardTick < this.settings.replicaGcTicks) return;
      why = `${from}, a later member, applied configuration ${configIndex} durably`;
    }
    replica.removal = 'removed from the configuration';
    this.loop.touch(replica);
    this.trace(`group ${replica.group}: ${why}`);
  }

  // ---- Frames -----------------------------------------------------------------------------

  private onFrame(from: PeerId, frame: Uint8Array): void {
    if (this.closedReason !== null) return;
    const decoded = decodeFrame(frame);
    if (!decoded.ok) {
      this.trace(`drops a frame from ${from}: ${decoded.reason}`);
      return;
    }
    for (const record of decoded.records) this.onRecord(from, record);
    this.loop.wake();
  }

  /** `relayed`: `from` is the record's author, its link to here down (README "One missing link"). */
  private onRecord(from: PeerId, record: WireRecord, relayed = false): void {
    switch (record.kind) {
      case 'raft':
        this.onRaft(from, record.message);
        return;
      case 'relayed':
        if (record.target === this.nodeId) {
          if (record.author !== this.nodeId) this.onRecord(record.author, record.record, true);
        } else if (from === record.author && this.transport.peers().includes(record.target)) {
          // Forwarded once, for its author only, over a link that is up: no loop, no
          // second hop. Over a link that is down too it is lost, as any frame may be.
          this.outbox.forward(record);
        }
        return;
      case 'request':
        this.router.serve(from, record);
        return;
      case 'response':
        this.router.onResponse(from, record);
        return;
      case 'snapshotPull':
        this.snapshots.onPull(from, record);
        return;
      case 'snapshotChunk':
        this.snapshots.onChunk(from, record);
        return;
      case 'snapshotAbort':
        this.snapshots.onAbort(from, record);
        return;
      case 'notMember': {
        const replica = this.groups.get(record.group);
        if (replica === undefined || replica.removal !== null) return;
        if (replica.replicaId !== record.replica) return; // About an earlier replica here.
        if (replica.retiring !== null) {
          this.confirmRetirement(from, replica, record.configIndex);
          return;
        }
        // Not before the configuration change that added this replica: a member that had
        // not applied it yet speaks of an older configuration.
        if (
          record.configIndex > replica.applied.index &&
          record.configIndex >= incarnationOf(replica.replicaId)
        ) {
          replica.removal = 'told it is not a member';
          this.loop.touch(replica);
          this.trace(
            `group ${record.group}: ${from} says it is not a member as of ${record.configIndex} (applied here: ${replica.applied.index})`,
          );
        }
        return;
      }
      case 'memberQuery':
        this.answerMemberQuery(from, record.group, record.replica);
        return;
      case 'quiesce': {
        // Hibernate only in step with the leader: same term, everything it committed applied.
        const replica = this.groups.get(record.group);
        if (replica === undefined || replica.removal !== null) return;
        const raw = replica.raw;
        // A QUIESCE still in flight when its sender's link failed is stale: hibernating on it
        // would wait for a leader that may never come back. One relayed because that link is
        // down is not: its leader is up in the registry, which marking it down wakes us.
        if (
          raw.lead === null ||
          nodeOfReplica(raw.lead) !== from ||
          raw.term !== record.term ||
          replica.applied.index < record.commit ||
          !(relayed ? this.registeredUp(from) : this.isLive(from))
        ) {
          return;
        }
        replica.lastHeardTick = this.ticks; // The leader is there, only idle.
        if (raw.isIdle()) replica.quiesced = true;
        return;
      }
    }
  }

  private onRaft(from: PeerId, message: Message): void {
    if (nodeOfReplica(message.to) !== this.nodeId || nodeOfReplica(message.from) !== from) return;
    let replica = this.groups.get(message.groupId);
    if (replica !== undefined && replica.replicaId !== message.to) {
      // For another replica of this group here: an older one's message is stale; a newer
      // one exists in the group's configuration, so the one here was removed from it.
      if (
        incarnationOf(message.to) > incarnationOf(replica.replicaId) &&
        replica.removal === null
      ) {
        replica.removal = 'superseded by a newer replica of the group';
        this.trace(`group ${replica.group}: ${message.to} supersedes ${replica.replicaId}`);
        this.loop.touch(replica);
      }
      return;
    }
    if (replica === undefined) {
      // A leader reaches a replica it added: host it, empty, until its snapshot arrives —
      // unless it is one deleted here (or older): its messages in flight are stale.
      if (!MESSAGE_TYPES_THAT_CREATE.has(message.type)) return;
      const tombstone = this.tombstones.get(message.groupId);
      if (
        tombstone !== undefined &&
        incarnationOf(message.to) <= incarnationOf(tombstone.replica)
      ) {
        return;
      }
      if (message.groupId >= this.ring.settings.partitions) return;
      replica = GroupReplica.created(
        message.groupId,
        message.to,
        null,
        this.tombstones.get(message.groupId) ?? null,
        this.storage,
        this.settings,
        this.random,
        this.settings.partition,
      );
      this.adopt(replica);
      this.trace(`group ${message.groupId}: hosted, empty, on a message from ${from}`);
    }
    if (replica.removal !== null) return;
    if (message.type === MessageType.Heartbeat && message.commit > replica.log.lastIndex()) {
      // A leader's heartbeat commits at most what this replica acknowledged holding. More
      // is a stale heartbeat meant for a replica deleted here before (or delayed past its
      // removal and return): raft would take it as a lost log. It is dropped.
      return;
    }
    replica.lastHeardTick = this.ticks;
    if (replica.quiesced && !keepsHibernating(replica, message)) replica.quiesced = false;
    try {
      replica.raw.step(message);
      this.loop.touch(replica);
    } catch (e) {
      if (
        isRaftError(e, RaftErrorCode.StepPeerNotFound) ||
        isRaftError(e, RaftErrorCode.InvalidMessage) ||
        isRaftError(e, RaftErrorCode.StepLocalMessage)
      ) {
        return;
      }
      throw e;
    }
  }

  // ---- Loop callbacks ---------------------------------------------------------------------

  private readyTaken(replica: GroupReplica, ready: Ready): void {
    this.router.closeReadRound(replica.group);
    if (ready.readStates.length > 0) this.router.onReadStates(replica.group, ready.readStates);
    if (ready.softState !== null) {
      this.statusChanged = true;
      if (ready.softState.role !== 'leader') {
        const lead = ready.softState.lead;
        this.router.abandonServed(replica.group, lead === null ? null : nodeOfReplica(lead));
      }
    }
  }

  private appliedResults(replica: GroupReplica, results: readonly AppliedCommand[]): void {
    this.router.onApplied(replica, results);
  }

  private forgetGroup(replica: GroupReplica): void {
    this.groups.delete(replica.group);
    this.snapshots.dropGroup(replica.group);
    this.router.abandonServed(replica.group, null);
    this.statusChanged = true;
    this.trace(`group ${replica.group}: replica and data removed (${replica.removal})`);
  }

  private fail(error: unknown): void {
    this.fatalError = error;
    this.trace(`stops: ${String(error)}`);
    this.router.close(`failed (${String(error)})`);
    this.closedReason = 'failed';
  }

  // ---- Status -----------------------------------------------------------------------------

  status(): NodeStatus {
    const groups: GroupStatus[] = [];
    for (const replica of this.groups.values()) groups.push(this.groupStatus(replica));
    groups.sort((a, b) => a.partition - b.partition);
    return {
      nodeId: this.nodeId,
      epoch: this.registry.epoch,
      nowMs: this.nowMsValue,
      peers: [...this.transport.peers()].sort(),
      unreachable: this.unreachableMembers(),
      groups,
      movesInProgress: this.movesInProgress,
      pendingRequests: this.router.pendingRequests,
      servedRequests: this.router.servedRequests,
      snapshotsInstalled: this.snapshots.installed,
      batchesWritten: this.loop.batches,
      framesSent: this.outbox.framesSent,
      recordsRelayed: this.outbox.recordsRelayed,
      recordsForwarded: this.outbox.recordsForwarded,
      closed: this.closedReason !== null,
    };
  }

  private unreachableMembers(): NodeId[] {
    const unreachable: NodeId[] = [];
    for (const member of this.registry.members) {
      const { nodeId, state } = member;
      if (nodeId === this.nodeId || (state !== 'up' && state !== 'left')) continue;
      if (!this.isLive(nodeId)) unreachable.push(nodeId);
    }
    return unreachable.sort();
  }

  private groupStatus(replica: GroupReplica): GroupStatus {
    const s = replica.raw.status();
    const followers: FollowerStatus[] = [];
    for (const [id, pr] of s.progress) {
      if (id === replica.replicaId) continue;
      followers.push({
        id: nodeOfReplica(id),
        match: pr.match,
        lag: s.lastIndex - pr.match,
        state: pr.state,
      });
    }
    return {
      partition: replica.group,
      replica: replica.replicaId,
      role: s.role,
      term: s.term,
      leader: s.lead === null ? null : nodeOfReplica(s.lead),
      commit: s.commit,
      applied: replica.applied.index,
      lastIndex: s.lastIndex,
      logEntries: s.lastIndex - replica.log.firstIndex() + 1,
      voters: s.config.voters.map(nodeOfReplica),
      learners: s.config.learners.map(nodeOfReplica),
      votersOutgoing: s.config.votersOutgoing.map(nodeOfReplica),
      followers,
      initialized: replica.initialized,
      installingSnapshot: replica.heldReady !== null,
      retiring: replica.retiring !== null,
      placement: this.placementNotes.get(replica.group) ?? '',
    };
  }

  /** Calls `listener` with the status whenever it changed (at most once per tick). */
  subscribe(listener: (status: NodeStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Fails every pending request (CLOSED), stops the loop after its round, closes streams. */
  async close(): Promise<void> {
    if (this.closedReason === null) {
      this.closedReason = 'was closed';
      this.router.close(this.closedReason);
    }
    for (const off of this.unsubscribe.splice(0)) off();
    await this.loop.stop();
    this.snapshots.close();
    this.outbox.flush();
    this.listeners.clear();
  }

  /** The error that stopped the node, if one did (status and the shells' logs). */
  get failure(): unknown {
    return this.fatalError;
  }

  private trace(line: string): void {
    this.observer.trace?.(`${this.nodeId}: ${line}`);
  }
}

/**
 * Heartbeat traffic of the current term does not wake a hibernating replica: the leader's
 * last round can arrive after its QUIESCE, and a follower woken by it would tick, hear no
 * more heartbeats and campaign. Everything else (entries, votes, a newer term) wakes it.
 */
function keepsHibernating(replica: GroupReplica, message: Message): boolean {
  const raw = replica.raw;
  if (message.term !== raw.term) return false;
  if (message.type === MessageType.HeartbeatResp) return raw.role === 'leader';
  return message.type === MessageType.Heartbeat && message.from === raw.lead;
}

/** A configuration with each replica id replaced by its node's id (what the planner reads). */
function confOfNodes(c: ConfState): ConfState {
  return {
    voters: c.voters.map(nodeOfReplica),
    learners: c.learners.map(nodeOfReplica),
    votersOutgoing: c.votersOutgoing.map(nodeOfReplica),
    learnersNext: c.learnersNext.map(nodeOfReplica),
    autoLeave: c.autoLeave,
  };
}

/**
 * The planner's step (in nodes) in replicas: a node added gets a new replica id whose
 * incarnation is the index its configuration change takes (`nextIndex`, the leader's last
 * index + 1: proposing appends at once), unique in the group; the others name replicas
 * the configuration holds.
 */
function stepOfReplicas(step: RebalanceStep, c: ConfState, nextIndex: number): RebalanceStep {
  const member = (node: NodeId): NodeId => {
    const id = replicaOfNode(c, node);
    if (id === null) throw new Error(`planner named ${node}, which has no replica in the group`);
    return id;
  };
  switch (step.kind) {
    case 'addLearners':
      return { kind: 'addLearners', nodes: step.nodes.map((n) => replicaId(n, nextIndex)) };
    case 'enterJoint':
      return {
        kind: 'enterJoint',
        promote: step.promote.map(member),
        remove: step.remove.map(member),
      };
    case 'removeLearners':
      return { kind: 'removeLearners', nodes: step.nodes.map(member) };
    case 'transferLeader':
      return { kind: 'transferLeader', to: member(step.to) };
    default:
      return step;
  }
}

function ringSettings(registry: RegistrySnapshot) {
  const { partitions, replicationFactor, tokensPerNode } = registry.settings;
  return { partitions, replicationFactor, tokensPerNode };
}

/** The members placed: those `up` (down, left and retired ones are re-placed). */
function upMembers(registry: RegistrySnapshot): NodeId[] {
  return registry.members.filter((m) => m.state === 'up').map((m) => m.nodeId);
}

function isFirstMember(registry: RegistrySnapshot, nodeId: NodeId): boolean {
  let first: { nodeId: NodeId; joinedAtEpoch: number } | null = null;
  for (const m of registry.members) {
    if (first === null || m.joinedAtEpoch < first.joinedAtEpoch) first = m;
  }
  return first !== null && first.nodeId === nodeId;
}

function resolveSettings(given: Partial<MeshNodeSettings> | undefined): MeshNodeSettings {
  const settings: MeshNodeSettings = { ...meshNodeDefaults, ...given };
  for (const [name, value] of Object.entries(settings)) {
    if (name === 'partition') continue;
    if (!Number.isSafeInteger(value) || (value as number) < 0) {
      throw new RangeError(
        `MeshNode setting ${name} must be a non-negative integer, got ${String(value)}`,
      );
    }
  }
  if (settings.tickMs < 1) throw new RangeError('tickMs must be at least 1');
  if (settings.electionTick <= settings.heartbeatTick) {
    throw new RangeError('electionTick must exceed heartbeatTick');
  }
  return settings;
}
