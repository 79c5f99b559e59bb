import { invariant } from './errors.ts';
import type { Message } from './message.ts';
import type { NodeId } from './types.ts';

/** A linearizable read point: once the applied index reaches `index`, reading is safe (§6.4). */
export interface ReadState {
  readonly index: number;
  /** The context given to readIndex(), identifying the request. */
  readonly context: Uint8Array;
}

interface PendingRead {
  readonly index: number;
  readonly request: Message;
  /** The last round sent before this read arrived: only a later round confirms it. */
  readonly afterRound: number;
}

/** One heartbeat round, its context the round number; the leader's own ack included. */
export interface ReadRound {
  readonly round: number;
  /** The leader's tick count when it sent the round (the lease counts from there). */
  readonly sentTick: number;
  readonly acks: Map<NodeId, boolean>;
}

/**
 * Rounds awaiting acknowledgements at most. Dropping the oldest is safe (a newer round
 * confirms every read an older one would) and costs only acks delayed past this many
 * heartbeats.
 */
const MAX_OPEN_ROUNDS = 64;

/** Bytes of a round number in a heartbeat context (2^48 rounds per term). */
const ROUND_CONTEXT_BYTES = 6;

function encodeRound(round: number): Uint8Array {
  const bytes = new Uint8Array(ROUND_CONTEXT_BYTES);
  let n = round;
  for (let i = ROUND_CONTEXT_BYTES - 1; i >= 0; i--) {
    bytes[i] = n % 256;
    n = Math.floor(n / 256);
  }
  return bytes;
}

/** The round a heartbeat context names; 0 (no round) for anything else. */
function decodeRound(context: Uint8Array): number {
  if (context.byteLength !== ROUND_CONTEXT_BYTES) return 0;
  let n = 0;
  for (const b of context) n = n * 256 + b;
  return n;
}

/**
 * Read-index requests waiting for a quorum of heartbeat acknowledgements (etcd-io/raft
 * read_only.go, but with rounds). Heartbeats carry the leader's round number, not the
 * request's context: a read is confirmed by a quorum acknowledging a round sent after it
 * arrived, so two reads with the same context are both answered, each safely (an
 * acknowledgement of a round sent before a read proves nothing about leadership since).
 */
export class ReadOnly {
  private reads: PendingRead[] = [];
  /** Rounds that may still confirm a pending read, oldest first. */
  private rounds: ReadRound[] = [];
  private lastRound = 0;

  size(): number {
    return this.reads.length;
  }

  /** Registers a request at read index `index`, to be confirmed by the next round. */
  add(index: number, request: Message): void {
    this.reads.push({ index, request, afterRound: this.lastRound });
  }

  /**
   * Starts a round sent now (at the leader's tick `sentTick`) and returns the context its
   * heartbeats carry. `leader` acknowledges it at once.
   */
  startRound(leader: NodeId, sentTick: number): Uint8Array {
    const round: ReadRound = { round: ++this.lastRound, sentTick, acks: new Map() };
    round.acks.set(leader, true);
    this.rounds.push(round);
    if (this.rounds.length > MAX_OPEN_ROUNDS) this.rounds.shift();
    return encodeRound(round.round);
  }

  /** Records that `id` acknowledged the heartbeat carrying `context`; returns its round. */
  recvAck(id: NodeId, context: Uint8Array): ReadRound | null {
    const n = decodeRound(context);
    const round = this.rounds.find((r) => r.round === n);
    if (round === undefined) return null;
    round.acks.set(id, true);
    return round;
  }

  /**
   * A quorum acknowledged `round`: removes and returns the reads it confirms (those that
   * arrived before it was sent), in arrival order, and forgets rounds up to it.
   */
  advance(round: ReadRound): { index: number; request: Message }[] {
    invariant(round.round <= this.lastRound, `round ${round.round} was never sent`);
    let confirmed = 0;
    while (confirmed < this.reads.length && this.reads[confirmed]!.afterRound < round.round) {
      confirmed++;
    }
    const done = this.reads.slice(0, confirmed);
    this.reads = this.reads.slice(confirmed);
    this.rounds = this.rounds.filter((r) => r.round > round.round);
    return done;
  }
}
