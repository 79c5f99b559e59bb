/**
 * The node-level Prometheus metrics of a Node peer (README "HTTP API", metrics table), next
 * to the HTTP API's own request metrics (http.node.ts). The core never reads a clock or
 * knows prom-client: the shell (peer.node.ts) gives the MeshNode a storage wrapped by
 * `meterStorage` (each batch timed and sized here), the `observer` (hooks called on rare
 * events only), and `meterLinks(transport)` (per-peer counters the transport keeps anyway,
 * read at scrape time). `observe(status)` sets the status gauges once per scrape.
 *
 *   const metrics = new NodeMetrics();
 *   const storage = metrics.meterStorage(await openDiskStorage(dir));
 *   const node = await MeshNode.start({ storage, observer: metrics.observer, ... });
 *   metrics.meterLinks(mesh);
 *   const api = createHttpApi({ node, token, metrics });   // /metrics serves metrics.registry
 *
 * Hot-path cost: one clock read before and after each storage batch, a loop over the
 * batch's parts and entries to size it (no allocation), three histogram observations per
 * batch; nothing per frame or per entry applied.
 */
import type { GroupId } from '@meshkv/raft';
import type {
  NodeState,
  NodeStorage,
  SnapshotChunkOptions,
  SnapshotRestore,
  WriteBatch,
} from '@meshkv/storage';
import type { PeerId, Transport } from '@meshkv/transport';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { MeshNodeObserver, NodeStatus } from './mesh-node.ts';

/** Per-peer series kept at most (a cluster's members; peers past it are not exported). */
export const MAX_METERED_PEERS = 256;

const DURATION_BUCKETS_SECONDS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
];
const COUNT_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
const BYTES_BUCKETS = [
  1024,
  4096,
  16 * 1024,
  64 * 1024,
  256 * 1024,
  1024 * 1024,
  4 * 1024 * 1024,
  16 * 1024 * 1024,
  64 * 1024 * 1024,
];

type LinkSource = Pick<Transport, 'peers' | 'stats'>;

export class NodeMetrics {
  readonly registry = new Registry();
  /** The MeshNode's observer: counts leaderships won and proposals refused. */
  readonly observer: MeshNodeObserver;

  private readonly groups = this.gauge('meshkv_groups_hosted', 'Raft groups (partitions) hosted');
  private readonly leaders = this.gauge('meshkv_leaders_held', 'Groups this node leads');
  private readonly term = this.gauge('meshkv_raft_term', 'Raft term per hosted partition', [
    'partition',
  ]);
  private readonly commitLag = this.gauge(
    'meshkv_raft_commit_lag_entries',
    "Entries in this replica's log not known committed (last index - commit), per partition",
    ['partition'],
  );
  private readonly applyLag = this.gauge(
    'meshkv_raft_apply_lag_entries',
    'Committed entries not yet applied, per hosted partition',
    ['partition'],
  );
  private readonly followerLag = this.gauge(
    'meshkv_raft_follower_lag_entries',
    "Entries a follower is behind the leader's log, per partition this node leads",
    ['partition', 'follower'],
  );
  private readonly moves = this.gauge(
    'meshkv_moves_in_progress',
    "Learners this node's led groups are catching up",
  );
  private readonly pending = this.gauge('meshkv_pending_requests', "The node's pending requests");
  private readonly peers = this.gauge('meshkv_peers_connected', 'Peers whose link is up');
  private readonly epoch = this.gauge('meshkv_registry_epoch', 'The registry epoch last seen');
  private readonly batches = this.counter(
    'meshkv_storage_batches_written_total',
    'Storage batches written by the node loop',
  );
  private readonly frames = this.counter('meshkv_frames_sent_total', 'Wire frames sent to peers');
  private readonly snapshots = this.counter(
    'meshkv_snapshots_installed_total',
    'Snapshots installed on this node',
  );
  private readonly recordsRelayed = this.counter(
    'meshkv_records_relayed_total',
    'Records of this node also sent through a relay because their link was down',
  );
  private readonly recordsForwarded = this.counter(
    'meshkv_records_forwarded_total',
    'Records this node forwarded for another node whose link to their target was down',
  );
  private readonly leaderships = this.counter(
    'meshkv_raft_leaderships_total',
    'Times this node became leader of a group',
  );
  private readonly proposalsDropped = this.counter(
    'meshkv_raft_proposals_dropped_total',
    'Writes raft refused to propose here, by reason (full: the uncommitted log is full; not_leader)',
    ['reason'],
  );
  private readonly batchSeconds = this.histogram(
    'meshkv_storage_batch_duration_seconds',
    'Time one storage batch took to be durable (write() call to its promise settling)',
    DURATION_BUCKETS_SECONDS,
  );
  private readonly batchGroups = this.histogram(
    'meshkv_storage_batch_groups',
    'Groups (parts) per storage batch',
    COUNT_BUCKETS,
  );
  private readonly batchEntries = this.histogram(
    'meshkv_storage_batch_entries',
    'Raft log entries appended per storage batch',
    [0, ...COUNT_BUCKETS],
  );
  private readonly batchEntryBytes = this.histogram(
    'meshkv_storage_batch_entry_bytes',
    'Bytes of raft entry data appended per storage batch',
    [0, ...BYTES_BUCKETS],
  );
  private readonly batchFailures = this.counter(
    'meshkv_storage_batch_failures_total',
    'Storage batches that failed (the node stops on one)',
  );
  private readonly peerFramesSent = this.peerCounter('frames_sent', 'Frames sent to the peer');
  private readonly peerBytesSent = this.peerCounter('bytes_sent', 'Frame bytes sent to the peer');
  private readonly peerFramesReceived = this.peerCounter(
    'frames_received',
    'Frames received from the peer',
  );
  private readonly peerBytesReceived = this.peerCounter(
    'bytes_received',
    'Frame bytes received from the peer',
  );
  private readonly peerFramesDropped = this.peerCounter(
    'frames_dropped',
    'Frames to the peer the transport dropped (link down, queue full, closed)',
  );

