/**
 * The Node peer process shell (`meshkv node`, cli.node.ts): one MeshNode on a data
 * directory, joined to the signaling server, over a WebRTC mesh, on LevelDB.
 *
 * Contract of `NodePeer.start(options)`:
 * - Takes the data directory's lock first (DIR/lock, see `lockDataDir`): a directory
 *   another live process holds is refused with a PeerStartError, before anything is read.
 * - DIR/identity.json holds the node id and member secret (written atomically: temporary
 *   file, fsync, rename, fsync of the directory) BEFORE the MeshNode writes anything, so a
 *   store never holds promises made under an id it cannot prove. A DIR with an identity
 *   rejoins under it with its secret; a fresh DIR joins without one (the registry issues
 *   the id, or takes `options.nodeId`) and the node starts with `newIdentity`.
 * - Identity is bound to storage (DESIGN "Membership and rebalancing"): a store refused as
 *   corrupt, or a store without an identity file, is set aside (renamed
 *   DIR/store.set-aside-<ms>, kept for inspection, never used again) and the node joins as
 *   a NEW member; the old id is removed from its groups like any departed member.
 * - A join refused with `wrong_secret` (the registry binds the id to other storage, or no
 *   longer knows it: e.g. a wiped registry) stops the start with a PeerStartError: wiping
 *   the data automatically there could destroy every copy of a cluster whose registry was
 *   lost; deleting DIR (or starting with another) is the operator's decision.
 * - ICE is bound to `iceBindAddress` (default 127.0.0.1) with no STUN server: a local
 *   cluster keeps all its traffic on loopback unless the caller opts out.
 * - `options.http`: the HTTP API (http.node.ts) listens before the registry join, so its
 *   address goes into the member record (`httpAddress`: clients find the peers' endpoints
 *   in the registry); until the node runs it answers 503 UNAVAILABLE. A wildcard host
 *   (0.0.0.0, ::) names no address a client could use and is not registered.
 * - `stop({leave})`: with `leave`, the registry leave and `node.leave()` (every replica
 *   handed off) first; then the HTTP API, the node, the mesh, the signaling client, the
 *   storage and the lock are closed, in that order. Without `leave`, groups and data stay.
 */
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileDurably } from '@meshkv/signaling/durable-file';
import { type NodeStorage, StorageError } from '@meshkv/storage';
import { openDiskStorage, openLevelEngine } from '@meshkv/storage/node';
import {
  DEFAULT_CLUSTER_ID,
  type RegistrySnapshot,
  SignalingChannel,
  type SignalingClient,
  type WebRtcMesh,
} from '@meshkv/transport';
import { createNodeWebRtcMesh } from '@meshkv/transport/node';
import { ErrorCode, MeshKvError } from './errors.ts';
import { createHttpApi, type HttpApi, type KvNode } from './http.node.ts';
import {
  cryptoRandom,
  type Identity,
  isIdentityRefused,
  joinRegistry,
  parseIdentity,
  startBoundToStorage,
} from './identity.ts';
import { MeshNode, type MeshNodeSettings, meshNodeDefaults, type NodeStatus } from './mesh-node.ts';
import { NodeMetrics } from './metrics.node.ts';

/** How often a peer looks for links that keep failing (to log them). */
const LINK_FAILURE_CHECK_MS = 1_000;

/** A start refused for a reason the operator must act on (exit 1 with this message). */
export class PeerStartError extends Error {
  override readonly name = 'PeerStartError';
}

export interface PeerOptions {
  readonly signalingUrl: string;
  readonly token: string;
  readonly dataDir: string;
  /** Default DEFAULT_CLUSTER_ID. */
  readonly clusterId?: string;
  /** The id a fresh data directory asks for; one with an identity must match it. */
  readonly nodeId?: string;
  /** Address ICE binds its candidates to. Default 127.0.0.1 (loopback only). */
  readonly iceBindAddress?: string;
  /**
   * Serve the HTTP API (http.node.ts) on this address once the node runs (port 0: any
   * free port). Non-loopback clients must carry the cluster token.
   */
  readonly http?: { readonly host: string; readonly port: number };
  readonly settings?: Partial<MeshNodeSettings>;
  /** One line per notable event. Default: stdout. */
  readonly log?: (line: string) => void;
}

const IDENTITY_FILE = 'identity.json';
const STORE_DIR = 'store';
const LOCK_DIR = 'lock';
/** An identity file is a few hundred bytes; anything far larger is not one. */
const MAX_IDENTITY_FILE_BYTES = 4096;
/** How long a graceful leave may take to hand every replica off. */
export const LEAVE_DEADLINE_MS = 60_000;

export class NodePeer {
  private readonly offs: (() => void)[] = [];
  private stopping: Promise<void> | null = null;

