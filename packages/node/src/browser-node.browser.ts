/**
 * The browser tab shell (`@meshkv/node/browser`): one MeshNode per tab, on IndexedDB (strict
 * durability + the OPFS journal, @meshkv/storage/browser), over the browser's WebRTC mesh,
 * joined to the signaling server. README "Browser nodes" has the whole contract; in short:
 *
 * - Identity (tab-identity.browser.ts): the node id is in sessionStorage and locked with a
 *   Web Lock, so a reload rejoins with its data and a duplicated tab gets another id; the
 *   member secret is stored durably before anything is written under the id.
 * - A store reported lost or corrupt is deleted and the tab joins as a NEW member
 *   (identity.ts `startBoundToStorage`, the rule peer.node.ts follows); an id the registry
 *   refuses is set aside (its data kept) and the tab joins as a new member.
 * - Raft ticks come from a dedicated Worker's timer (worker-ticks.browser.ts): hidden tabs
 *   throttle page timers to 1 Hz.
 * - `navigator.storage.persist()` is requested (the answer is in `persisted`).
 * - pagehide: the node stops without leaving (its socket closes at once, so the registry
 *   starts the grace period now): a reload, which also fires pagehide, must keep the
 *   node; a closed tab is a crash the cluster survives. `leave()` is the graceful way out.
 * - Fault controls (fault-transport.ts) sit between the node and the mesh.
 */

import type { NodeStorage } from '@meshkv/storage';
import { deleteIndexedDbStorage, openIndexedDbStorage } from '@meshkv/storage/browser';
import {
  DEFAULT_CLUSTER_ID,
  type LinkState,
  SignalingChannel,
  type SignalingClient,
  type SignalingClientState,
  WebRtcMesh,
} from '@meshkv/transport';
import { checkDropPercent, type FaultState, FaultyTransport } from './fault-transport.ts';
import {
  cryptoRandom,
  type Identity,
  isIdentityRefused,
  joinRegistry,
  startBoundToStorage,
} from './identity.ts';
import {
  MeshNode,
  type MeshNodeObserver,
  type MeshNodeSettings,
  meshNodeDefaults,
} from './mesh-node.ts';
import {
  claimNewIdentity,
  claimStoredIdentity,
  forgetIdentity,
  type HeldIdentity,
  markIdentityRefused,
} from './tab-identity.browser.ts';
import { startWorkerTicks } from './worker-ticks.browser.ts';

export interface BrowserNodeOptions {
  readonly signalingUrl: string;
  readonly token: string;
  /** Default DEFAULT_CLUSTER_ID. */
  readonly clusterId?: string;
  readonly settings?: Partial<MeshNodeSettings>;
  readonly observer?: MeshNodeObserver;
  /** One line per notable event (joins, identity decisions, signaling errors). Default: none. */
  readonly log?: (line: string) => void;
  /** Passed to RTCPeerConnection. Default: host candidates only, no STUN. */
  readonly rtcConfig?: RTCConfiguration;
}

export interface BrowserNode {
  readonly nodeId: string;
  /** The running MeshNode (a new one after each restart). */
  readonly node: MeshNode;
  /** How this start got its id: rejoined with its stored data, or a new member. */
  readonly joined: 'rejoined' | 'new member';
  /** What `navigator.storage.persist()` answered (false until it did, or if refused). */
  readonly persisted: boolean;
  /** Stops without leaving, as a killed tab would (keeps the id's lock and the data). */
  crash(): Promise<void>;
  /** Starts again after crash(), with the same id and IndexedDB data. */
  restart(): Promise<void>;
  /** Drops every frame in and out while true. */
  setIsolated(isolated: boolean): void;
  /** Drops that share of frames each way, 0..100 (a RangeError outside). */
  setDropPercent(percent: number): void;
  /** The fault settings, and the frames they dropped since this (re)start. */
  faults(): FaultState;
  /**
   * This tab's mesh links now, by peer: up, connecting or backing off, failed attempts and
   * why the last one failed (empty while stopped). For a failure report or a status page.
   */
  links(): Map<string, LinkState>;
  /**
   * This tab's signaling now (null while stopped): the connection's state and re-joins,
   * signals the server refused (the last one's reason), and signals the mesh ignored
   * (malformed, or of no current attempt). With `links()`, says why a link is not up.
   */
  signaling(): SignalingStatus | null;
  /**
   * Leaves gracefully: the registry marks it `left`, every replica is handed off, the
   * node stops, and its data and identity are deleted. The node is stopped either way; if
   * the registry refused or could not take the leave, it rejects and the identity and
   * data stay (the node is still a member: a later tab adopts it). A hand-off cut short
   * rejects with TIMEOUT at `deadlineMs` (default 60 s), the data deleted all the same:
   * the registry says `left`, so the leaders re-place those replicas from the survivors.
   */
  leave(options?: { deadlineMs?: number }): Promise<void>;
  /** Stops without leaving and releases the id (another tab may take it over). */
  close(): Promise<void>;
}

