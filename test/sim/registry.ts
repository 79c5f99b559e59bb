/**
 * The simulated registry: the membership half of the signaling server, in virtual time.
 * Its state is a `RegistryState` changed only by the server's own pure transition
 * functions (signaling/src/registry.ts: `admit`, `markDown`, `markLeft`), so the
 * simulation runs the same membership rules as production; what is simulated is only the
 * socket around them:
 * - a node `join`s when it starts (the join reply is the snapshot it starts with), with
 *   the member secret it keeps with its data (a node with a new disk joins under a new id);
 * - a node that crashes or is cut off `disconnect`s; after `gracePeriodMs` without
 *   reconnecting it is marked `down` (as the server's grace timer does);
 * - every change is pushed to every connected node after a random delay in
 *   [0, maxPushDelayMs]: pushes to different nodes may arrive in any order, pushes to one
 *   node arrive in epoch order (one socket), and a disconnected node gets none (it gets
 *   the current snapshot when it joins again).
 * No clock, no timers: the harness asks `nextEventAtMs()` and calls `runDue(nowMs)`.
 */
import type { NodeId, Prng } from '@meshkv/raft';
import type { ClusterSettings, RegistrySnapshot } from '@meshkv/transport/signaling-protocol';
import {
  admit,
  completeSettings,
  emptyRegistry,
  type MembershipLimits,
  markDown,
  markLeft,
  type RegistryState,
} from '../../signaling/src/registry.ts';

export interface SimRegistryOptions {
  readonly settings: Partial<ClusterSettings>;
  /** Delays and member secrets come from here. */
  readonly prng: Prng;
  /** A disconnected member is marked `down` this long after it disconnected. */
  readonly gracePeriodMs: number;
  /** A change reaches each connected node within this. */
  readonly maxPushDelayMs: number;
  readonly limits?: MembershipLimits;
}

/** A snapshot on its way to one node. */
export interface RegistryPush {
  readonly nodeId: NodeId;
  readonly snapshot: RegistrySnapshot;
}

interface QueuedPush {
  readonly atMs: number;
  readonly snapshot: RegistrySnapshot;
}

/** How `changes` tells of a member marked down. */
export const MARKED_DOWN = 'marked down';

const DEFAULT_LIMITS: MembershipLimits = { maxMembers: 64, maxLeftMembers: 64 };

export class SimRegistry {
  readonly settings: ClusterSettings;
  private readonly prng: Prng;
  private readonly gracePeriodMs: number;
  private readonly maxPushDelayMs: number;
  private readonly limits: MembershipLimits;
  private state: RegistryState;
  /** The secret hash each node id was issued at its first join (kept with its data). */
  private readonly secretHashes = new Map<NodeId, string>();
  /** Connected nodes → their pushes in flight, in epoch order. */
  private readonly outboxes = new Map<NodeId, QueuedPush[]>();
  /** Disconnected members → when their grace period ends. */
  private readonly graceEndsAtMs = new Map<NodeId, number>();
  /** Changes made, for the report: epoch → what happened. */
  readonly changes: string[] = [];

  constructor(options: SimRegistryOptions) {
    this.settings = completeSettings(options.settings);
    this.prng = options.prng;
    this.gracePeriodMs = options.gracePeriodMs;
    this.maxPushDelayMs = options.maxPushDelayMs;
    this.limits = options.limits ?? DEFAULT_LIMITS;
    this.state = emptyRegistry(this.settings);
  }

  get snapshot(): RegistrySnapshot {
    return this.state.snapshot;
  }

  /** Member ids whose state is `up`, sorted: the placement's input. */
  upMembers(): NodeId[] {
    return this.state.snapshot.members.filter((m) => m.state === 'up').map((m) => m.nodeId);
  }

  /** Whether `nodeId` was ever admitted (its storage holds a member secret). */
  knows(nodeId: NodeId): boolean {
    return this.secretHashes.has(nodeId);
  }

  isConnected(nodeId: NodeId): boolean {
    return this.outboxes.has(nodeId);
  }