  private constructor(
    readonly node: MeshNode,
    private readonly client: SignalingClient,
    private readonly mesh: WebRtcMesh,
    private readonly storage: NodeStorage,
    private readonly unlock: () => Promise<void>,
    private readonly tickTimer: ReturnType<typeof setInterval>,
    private readonly log: (line: string) => void,
    /** The HTTP API's address, if one is mounted. */
    readonly httpUrl: string | null,
    private readonly closeHttp: () => Promise<void>,
  ) {}

  get nodeId(): string {
    return this.node.nodeId;
  }

  static async start(options: PeerOptions): Promise<NodePeer> {
    const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
    const dataDir = options.dataDir;
    const clusterId = options.clusterId ?? DEFAULT_CLUSTER_ID;
    const unlock = await lockDataDir(dataDir);
    try {
      const identity = await readIdentity(dataDir);
      if (identity !== null && identity.clusterId !== clusterId) {
        throw new PeerStartError(
          `${dataDir} belongs to cluster '${identity.clusterId}', not '${clusterId}'`,
        );
      }
      if (identity !== null && options.nodeId !== undefined && identity.nodeId !== options.nodeId) {
        throw new PeerStartError(
          `${dataDir} holds node ${identity.nodeId}; --id ${options.nodeId} needs another data directory`,
        );
      }
      if (identity === null && (await exists(join(dataDir, STORE_DIR)))) {
        await setStoreAside(dataDir, log, 'it has no identity file');
      }
      return await startBoundToStorage(
        identity,
        (bound) => NodePeer.startOn(options, clusterId, bound, unlock, log),
        async (reason) => {
          // The storage that made this id's promises is gone: a new member (README rule).
          await setStoreAside(dataDir, log, reason);
          await rm(join(dataDir, IDENTITY_FILE), { force: true });
        },
      );
    } catch (error) {
      await unlock();
      throw error;
    }
  }

  /** Joins and starts on the locked `dataDir`; closes what it opened if that fails. */
  private static async startOn(
    options: PeerOptions,
    clusterId: string,
    identity: Identity | null,
    unlock: () => Promise<void>,
    log: (line: string) => void,
  ): Promise<NodePeer> {
    const dataDir = options.dataDir;
    const cleanups: (() => Promise<void>)[] = [];
    try {
      const storage = await openDiskStorage(join(dataDir, STORE_DIR));
      cleanups.unshift(() => storage.close());
      const slot = new StartingNode();
      const metrics = new NodeMetrics();
      const http = options.http === undefined ? null : await serveHttp(slot, metrics, options, log);
      if (http !== null) cleanups.unshift(() => http.api.close());
      const client = await joinAsPeer(options, clusterId, identity, dataDir, http?.address);
      cleanups.unshift(() => client.close());
      // The mesh listens from the moment the peer is joined: others offer links as soon as
      // they see it, and a signal nobody listens to is lost (the attempt then waits out its
      // connect timeout).
      const mesh = createNodeWebRtcMesh({
        localId: client.nodeId,
        signal: new SignalingChannel(client),
        rtcConfig: {
          iceServers: [],
          // node-datachannel's RTCPeerConnection passes this on to libdatachannel: ICE
          // gathers candidates on this address only.
          bindAddress: options.iceBindAddress ?? '127.0.0.1',
        } as RTCConfiguration,
      });
      cleanups.unshift(() => mesh.close());
      metrics.meterLinks(mesh);
      const newIdentity = identity === null;
      if (newIdentity) {
        await writeIdentity(dataDir, {
          clusterId,
          nodeId: client.nodeId,
          memberSecret: client.memberSecret,
        });
      }
      const node = await MeshNode.start({
        nodeId: client.nodeId,
        storage: metrics.meterStorage(storage),
        transport: mesh,
        registry: client.registry,
        newIdentity,
        random: cryptoRandom,
        nowMs: Date.now(),
        settings: options.settings,
        observer: metrics.observer,
      });
      cleanups.unshift(() => node.close());
      slot.node = node;
      log(
        `joined as ${client.nodeId} (${newIdentity ? 'new member' : 'rejoined'}), registry epoch ${client.registry.epoch}`,
      );
      if (http !== null) log(`HTTP API on ${http.url}`);
      const tickMs = options.settings?.tickMs ?? meshNodeDefaults.tickMs;
      const tickTimer = setInterval(() => node.tick(Date.now()), tickMs);
      const peer = new NodePeer(
        node,
        client,
        mesh,
        storage,
        unlock,
        tickTimer,
        log,
        http?.url ?? null,
        http === null ? async () => {} : () => http.api.close(),
      );
      peer.watch();
      return peer;
    } catch (error) {
      for (const cleanup of cleanups) await cleanup().catch(() => {});
      throw error;
    }
  }