  /** The node's monotonic status counts as last exported (the Counters advance by the difference). */
  private readonly exported = new Map<Counter, number>();
  private links: LinkSource | null = null;
  /** Peers ever seen up, whose link counters are exported (at most MAX_METERED_PEERS). */
  private readonly linkPeers = new Set<PeerId>();

  constructor() {
    const leaderships = this.leaderships;
    const dropped = this.proposalsDropped;
    this.observer = {
      leader: () => leaderships.inc(),
      proposalDropped: (_group, reason) => dropped.inc({ reason }),
    };
  }

  /** `storage` with every write() timed and sized into the batch metrics. */
  meterStorage(storage: NodeStorage): NodeStorage {
    return new MeteredStorage(storage, this);
  }

  /** Exports `links`' per-peer frame and byte counters at each scrape. */
  meterLinks(links: LinkSource): void {
    this.links = links;
  }

  /** One storage batch settled after `seconds` (MeteredStorage). */
  batchWritten(batch: WriteBatch, seconds: number, failed: boolean): void {
    let entries = 0;
    let entryBytes = 0;
    for (const part of batch.groups) {
      const partEntries = part.entries;
      if (partEntries === undefined) continue;
      entries += partEntries.length;
      for (let i = 0; i < partEntries.length; i++) entryBytes += partEntries[i]!.data.length;
    }
    this.batchSeconds.observe(seconds);
    this.batchGroups.observe(batch.groups.length);
    this.batchEntries.observe(entries);
    this.batchEntryBytes.observe(entryBytes);
    if (failed) this.batchFailures.inc();
  }

  /** Sets the status gauges and reads the link counters (once per scrape). */
  observe(status: NodeStatus): void {
    this.term.reset();
    this.commitLag.reset();
    this.applyLag.reset();
    this.followerLag.reset();
    let leaders = 0;
    for (const group of status.groups) {
      const partition = String(group.partition);
      this.term.set({ partition }, group.term);
      this.commitLag.set({ partition }, group.lastIndex - group.commit);
      this.applyLag.set({ partition }, group.commit - group.applied);
      if (group.role !== 'leader') continue;
      leaders++;
      for (const follower of group.followers) {
        this.followerLag.set({ partition, follower: follower.id }, follower.lag);
      }
    }
    this.groups.set(status.groups.length);
    this.leaders.set(leaders);
    this.moves.set(status.movesInProgress);
    this.pending.set(status.pendingRequests);
    this.peers.set(status.peers.length);
    this.epoch.set(status.epoch);
    this.advance(this.batches, status.batchesWritten);
    this.advance(this.frames, status.framesSent);
    this.advance(this.snapshots, status.snapshotsInstalled);
    this.advance(this.recordsRelayed, status.recordsRelayed);
    this.advance(this.recordsForwarded, status.recordsForwarded);
    this.observeLinks();
  }

  /** Moves `counter` to the node's count `now` (a count that went back is not subtracted). */
  private advance(counter: Counter, now: number): void {
    const exported = this.exported.get(counter) ?? 0;
    if (now > exported) counter.inc(now - exported);
    this.exported.set(counter, now);
  }

  private observeLinks(): void {
    const links = this.links;
    if (links === null) return;
    for (const peer of links.peers()) {
      if (this.linkPeers.size >= MAX_METERED_PEERS) break;
      this.linkPeers.add(peer);
    }
    // The transport's counts are totals (kept across reconnections): exported as they are.
    this.peerFramesSent.reset();
    this.peerBytesSent.reset();
    this.peerFramesReceived.reset();
    this.peerBytesReceived.reset();
    this.peerFramesDropped.reset();
    for (const peer of this.linkPeers) {
      const stats = links.stats(peer);
      const labels = { peer };
      this.peerFramesSent.inc(labels, stats.framesSent);
      this.peerBytesSent.inc(labels, stats.bytesSent);
      this.peerFramesReceived.inc(labels, stats.framesReceived);
      this.peerBytesReceived.inc(labels, stats.bytesReceived);
      this.peerFramesDropped.inc(labels, stats.framesDropped);
    }
  }

  private gauge(name: string, help: string, labelNames: string[] = []): Gauge {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  private counter(name: string, help: string, labelNames: string[] = []): Counter {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private peerCounter(what: string, help: string): Counter {
    return this.counter(`meshkv_peer_${what}_total`, help, ['peer']);
  }

  private histogram(name: string, help: string, buckets: number[]): Histogram {
    return new Histogram({ name, help, buckets, registers: [this.registry] });
  }
}

/** A NodeStorage whose write() reports each batch's duration and size to NodeMetrics. */
class MeteredStorage implements NodeStorage {
  constructor(
    private readonly inner: NodeStorage,
    private readonly metrics: NodeMetrics,
  ) {}

  get name(): string {
    return this.inner.name;
  }

  load(): Promise<NodeState> {
    return this.inner.load();
  }

  async write(batch: WriteBatch): Promise<void> {
    const startedMs = performance.now();
    let failed = true;
    try {
      await this.inner.write(batch);
      failed = false;
    } finally {
      this.metrics.batchWritten(batch, (performance.now() - startedMs) / 1000, failed);
    }
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