  /**
   * A node (re)connects: it is admitted (registered with a fresh secret on its first
   * join, brought `up` with its secret afterwards) and gets the current snapshot as its
   * join reply. Throws if the registry refuses it (a bug in the harness).
   */
  join(nodeId: NodeId, nowMs: number): RegistrySnapshot {
    const known = this.secretHashes.get(nodeId);
    const secretHash = known ?? this.freshSecretHash();
    const result = admit(
      this.state,
      { nodeId, kind: 'node', secretHash, secretPresented: known !== undefined },
      this.limits,
    );
    if (!result.ok) throw new Error(`registry refused ${nodeId}: ${result.reason}`);
    this.secretHashes.set(nodeId, secretHash);
    this.graceEndsAtMs.delete(nodeId);
    this.change(result.state, `${nodeId} joins`, nowMs);
    // The join reply is the newest snapshot: nothing older may reach the node afterwards.
    this.outboxes.set(nodeId, []);
    return this.state.snapshot;
  }

  /**
   * A node that left (marked `left`) reconnects to go on handing off: it hears the pushes
   * again, its membership unchanged (a join would bring it `up`). Returns the snapshot.
   */
  watch(nodeId: NodeId): RegistrySnapshot {
    this.graceEndsAtMs.delete(nodeId);
    this.outboxes.set(nodeId, []);
    return this.state.snapshot;
  }

  /** The node's connection drops (crash, isolation): down after the grace period. */
  disconnect(nodeId: NodeId, nowMs: number): void {
    if (!this.outboxes.delete(nodeId)) return;
    this.graceEndsAtMs.set(nodeId, nowMs + this.gracePeriodMs);
  }

  /** A graceful leave: the member is marked `left` (the node still runs to hand off). */
  leave(nodeId: NodeId, nowMs: number): void {
    this.change(markLeft(this.state, nodeId, this.limits), `${nodeId} leaves`, nowMs);
  }

  /** The node stops for good after leaving: no more pushes, and it is not marked down. */
  forget(nodeId: NodeId): void {
    this.outboxes.delete(nodeId);
    this.graceEndsAtMs.delete(nodeId);
  }

  /** When the next push is due or a grace period ends, if ever. */
  nextEventAtMs(): number | undefined {
    let next: number | undefined;
    for (const atMs of this.graceEndsAtMs.values())
      if (next === undefined || atMs < next) next = atMs;
    for (const outbox of this.outboxes.values()) {
      const head = outbox[0];
      if (head !== undefined && (next === undefined || head.atMs < next)) next = head.atMs;
    }
    return next;
  }

  /**
   * Marks down the members whose grace period ended by `nowMs`, then returns the pushes
   * due by then, in time order (node id order among equal times).
   */
  runDue(nowMs: number): RegistryPush[] {
    for (const [nodeId, atMs] of [...this.graceEndsAtMs]) {
      if (atMs > nowMs) continue;
      this.graceEndsAtMs.delete(nodeId);
      this.change(
        markDown(this.state, nodeId, nowMs, this.limits),
        `${nodeId} ${MARKED_DOWN}`,
        nowMs,
      );
    }
    const due: (RegistryPush & { atMs: number })[] = [];
    for (const [nodeId, outbox] of this.outboxes) {
      while (outbox.length > 0 && outbox[0]!.atMs <= nowMs) {
        const { atMs, snapshot } = outbox.shift()!;
        due.push({ nodeId, snapshot, atMs });
      }
    }
    due.sort((a, b) => a.atMs - b.atMs || (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
    return due.map(({ nodeId, snapshot }) => ({ nodeId, snapshot }));
  }

  private change(next: RegistryState, what: string, nowMs: number): void {
    if (next === this.state) return;
    if (next.snapshot.epoch !== this.state.snapshot.epoch + 1) {
      throw new Error(`registry epoch went ${this.state.snapshot.epoch} → ${next.snapshot.epoch}`);
    }
    this.state = next;
    this.changes.push(`epoch ${next.snapshot.epoch}: ${what}`);
    for (const outbox of this.outboxes.values()) {
      const last = outbox[outbox.length - 1]?.atMs ?? nowMs;
      const atMs = Math.max(last, nowMs + this.prng.nextInt(this.maxPushDelayMs + 1));
      outbox.push({ atMs, snapshot: next.snapshot });
    }
  }

  /** 64 hex digits, as the server stores a secret's sha256 (the secret itself is not needed). */
  private freshSecretHash(): string {
    let hex = '';
    for (let i = 0; i < 8; i++)
      hex += this.prng.nextInt(0x1_0000_0000).toString(16).padStart(8, '0');
    return hex;
  }
}