  /** Logs the notable events: registry changes, peers, leaders, hosted partitions, moves. */
  private watch(): void {
    const log = this.log;
    this.offs.push(
      this.client.on('registry', (registry: RegistrySnapshot) => {
        this.node.updateRegistry(registry);
        const members = registry.members.map((m) => `${m.nodeId}:${m.state}`).join(' ');
        log(`registry epoch ${registry.epoch}: ${members}`);
      }),
      this.client.on('error', (error) => log(`signaling: ${error.code}: ${error.message}`)),
      this.client.on('state', (state) => log(`signaling ${state}`)),
      this.mesh.on('peerUp', (peer) => log(`peer up ${peer}`)),
      this.mesh.on('peerDown', (peer, reason) => log(`peer down ${peer} (${reason})`)),
    );
    // What the registry pushed between the join and now (while the node started) had no
    // listener: without this a member that joined meanwhile stayed out of this node's
    // placement until the next epoch, and the groups it leads stayed short of a replica.
    this.node.updateRegistry(this.client.registry);
    const leaders = new Map<number, string | null>();
    let hosted = -1;
    let moves = 0;
    const onStatus = (status: NodeStatus): void => {
      for (const group of status.groups) {
        if (leaders.get(group.partition) === group.leader) continue;
        leaders.set(group.partition, group.leader);
        if (group.leader !== null) {
          log(`leader of partition ${group.partition}: ${group.leader} (term ${group.term})`);
        }
      }
      if (status.groups.length !== hosted) {
        hosted = status.groups.length;
        log(`hosts ${hosted} partitions`);
        const present = new Set(status.groups.map((g) => g.partition));
        for (const partition of leaders.keys()) {
          if (!present.has(partition)) leaders.delete(partition);
        }
      }
      if (status.movesInProgress !== moves) {
        moves = status.movesInProgress;
        log(`moves in progress: ${moves}`);
      }
    };
    onStatus(this.node.status());
    this.offs.push(this.node.subscribe(onStatus));
    this.watchLinkFailures();
  }

  /**
   * Logs a link that keeps failing to come up, with why (the mesh's `lastFailure`): at its
   * 1st, 2nd, 4th, 8th… failed attempt in a row, so a dead peer costs a few lines, not one
   * per retry.
   */
  private watchLinkFailures(): void {
    const logged = new Map<string, number>();
    const timer = setInterval(() => {
      const links = this.mesh.linkStates();
      for (const [peer, link] of links) {
        const attempts = link.failedAttempts;
        if (attempts === 0 || link.state === 'up') {
          logged.delete(peer);
        } else if (attempts > (logged.get(peer) ?? 0) && (attempts & (attempts - 1)) === 0) {
          logged.set(peer, attempts);
          this.log(
            `link to ${peer} not up after ${attempts} failed attempt${attempts === 1 ? '' : 's'}: ${link.lastFailure} (signals ${link.signalsSent} sent / ${link.signalsReceived} received)`,
          );
        }
      }
      for (const peer of logged.keys()) if (!links.has(peer)) logged.delete(peer);
    }, LINK_FAILURE_CHECK_MS);
    timer.unref();
    this.offs.push(() => clearInterval(timer));
  }

  /**
   * Stops the peer (see the file comment); idempotent. With `leave`, a failed hand-off is
   * logged and the peer still closes (the registry already says it left: its replicas
   * are re-placed from the survivors).
   */
  stop(options: { leave?: boolean } = {}): Promise<void> {
    this.stopping ??= this.close(options.leave === true);
    return this.stopping;
  }

  private async close(leave: boolean): Promise<void> {
    if (leave) {
      this.log(`leaving: handing ${this.node.status().groups.length} replicas off`);
      await this.client.leave();
      await this.node.leave({ deadlineMs: LEAVE_DEADLINE_MS }).then(
        () => this.log('left: no replica here'),
        (error: unknown) => this.log(`leave incomplete: ${String(error)}`),
      );
    }
    for (const off of this.offs.splice(0)) off();
    clearInterval(this.tickTimer);
    await this.closeHttp();
    await this.node.close();
    await this.mesh.close();
    await this.client.close();
    await this.storage.close();
    await this.unlock();
    this.log('stopped');
  }
}

/**
 * The HTTP API's node: empty while the peer starts (the API listens before the join, see
 * the file comment), then the MeshNode. Requests before that are refused, nothing done.
 */
class StartingNode implements KvNode {
  node: MeshNode | null = null;

  put(...args: Parameters<MeshNode['put']>): ReturnType<MeshNode['put']> {
    return this.running().put(...args);
  }

  get(...args: Parameters<MeshNode['get']>): ReturnType<MeshNode['get']> {
    return this.running().get(...args);
  }

  delete(...args: Parameters<MeshNode['delete']>): ReturnType<MeshNode['delete']> {
    return this.running().delete(...args);
  }