export interface SignalingStatus {
  readonly state: SignalingClientState;
  readonly rejoins: number;
  readonly refusedSignals: number;
  readonly lastRefusal: string | null;
  readonly malformedSignals: number;
  readonly staleSignals: number;
}

/** How long a graceful leave may take to hand every replica off. */
export const BROWSER_LEAVE_DEADLINE_MS = 60_000;

/** Starts this tab's node (see the file comment). */
export async function startBrowserNode(options: BrowserNodeOptions): Promise<BrowserNode> {
  const tab = new TabNode(options);
  await tab.start();
  return tab;
}

/** What runs between a start and a crash/close. */
interface Running {
  readonly node: MeshNode;
  readonly client: SignalingClient;
  readonly mesh: WebRtcMesh;
  readonly signal: SignalingChannel;
  readonly transport: FaultyTransport;
  readonly storage: NodeStorage;
  readonly stopTicks: () => void;
  readonly offs: (() => void)[];
}

class TabNode implements BrowserNode {
  private readonly clusterId: string;
  private readonly log: (line: string) => void;
  private held: HeldIdentity | null = null;
  private running: Running | null = null;
  /** The last node run (kept after a crash so `node` answers, with CLOSED). */
  private lastNode: MeshNode | null = null;
  private isolated = false;
  private dropPercent = 0;
  private joinedHow: 'rejoined' | 'new member' = 'new member';
  private persistGranted = false;
  /** Set once left or closed: nothing starts again. */
  private ended = false;
  private readonly onPageHide = (): void => this.stopOnPageHide();
  private readonly onPageShow = (event: PageTransitionEvent): void => {
    // Back from the back/forward cache after a pagehide that closed the socket: start over.
    if (event.persisted && this.running?.client.state === 'closed') {
      void this.stop().then(() =>
        this.restart().catch((error) =>
          this.log(`restart after pageshow failed: ${String(error)}`),
        ),
      );
    }
  };

  constructor(private readonly options: BrowserNodeOptions) {
    this.clusterId = options.clusterId ?? DEFAULT_CLUSTER_ID;
    this.log = options.log ?? (() => {});
  }

  get nodeId(): string {
    // After leave() or close() the id is released, and still the one this node had.
    const nodeId = this.held?.identity.nodeId ?? this.lastNode?.nodeId;
    if (nodeId === undefined) throw new Error('the browser node has no identity (not started)');
    return nodeId;
  }

  get node(): MeshNode {
    const node = this.running?.node ?? this.lastNode;
    if (node === null) throw new Error('the browser node was never started');
    return node;
  }

  get joined(): 'rejoined' | 'new member' {
    return this.joinedHow;
  }

  get persisted(): boolean {
    return this.persistGranted;
  }

  async start(): Promise<void> {
    this.requestPersistence();
    const stored = await claimStoredIdentity(this.clusterId);
    this.held = stored;
    try {
      await startBoundToStorage(
        stored?.identity ?? null,
        (identity) => this.run(identity),
        (reason) => this.setStorageAside(reason),
      );
    } catch (error) {
      // Nothing runs: the id is free for the next start (this page's or another's).
      await this.held?.release();
      this.held = null;
      throw error;
    }
    addEventListener('pagehide', this.onPageHide);
    addEventListener('pageshow', this.onPageShow);
  }

  /** Starts a node under `identity` (null: joins as new) and keeps it in `running`. */
  private async run(identity: Identity | null): Promise<void> {
    let storage: NodeStorage | null = null;
    const closeStorage = async (): Promise<void> => {
      const open = storage;
      storage = null;
      await open?.close();
    };
    const cleanups: (() => Promise<void>)[] = [closeStorage];
    try {
      // A known id opens its store first: a corrupt one must not join under that id.
      if (identity !== null) {
        storage = await openIndexedDbStorage({
          clusterId: this.clusterId,
          nodeId: identity.nodeId,
        });
      }
      const { client, rejoined } = await this.join(identity);
      cleanups.unshift(() => client.close());
      // The mesh listens from the moment the tab is joined: peers offer links as soon as
      // they see it, and a signal nobody listens to is lost (the attempt then waits out
      // its connect timeout).
      const signal = new SignalingChannel(client);
      const mesh = new WebRtcMesh({
        localId: client.nodeId,
        signal,
        ...(this.options.rtcConfig === undefined ? {} : { rtcConfig: this.options.rtcConfig }),
      });
      cleanups.unshift(() => mesh.close());
      const newIdentity = !rejoined;
      if (newIdentity) {
        // A refused stored id: its store stays on disk, unused; its lock goes.
        await closeStorage();
        await this.held?.release();
        this.held = null;
        this.held = await claimNewIdentity({
          clusterId: this.clusterId,
          nodeId: client.nodeId,
          memberSecret: client.memberSecret,
        });
        storage = await openIndexedDbStorage({ clusterId: this.clusterId, nodeId: client.nodeId });
      }
      const opened: NodeStorage = storage!;
      const transport = new FaultyTransport(mesh, cryptoRandom);
      transport.setIsolated(this.isolated);
      transport.setDropPercent(this.dropPercent);
      const node = await MeshNode.start({
        nodeId: client.nodeId,
        storage: opened,
        transport,
        registry: client.registry,
        newIdentity,
        random: cryptoRandom,
        nowMs: Date.now(),
        settings: this.options.settings,
        observer: this.options.observer,
      });
      cleanups.unshift(() => node.close());
      const offs = [
        client.on('registry', (registry) => node.updateRegistry(registry)),
        client.on('error', (error) => this.log(`signaling: ${error.code}: ${error.message}`)),
        client.on('state', (state) => this.log(`signaling ${state}`)),
      ];
      const tickMs = this.options.settings?.tickMs ?? meshNodeDefaults.tickMs;
      const stopTicks = startWorkerTicks(tickMs, () => node.tick(Date.now()));
      this.running = { node, client, mesh, signal, transport, storage: opened, stopTicks, offs };
      this.lastNode = node;
      this.joinedHow = newIdentity ? 'new member' : 'rejoined';
      this.log(
        `joined as ${client.nodeId} (${this.joinedHow}), registry epoch ${client.registry.epoch}`,
      );
    } catch (error) {
      for (const cleanup of cleanups) await cleanup().catch(() => {});
      throw error;
    }
  }

  /**
   * Joins under `identity`; one the registry refuses (`wrong_secret`: it no longer knows
   * the id, or binds it to other storage) is marked refused, its data kept, and the tab
   * joins as a new member instead (`rejoined` false).
   */
  private async join(
    identity: Identity | null,
  ): Promise<{ client: SignalingClient; rejoined: boolean }> {
    const join = (as: Identity | null) =>
      joinRegistry({
        signalingUrl: this.options.signalingUrl,
        token: this.options.token,
        clusterId: this.clusterId,
        kind: 'browser',
        identity: as,
      });
    if (identity === null) return { client: await join(null), rejoined: false };
    try {
      return { client: await join(identity), rejoined: true };
    } catch (error) {
      if (!isIdentityRefused(error)) throw error;
      const reason = `${error.code}: ${error.message}`;
      this.log(`the registry refused ${identity.nodeId} (${reason}): joining as a new member`);
      await markIdentityRefused(identity, reason);
      return { client: await join(null), rejoined: false };
    }
  }