  status(): NodeStatus {
    return this.running().status();
  }

  private running(): MeshNode {
    if (this.node !== null) return this.node;
    throw new MeshKvError(
      ErrorCode.UNAVAILABLE,
      'the peer is still starting (joining the registry, loading its partitions): retry shortly',
      { mayHaveApplied: false },
    );
  }
}

/** Wildcard hosts: every interface, so no address a client could be given. */
const WILDCARD_HOSTS: ReadonlySet<string> = new Set(['0.0.0.0', '::', '[::]']);

/**
 * Starts the HTTP API on `options.http` in front of `node`. `address` is what the registry
 * gets (undefined for a wildcard host); `url` what the log says.
 */
async function serveHttp(
  node: KvNode,
  metrics: NodeMetrics,
  options: PeerOptions,
  log: (line: string) => void,
): Promise<{ api: HttpApi; url: string; address: string | undefined }> {
  const api = createHttpApi({
    node,
    metrics,
    token: options.token,
    onError: (error) => log(`HTTP API error: ${String(error)}`),
  });
  const host = options.http!.host;
  const listening = await api.listen({ host, port: options.http!.port });
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${listening.port}`;
  return { api, url, address: WILDCARD_HOSTS.has(host) ? undefined : url };
}

async function joinAsPeer(
  options: PeerOptions,
  clusterId: string,
  identity: Identity | null,
  dataDir: string,
  httpAddress: string | undefined,
): Promise<SignalingClient> {
  try {
    return await joinRegistry({
      signalingUrl: options.signalingUrl,
      token: options.token,
      clusterId,
      kind: 'node',
      identity,
      ...(options.nodeId === undefined ? {} : { requestedNodeId: options.nodeId }),
      ...(httpAddress === undefined ? {} : { httpAddress }),
    });
  } catch (error) {
    if (isIdentityRefused(error)) {
      throw new PeerStartError(
        identity === null
          ? `the registry refused node id ${options.nodeId}: it belongs to another member's storage; choose another --id or none`
          : `the registry does not accept ${dataDir}'s identity (${identity.nodeId}): ${error.message}. This storage may not vote under another id; if its data is not needed, delete ${dataDir} to join as a new member`,
      );
    }
    throw error;
  }
}

/**
 * One process per data directory. The lock is LevelDB's own (an fcntl lock on DIR/lock/
 * LOCK, held while the database is open and released by the kernel when the process dies,
 * SIGKILL included; never fooled by pid reuse). signaling/src/data-dir-lock.ts needs a
 * listening Unix socket because the signaling server has no LevelDB; a Node peer already
 * depends on it, and this takes no code of its own.
 */
async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const unlock = await tryLockDirectory(dataDir);
  if (unlock === null) {
    throw new PeerStartError(
      `data directory ${dataDir} is in use by another live process (its lock ${join(dataDir, LOCK_DIR)} is held); one node per data directory`,
    );
  }
  return unlock;
}

/**
 * Takes `dir`'s lock (DIR/lock, as `lockDataDir` above; `meshkv start` holds its folder
 * with it too), creating `dir` if needed: resolves with its release, or with null while
 * another live process holds it.
 */
export async function tryLockDirectory(dir: string): Promise<(() => Promise<void>) | null> {
  await mkdir(dir, { recursive: true });
  try {
    const engine = await openLevelEngine(join(dir, LOCK_DIR));
    return () => engine.close();
  } catch (error) {
    if (error instanceof StorageError && error.code === 'locked') return null;
    throw error;
  }
}

async function setStoreAside(
  dataDir: string,
  log: (line: string) => void,
  reason: string,
): Promise<void> {
  const aside = join(dataDir, `${STORE_DIR}.set-aside-${Date.now()}`);
  await rename(join(dataDir, STORE_DIR), aside);
  log(`storage set aside to ${aside} (${reason}): joining as a new member`);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return false;
      throw error;
    },
  );
}

/** The identity file, or null if there is none; a malformed one is refused. */
async function readIdentity(dataDir: string): Promise<Identity | null> {
  const path = join(dataDir, IDENTITY_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  const identity = parseIdentity(
    text.length <= MAX_IDENTITY_FILE_BYTES ? safeParse(text) : undefined,
  );
  if (identity === null) {
    // Written atomically, so it is never torn by a crash: damage is not ours to repair.
    throw new PeerStartError(`${path} is not an identity file (clusterId, nodeId, memberSecret)`);
  }
  return identity;
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Writes the identity durably and atomically (`writeFileDurably`). */
function writeIdentity(dataDir: string, identity: Identity): Promise<void> {
  return writeFileDurably(join(dataDir, IDENTITY_FILE), `${JSON.stringify(identity)}\n`);
}