  /** The store was refused as corrupt: delete it and the identity; the next run is new. */
  private async setStorageAside(reason: string): Promise<void> {
    const held = this.held;
    if (held === null) return;
    this.log(
      `storage of ${held.identity.nodeId} lost or corrupt (${reason}): joining as a new member`,
    );
    await deleteIndexedDbStorage({ clusterId: this.clusterId, nodeId: held.identity.nodeId });
    await forgetIdentity(held.identity);
    await held.release();
    this.held = null;
  }

  private requestPersistence(): void {
    // Without it the browser may evict this origin's data under storage pressure, which
    // is a lost store: the node would rejoin as a new member. Asked, never required.
    navigator.storage?.persist?.().then(
      (granted) => {
        this.persistGranted = granted;
        this.log(`persistent storage ${granted ? 'granted' : 'not granted'}`);
      },
      () => {},
    );
  }

  /** Stops the running node, without leaving; the identity stays held. */
  private async stop(): Promise<void> {
    const running = this.running;
    if (running === null) return;
    this.running = null;
    running.stopTicks();
    for (const off of running.offs) off();
    await running.node.close();
    await running.mesh.close();
    await running.client.close();
    await running.storage.close();
  }

  private stopOnPageHide(): void {
    const running = this.running;
    if (running === null) return;
    // The page is going away (or reloading): nothing async completes reliably now. Close
    // the socket at once so the registry's grace period starts without waiting for a
    // ping timeout; the storage, journal and locks go with the page.
    running.stopTicks();
    void running.client.close();
  }

  crash(): Promise<void> {
    return this.stop();
  }

  async restart(): Promise<void> {
    if (this.ended) throw new Error('the browser node left or was closed: start a new one');
    if (this.running !== null) return;
    const held = this.held;
    await startBoundToStorage(
      held?.identity ?? null,
      (identity) => this.run(identity),
      (reason) => this.setStorageAside(reason),
    );
  }

  setIsolated(isolated: boolean): void {
    this.isolated = isolated;
    this.running?.transport.setIsolated(isolated);
  }

  setDropPercent(percent: number): void {
    checkDropPercent(percent);
    this.dropPercent = percent;
    this.running?.transport.setDropPercent(percent);
  }

  faults(): FaultState {
    return (
      this.running?.transport.faults() ?? {
        isolated: this.isolated,
        dropPercent: this.dropPercent,
        framesDroppedOut: 0,
        framesDroppedIn: 0,
      }
    );
  }
  links(): Map<string, LinkState> {
    return this.running?.mesh.linkStates() ?? new Map();
  }

  signaling(): SignalingStatus | null {
    const running = this.running;
    if (running === null) return null;
    const { malformedSignals, staleSignals } = running.mesh.meshStats();
    return {
      state: running.client.state,
      rejoins: running.client.stats().rejoins,
      refusedSignals: running.signal.failedSignals,
      lastRefusal: running.signal.lastFailure,
      malformedSignals,
      staleSignals,
    };
  }

  async leave(options: { deadlineMs?: number } = {}): Promise<void> {
    if (this.ended) return;
    const running = this.running;
    if (running === null) throw new Error('the browser node is not running (restart it first)');
    this.ended = true;
    this.unlisten();
    try {
      await running.client.leave();
    } catch (error) {
      // Still a member as far as the registry knows: keep what it needs to come back.
      await this.stop();
      await this.held?.release();
      this.held = null;
      throw error;
    }
    let handOff: unknown = null;
    await running.node
      .leave({ deadlineMs: options.deadlineMs ?? BROWSER_LEAVE_DEADLINE_MS })
      .catch((error: unknown) => {
        handOff = error;
      });
    await this.stop();
    const held = this.held;
    this.held = null;
    if (held !== null) {
      // Left: the id is never used again, so neither its data nor its identity are kept.
      await deleteIndexedDbStorage({ clusterId: this.clusterId, nodeId: held.identity.nodeId });
      await forgetIdentity(held.identity);
      await held.release();
    }
    if (handOff !== null) throw handOff;
  }

  private unlisten(): void {
    removeEventListener('pagehide', this.onPageHide);
    removeEventListener('pageshow', this.onPageShow);
  }

  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.unlisten();
    await this.stop();
    await this.held?.release();
    this.held = null;
  }
}
