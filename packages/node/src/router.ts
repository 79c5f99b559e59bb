/**
 * The KV API's engine: takes a request at any node, finds its partition's leader, forwards
 * it over the transport, follows not-leader hints and retries with backoff until the
 * request's deadline (the origin side); and serves requests for partitions this node leads
 * or replicates (the serving side): proposes writes, runs ReadIndex for linearizable reads,
 * answers local reads and applied-index queries, and confirms `ack: 'all'` writes.
 *
 * Time is the node's clock (`nowMs`, from tick); nothing here awaits. Every request the
 * origin holds is bounded (`maxPendingRequests`), and so is every waiter a leader holds
 * (`maxServedRequests`); past a bound a request fails with OVERLOADED.
 *
 * A write keeps its (clientId, seq) across every retry, so the partition's session table
 * applies it once (Raft thesis §6.3) whichever leader it reaches, however often.
 *
 * One missing link does not cut a node off from a partition: when the link to the leader
 * is down (a WebRTC connection between two members that never comes up, while both reach
 * everyone else), the request goes to another replica of the partition marked `relay`,
 * which forwards it to the leader over its own link and passes the answer back.
 */
import { DropReason, isRaftError, type NodeId, RaftErrorCode } from '@meshkv/raft';
import { encodeCommand } from './command.ts';
import {
  ackIncomplete,
  closed,
  ErrorCode,
  MeshKvError,
  outcomeUnknown,
  overloaded,
  timeout,
  unavailable,
} from './errors.ts';
import type { GroupReplica } from './group.ts';
import type { AppliedCommand } from './partition.ts';
import { nodeOfReplica } from './replica-id.ts';
import type { RequestRecord, ResponseRecord, WireErrorCode } from './wire.ts';

export interface RouterSettings {
  /** Client requests this node holds at once (its own API calls). */
  readonly maxPendingRequests: number;
  /** Requests a leader holds waiting for their entry or read point (from all origins). */
  readonly maxServedRequests: number;
  /** First retry after this long without an answer; doubles per attempt… */
  readonly retryMinMs: number;
  /** …up to this. */
  readonly retryMaxMs: number;
}

/** What the router needs from the node around it. */
export interface RouterHost {
  readonly nodeId: NodeId;
  /** The node's clock (the last tick's nowMs). */
  nowMs(): number;
  /** The replica of `partition` this node hosts, if any. */
  replica(partition: number): GroupReplica | undefined;
  /** The partition's replicas in the current placement (ring order). */
  placementReplicas(partition: number): readonly NodeId[];
  /** Whether the transport's link to `peer` is up now. */
  linkUp(peer: NodeId): boolean;
  /** Queue a record for a peer (leaves with the round's frames). */
  sendRequest(to: NodeId, request: RequestRecord): void;
  sendResponse(to: NodeId, response: ResponseRecord): void;
  /** `replica` has work for the loop (a proposal, a read): run a round that visits it. */
  touch(replica: GroupReplica): void;
  /** Raft refused a proposal: its uncommitted log is full, or this replica does not lead. */
  proposalDropped?(partition: number, reason: 'full' | 'not_leader'): void;
}

/** What an origin's request resolves with. */
type Outcome =
  | { readonly kind: 'boolean'; readonly value: boolean }
  | { readonly kind: 'value'; readonly value: Uint8Array | null };

interface OriginRequest {
  readonly requestId: number;
  readonly op: 'put' | 'delete' | 'get' | 'localGet';
  readonly partition: number;
  readonly key: string;
  readonly value: Uint8Array | null;
  readonly seq: number;
  readonly ackAll: boolean;
  readonly deadlineMs: number;
  readonly deadlineAtMs: number;
  readonly resolve: (outcome: Outcome) => void;
  readonly reject: (error: MeshKvError) => void;
  /** Where the last attempt went, and when to try again without an answer. */
  target: NodeId | null;
  /** The replica relaying the last attempt to `target` (its link was down), or null. */
  via: NodeId | null;
  retryAtMs: number;
  attempts: number;
  /** A write reached a node that may have proposed it: a timeout cannot say "not applied". */
  mayHaveApplied: boolean;
  /** localGet: replicas tried so far in this round of the ring order. */
  localTried: number;
  /** The leader the last NOT_LEADER answer named: the next attempt goes there. */
  hint: NodeId | null;
  /** Hints followed at once in this backoff round (MAX_REDIRECTS_PER_ROUND). */
  redirects: number;
}

/**
 * Hints a request follows at once before it waits for its backoff: replicas that name
 * each other during an election (or stale ones) would otherwise bounce it between them as
 * fast as the network carries it, until its deadline.
 */
const MAX_REDIRECTS_PER_ROUND = 4;

/** Where a served request's answer goes: a peer's request id, or a local origin request. */
interface Responder {
  readonly from: NodeId;
  readonly requestId: number;
}

interface WriteWaiter extends Responder {
  readonly deadlineAtMs: number;
  readonly ackAll: boolean;
}

/** A request this node relays for an origin that cannot reach the leader. */
interface RelayedRequest extends Responder {
  /** The leader it went to: only its answer is passed back. */
  readonly to: NodeId;
  readonly deadlineAtMs: number;
}

interface ReadWaiter extends Responder {
  readonly key: string;
  readonly deadlineAtMs: number;
}

/** A leader confirming that every voter applied an `ack: 'all'` write. */
interface AckAllWait {
  readonly partition: number;
  readonly index: number;
  readonly result: boolean;
  readonly waiter: WriteWaiter;
  readonly voters: readonly NodeId[];
  readonly confirmed: Set<NodeId>;
  /**
   * When the leader gives up and answers ACK_INCOMPLETE: four fifths of the way to the
   * request's deadline, so the answer reaches the origin before it times out there.
   */
  readonly giveUpAtMs: number;
  queryAtMs: number;
}

/** Per served partition: writes waiting for their entry, reads for their read point. */
interface ServedPartition {
  /** `${clientId}\u0000${seq}` → the requests waiting for that command's result. */
  readonly writes: Map<string, WriteWaiter[]>;
  /** Read-index context (a round number) → reads waiting for its ReadState. */
  readonly readRounds: Map<number, ReadWaiter[]>;
  /** Reads with a read point, waiting until the replica applied it. */
  readonly readsAtIndex: { readonly index: number; readonly waiters: ReadWaiter[] }[];
  /** Reads asked since the last Ready: they share one read-index round. */
  openRound: ReadWaiter[] | null;
}

const U32_MAX = 0xffff_ffff;

/** Removes, in place, the waiters whose deadline passed by `nowMs`; returns how many. */
function dropExpired(waiters: { readonly deadlineAtMs: number }[], nowMs: number): number {
  let kept = 0;
  for (const waiter of waiters) if (waiter.deadlineAtMs > nowMs) waiters[kept++] = waiter;
  const dropped = waiters.length - kept;
  waiters.length = kept;
  return dropped;
}

export class Router {
  private readonly host: RouterHost;
  private readonly settings: RouterSettings;
  /** This node's client id in every partition's session table. */
  private readonly clientId: string;
  private nextSeq = 1;
  /**
   * Request ids start at a random point (the constructor's `firstRequestId`): a restarted
   * node must not reuse its last incarnation's ids, or an answer still on its way to one of
   * them (a leader giving up an ack:'all' wait long after the crash) is taken for a new
   * request's (sim seed 4905420: a delete answered ACK_INCOMPLETE).
   */
  private nextRequestId: number;
  private readonly origin = new Map<number, OriginRequest>();
  /** Seqs of writes still unanswered, to tell partitions the lowest (sessions' floor). */
  private readonly unansweredSeqs = new Set<number>();
  private readonly served = new Map<number, ServedPartition>();
  private servedCount = 0;
  private nextReadRound = 1;
  private readonly ackWaits = new Map<number, AckAllWait>();
  /** This node's request id of a relayed request → where its answer goes. */
  private readonly relayed = new Map<number, RelayedRequest>();
  /** Partition → the leader last heard of (hints and local replicas' knowledge). */
  private readonly leaderCache = new Map<number, NodeId>();
  private closedReason: string | null = null;

  constructor(
    host: RouterHost,
    settings: RouterSettings,
    clientId: string,
    firstRequestId: number,
  ) {
    if (!Number.isInteger(firstRequestId) || firstRequestId < 1 || firstRequestId > U32_MAX) {
      throw new RangeError(`firstRequestId must be in 1..${U32_MAX}, got ${firstRequestId}`);
    }
    this.nextRequestId = firstRequestId;
    this.host = host;
    this.settings = settings;
    this.clientId = clientId;
  }

  get pendingRequests(): number {
    return this.origin.size;
  }

  /** Requests this node's leaders are serving (from any node, this one included). */
  get servedRequests(): number {
    return this.servedCount;
  }

  // ---- Origin side ----------------------------------------------------------------------

  /** Starts a client request; `deadlineMs` is validated by the caller. */
  request(
    op: OriginRequest['op'],
    partition: number,
    key: string,
    value: Uint8Array | null,
    deadlineMs: number,
    ackAll: boolean,
  ): Promise<Outcome> {
    if (this.closedReason !== null) return Promise.reject(closed(this.closedReason));
    if (this.origin.size >= this.settings.maxPendingRequests) {
      return Promise.reject(overloaded('maxPendingRequests', this.settings.maxPendingRequests));
    }
    const write = op === 'put' || op === 'delete';
    const seq = write ? this.nextSeq++ : 0;
    if (write) this.unansweredSeqs.add(seq);
    return new Promise<Outcome>((resolve, reject) => {
      const request: OriginRequest = {
        requestId: this.newRequestId(),
        op,
        partition,
        key,
        value,
        seq,
        ackAll,
        deadlineMs,
        deadlineAtMs: this.host.nowMs() + deadlineMs,
        resolve,
        reject,
        target: null,
        via: null,
        retryAtMs: 0,
        attempts: 0,
        mayHaveApplied: false,
        localTried: 0,
        hint: null,
        redirects: 0,
      };
      this.origin.set(request.requestId, request);
      this.dispatch(request);
    });
  }

  /** A RESPONSE from a peer (or from this node's own serving side). */
  onResponse(from: NodeId, response: ResponseRecord): void {
    const request = this.origin.get(response.requestId);
    if (request !== undefined) {
      if ((request.via ?? request.target) === from || isFinalAnswer(response)) {
        this.answered(request, response);
      }
      return;
    }
    const relayed = this.relayed.get(response.requestId);
    if (relayed !== undefined) {
      if (relayed.to === from) {
        this.relayed.delete(response.requestId);
        this.servedCount--;
        this.respond(relayed, { ...response, requestId: relayed.requestId });
      }
      return;
    }
    const wait = this.ackWaits.get(response.requestId);
    if (wait !== undefined && response.outcome === 'applied') {
      if (response.appliedIndex >= wait.index) wait.confirmed.add(from);
      this.checkAckAll(response.requestId, wait);
    }
  }

  private answered(request: OriginRequest, response: ResponseRecord): void {
    switch (response.outcome) {
      case 'boolean':
      case 'value':
        this.finish(request);
        request.resolve(
          response.outcome === 'boolean'
            ? { kind: 'boolean', value: response.value }
            : { kind: 'value', value: response.value },
        );
        return;
      case 'applied':
        return; // Not an answer to a client request.
      case 'error':
        this.failedAttempt(request, response.code, response.message, response.leaderHint);
    }
  }

  private failedAttempt(
    request: OriginRequest,
    code: WireErrorCode,
    message: string,
    leaderHint: NodeId | null,
  ): void {
    request.via = null; // An error through a relay: the next attempt may try another one.
    if (code === 'NOT_LEADER' || code === ErrorCode.UNAVAILABLE) {
      if (leaderHint !== null && leaderHint !== request.target) {
        this.leaderCache.set(request.partition, leaderHint);
        // The next attempt goes where the hint says, whatever a replica here believes: a
        // replica that missed its removal keeps the leader of its day (a read through it
        // went to that one and the placement's others in turn, never to the leader named).
        request.hint = leaderHint;
        if (request.redirects++ < MAX_REDIRECTS_PER_ROUND) this.dispatch(request);
      } else {
        // Nobody knows a leader yet (an election): try again after the backoff.
        this.forgetLeader(request);
        // A local read tries the next replica at once, but each only once per backoff
        // round (one whose read fails every time, this node's own included, must not be
        // asked again and again in the same turn).
        if (
          request.op === 'localGet' &&
          request.localTried < this.localCandidates(request).length
        ) {
          this.dispatch(request);
        }
      }
      return;
    }
    const write = request.op === 'put' || request.op === 'delete';
    if (
      code === ErrorCode.CLOSED ||
      (code === ErrorCode.OVERLOADED && write && request.attempts > 1)
    ) {
      // "Not served" and "nothing was done" speak for this attempt only: the target is
      // closing (another replica can serve), or an earlier attempt may have proposed the
      // write. Retried after the backoff; at the deadline a write's TIMEOUT says it may
      // have been applied.
      this.forgetLeader(request);
      return;
    }
    this.finish(request);
    request.reject(new MeshKvError(code, message, { partition: request.partition }));
  }

  /** The cached leader of the request's partition was its target, which did not serve it. */
  private forgetLeader(request: OriginRequest): void {
    if (request.target !== null && this.leaderCache.get(request.partition) === request.target) {
      this.leaderCache.delete(request.partition);
    }
  }

  private dispatch(request: OriginRequest): void {
    const now = this.host.nowMs();
    request.attempts++;
    const backoffMs = Math.min(
      this.settings.retryMaxMs,
      this.settings.retryMinMs * 2 ** Math.min(request.attempts - 1, 16),
    );
    request.retryAtMs = now + backoffMs;
    // A hibernating replica here wakes for a request of its partition, as the leader's does
    // when the request reaches it: a leader lost silently (a killed peer's WebRTC link shows
    // no peerDown for many seconds) is only replaced once a follower ticks and campaigns.
    const own = request.op === 'localGet' ? undefined : this.host.replica(request.partition);
    if (own !== undefined) own.quiesced = false;
    const target = request.op === 'localGet' ? this.localTarget(request) : this.leaderOf(request);
    request.target = target;
    if (target === null) return;
    request.via =
      target === this.host.nodeId || this.host.linkUp(target) ? null : this.relayFor(request);
    if (request.op === 'put' || request.op === 'delete') request.mayHaveApplied = true;
    const record: RequestRecord = {
      kind: 'request',
      requestId: request.requestId,
      op: request.op === 'put' && request.ackAll ? 'putAckAll' : request.op,
      partition: request.partition,
      key: request.key,
      value: request.value,
      clientId: this.clientId,
      seq: request.seq,
      lowestUnanswered: this.lowestUnanswered(request.seq),
      deadlineRemainingMs: Math.max(0, Math.min(U32_MAX, request.deadlineAtMs - now)),
      appliedIndex: 0,
      relay: request.via !== null,
    };
    if (target === this.host.nodeId) this.serve(target, record);
    else this.host.sendRequest(request.via ?? target, record);
  }

  /**
   * A replica of the request's partition to relay it to `request.target` (whose link is
   * down): one whose link is up; null when there is none (the request then goes straight
   * to the target, whose link may open on demand). A retry without an answer keeps its
   * relay, since only the current relay's answer is taken (an ack:'all' write is answered
   * late, at four fifths of its deadline); after an error answer, the next one is tried.
   */
  private relayFor(request: OriginRequest): NodeId | null {
    const candidates = this.host
      .placementReplicas(request.partition)
      .filter((id) => id !== this.host.nodeId && id !== request.target && this.host.linkUp(id));
    if (candidates.length === 0) return null;
    if (request.via !== null && candidates.includes(request.via)) return request.via;
    return candidates[request.attempts % candidates.length]!;
  }

  /**
   * The leader to try: the one the last answer named, a local replica's knowledge, the
   * last hint for the partition, else the placement's replicas in turn.
   */
  private leaderOf(request: OriginRequest): NodeId | null {
    const hint = request.hint;
    if (hint !== null) {
      request.hint = null;
      return hint;
    }
    const known = this.knownLeader(request.partition);
    if (known !== null && (request.attempts <= 1 || known !== request.target)) return known;
    const replicas = this.host.placementReplicas(request.partition);
    if (replicas.length === 0) return null;
    return replicas[(request.attempts - 1) % replicas.length]!;
  }

  /**
   * The leader this node knows of: its replica's, if it holds the partition's data (an
   * empty replica — hosted on a message, maybe stray — knows only the leader that
   * added it, possibly long gone: a newcomer's reads went there again and again), else
   * the one the last answers named.
   */
  private knownLeader(partition: number): NodeId | null {
    const replica = this.host.replica(partition);
    const lead = replica?.initialized === true ? replica.raw.lead : null;
    return (lead === null ? null : nodeOfReplica(lead)) ?? this.leaderCache.get(partition) ?? null;
  }

  /** localGet: this node if it holds the partition's data, then the replicas in ring order. */
  private localTarget(request: OriginRequest): NodeId | null {
    const candidates = this.localCandidates(request);
    if (candidates.length === 0) return null;
    return candidates[request.localTried++ % candidates.length]!;
  }

  /** The replicas a local read may ask, nearest first: this node, then the others up. */
  private localCandidates(request: OriginRequest): NodeId[] {
    const candidates: NodeId[] = [];
    const own = this.host.replica(request.partition);
    if (own?.initialized) candidates.push(this.host.nodeId);
    for (const id of this.host.placementReplicas(request.partition)) {
      if (id !== this.host.nodeId && this.host.linkUp(id)) candidates.push(id);
    }
    return candidates;
  }

  /**
   * Seqs are issued in increasing order and a Set keeps insertion order, so the first one
   * left is the lowest still unanswered (O(1) per dispatch, whatever is in flight).
   */
  private lowestUnanswered(seq: number): number {
    const first = this.unansweredSeqs.values().next();
    return first.done === true || first.value > seq ? seq : first.value;
  }

  private finish(request: OriginRequest): void {
    this.origin.delete(request.requestId);
    if (request.seq > 0) this.unansweredSeqs.delete(request.seq);
  }

  private newRequestId(): number {
    for (;;) {
      const id = this.nextRequestId;
      this.nextRequestId = id === U32_MAX ? 1 : id + 1;
      if (!this.origin.has(id) && !this.ackWaits.has(id) && !this.relayed.has(id)) return id;
    }
  }

  // ---- Serving side ---------------------------------------------------------------------

  /** A request from `from` (a peer, or this node for its own requests). */
  serve(from: NodeId, request: RequestRecord): void {
    const responder: Responder = { from, requestId: request.requestId };
    const replica = this.host.replica(request.partition);
    if (this.closedReason !== null) {
      this.respondError(responder, ErrorCode.CLOSED, `node ${this.host.nodeId} is closing`, null);
      return;
    }
    switch (request.op) {
      case 'appliedQuery':
        if (replica === undefined) {
          this.respondError(responder, 'NOT_LEADER', 'no replica here', null);
        } else {
          this.respond(responder, {
            kind: 'response',
            requestId: request.requestId,
            outcome: 'applied',
            appliedIndex: replica.applied.index,
          });
        }
        return;
      case 'localGet':
        this.serveLocalGet(responder, replica, request.key);
        return;
      default:
        break;
    }
    // A hibernating replica wakes for a request: it ticks until idle again. A follower too:
    // its leader may be gone silently (a killed peer's link shows no peerDown for many
    // seconds), and only a follower that ticks times out and campaigns.
    if (replica !== undefined) replica.quiesced = false;
    if (replica === undefined || replica.raw.role !== 'leader') {
      const hint = this.knownLeader(request.partition);
      if (request.relay && hint !== null && hint !== this.host.nodeId) {
        this.relay(from, request, hint);
        return;
      }
      this.respondError(
        responder,
        'NOT_LEADER',
        `node ${this.host.nodeId} does not lead partition ${request.partition}`,
        hint === this.host.nodeId ? null : hint,
      );
      return;
    }
    if (this.servedCount >= this.settings.maxServedRequests) {
      const error = overloaded('maxServedRequests', this.settings.maxServedRequests);
      this.respondError(responder, error.code, error.message, null);
      return;
    }
    const deadlineAtMs = this.host.nowMs() + request.deadlineRemainingMs;
    const served = this.servedPartition(request.partition);
    if (request.op === 'get') {
      const waiter: ReadWaiter = {
        from,
        requestId: request.requestId,
        key: request.key,
        deadlineAtMs,
      };
      if (served.openRound === null) {
        served.openRound = [];
        const round = this.nextReadRound++;
        try {
          replica.raw.readIndex(encodeRound(round));
        } catch (e) {
          served.openRound = null;
          this.respondError(responder, 'NOT_LEADER', (e as Error).message, null);
          return;
        }
        served.readRounds.set(round, served.openRound);
      }
      served.openRound.push(waiter);
      this.servedCount++;
      this.host.touch(replica);
      return;
    }
    const put = request.op === 'put' || request.op === 'putAckAll';
    const data = encodeCommand({
      kind: put ? 'put' : 'delete',
      clientId: request.clientId,
      seq: request.seq,
      lowestUnanswered: request.lowestUnanswered,
      proposedAtMs: this.host.nowMs(),
      key: request.key,
      value: put ? request.value : null,
    });
    try {
      replica.raw.propose(data);
    } catch (e) {
      // The reason, not the message: "uncommitted log holds N bytes" never said "full", so
      // a full log was taken for a lost lead and the origin retried until its deadline.
      const full =
        isRaftError(e, RaftErrorCode.ProposalDropped) && e.reason === DropReason.UncommittedLogFull;
      this.host.proposalDropped?.(replica.group, full ? 'full' : 'not_leader');
      if (full) {
        const error = overloaded('maxUncommittedEntriesBytes', 0);
        this.respondError(responder, error.code, error.message, null);
      } else {
        this.respondError(responder, 'NOT_LEADER', (e as Error).message, null);
      }
      return;
    }
    const key = writeKey(request.clientId, request.seq);
    const waiters = served.writes.get(key);
    const waiter: WriteWaiter = {
      from,
      requestId: request.requestId,
      deadlineAtMs,
      ackAll: request.op === 'putAckAll',
    };
    if (waiters === undefined) served.writes.set(key, [waiter]);
    else if (!waiters.some((w) => w.from === from && w.requestId === request.requestId)) {
      waiters.push(waiter);
    } else {
      return; // A retry of a request already waiting here: proposed again, one answer.
    }
    this.servedCount++;
    this.host.touch(replica);
  }

  /**
   * Forwards `request` from `from` (which cannot reach the leader) to `leader` under a
   * request id of this node, and passes the leader's answer back (onResponse). Bounded with
   * the served requests; one that gets no answer is dropped at its deadline (the origin
   * times out or retries on its own).
   */
  private relay(from: NodeId, request: RequestRecord, leader: NodeId): void {
    const responder: Responder = { from, requestId: request.requestId };
    if (!this.host.linkUp(leader)) {
      this.respondError(
        responder,
        ErrorCode.UNAVAILABLE,
        `node ${this.host.nodeId} cannot reach ${leader}, the leader of partition ${request.partition}, either`,
        leader,
      );
      return;
    }
    if (this.servedCount >= this.settings.maxServedRequests) {
      const error = overloaded('maxServedRequests', this.settings.maxServedRequests);
      this.respondError(responder, error.code, error.message, null);
      return;
    }
    const requestId = this.newRequestId();
    this.relayed.set(requestId, {
      from,
      requestId: request.requestId,
      to: leader,
      deadlineAtMs: this.host.nowMs() + request.deadlineRemainingMs,
    });
    this.servedCount++;
    this.host.sendRequest(leader, { ...request, requestId, relay: false });
  }

  private serveLocalGet(
    responder: Responder,
    replica: GroupReplica | undefined,
    key: string,
  ): void {
    if (replica === undefined || !replica.initialized) {
      this.respondError(responder, ErrorCode.UNAVAILABLE, 'no initialized replica here', null);
      return;
    }
    const requestId = responder.requestId;
    replica.machine.read(key).then(
      (value) => this.respond(responder, { kind: 'response', requestId, outcome: 'value', value }),
      (error: unknown) => this.respondError(responder, ErrorCode.UNAVAILABLE, String(error), null),
    );
  }

  /** The Ready's read states of a group this node leads (or led). */
  onReadStates(partition: number, states: readonly { index: number; context: Uint8Array }[]) {
    const served = this.served.get(partition);
    if (served === undefined) return;
    for (const state of states) {
      const round = decodeRound(state.context);
      const waiters = served.readRounds.get(round);
      if (waiters === undefined) continue;
      served.readRounds.delete(round);
      served.readsAtIndex.push({ index: state.index, waiters });
    }
  }

  /** A Ready was taken: reads asked from now on start a new read-index round. */
  closeReadRound(partition: number): void {
    const served = this.served.get(partition);
    if (served !== undefined) served.openRound = null;
  }

  /** After a group applied entries: answer the writes they carried and the reads now due. */
  onApplied(replica: GroupReplica, results: readonly AppliedCommand[]): void {
    const served = this.served.get(replica.group);
    if (served === undefined) return;
    for (const applied of results) {
      if (applied.clientId === null) continue;
      const key = writeKey(applied.clientId, applied.seq);
      const waiters = served.writes.get(key);
      if (waiters === undefined) continue;
      served.writes.delete(key);
      for (const waiter of waiters) {
        this.servedCount--;
        if (applied.result === 'result_dropped') {
          const error = outcomeUnknown(replica.group);
          this.respondError(waiter, error.code, error.message, null);
        } else if (waiter.ackAll) {
          this.startAckAll(replica, applied.index, applied.result, waiter);
        } else {
          this.respondBoolean(waiter, applied.result);
        }
      }
    }
    this.serveDueReads(replica, served);
  }

  private serveDueReads(replica: GroupReplica, served: ServedPartition): void {
    const due = served.readsAtIndex;
    let kept = 0;
    for (const entry of due) {
      if (entry.index > replica.applied.index) {
        due[kept++] = entry;
        continue;
      }
      for (const waiter of entry.waiters) {
        this.servedCount--;
        const requestId = waiter.requestId;
        replica.machine.read(waiter.key).then(
          (value) => this.respond(waiter, { kind: 'response', requestId, outcome: 'value', value }),
          (error: unknown) => this.respondError(waiter, ErrorCode.UNAVAILABLE, String(error), null),
        );
      }
    }
    due.length = kept;
  }

  /** The group lost leadership (or is gone): its waiters retry elsewhere. */
  abandonServed(partition: number, leaderHint: NodeId | null): void {
    const served = this.served.get(partition);
    if (served === undefined) return;
    this.served.delete(partition);
    const message = `node ${this.host.nodeId} no longer leads partition ${partition}`;
    const hint = leaderHint === this.host.nodeId ? null : leaderHint;
    for (const waiters of served.writes.values()) {
      for (const w of waiters) this.respondError(w, 'NOT_LEADER', message, hint);
      this.servedCount -= waiters.length;
    }
    for (const waiters of served.readRounds.values()) {
      for (const w of waiters) this.respondError(w, 'NOT_LEADER', message, hint);
      this.servedCount -= waiters.length;
    }
    for (const { waiters } of served.readsAtIndex) {
      for (const w of waiters) this.respondError(w, 'NOT_LEADER', message, hint);
      this.servedCount -= waiters.length;
    }
  }

  private startAckAll(
    replica: GroupReplica,
    index: number,
    result: boolean,
    waiter: WriteWaiter,
  ): void {
    const c = replica.confState;
    const voters = [...new Set([...c.voters, ...c.votersOutgoing].map(nodeOfReplica))];
    const now = this.host.nowMs();
    const wait: AckAllWait = {
      partition: replica.group,
      index,
      result,
      waiter,
      voters,
      confirmed: new Set([this.host.nodeId]),
      giveUpAtMs: now + Math.floor(((waiter.deadlineAtMs - now) * 4) / 5),
      queryAtMs: 0,
    };
    const id = this.newRequestId();
    this.ackWaits.set(id, wait);
    this.queryAckAll(id, wait);
  }

  private queryAckAll(id: number, wait: AckAllWait): void {
    if (this.checkAckAll(id, wait)) return;
    const now = this.host.nowMs();
    wait.queryAtMs = now + this.settings.retryMinMs;
    for (const voter of wait.voters) {
      if (wait.confirmed.has(voter)) continue;
      this.host.sendRequest(voter, {
        kind: 'request',
        requestId: id,
        op: 'appliedQuery',
        partition: wait.partition,
        key: '',
        value: null,
        clientId: this.clientId,
        seq: 0,
        lowestUnanswered: 0,
        deadlineRemainingMs: Math.max(0, Math.min(U32_MAX, wait.waiter.deadlineAtMs - now)),
        appliedIndex: wait.index,
        relay: false,
      });
    }
  }

  /** Answers the ack-all write once every voter confirmed; true when done. */
  private checkAckAll(id: number, wait: AckAllWait): boolean {
    if (!wait.voters.every((v) => wait.confirmed.has(v))) return false;
    this.ackWaits.delete(id);
    this.respondBoolean(wait.waiter, wait.result);
    return true;
  }

  private servedPartition(partition: number): ServedPartition {
    let served = this.served.get(partition);
    if (served === undefined) {
      served = { writes: new Map(), readRounds: new Map(), readsAtIndex: [], openRound: null };
      this.served.set(partition, served);
    }
    return served;
  }

  private respondBoolean(to: Responder, value: boolean): void {
    this.respond(to, { kind: 'response', requestId: to.requestId, outcome: 'boolean', value });
  }

  private respondError(
    to: Responder,
    code: WireErrorCode,
    message: string,
    leaderHint: NodeId | null,
  ): void {
    this.respond(to, {
      kind: 'response',
      requestId: to.requestId,
      outcome: 'error',
      code,
      message: message.length > 1000 ? `${message.slice(0, 1000)}…` : message,
      leaderHint,
    });
  }

  private respond(to: Responder, response: ResponseRecord): void {
    if (to.from === this.host.nodeId) this.onResponse(to.from, response);
    else this.host.sendResponse(to.from, response);
  }

  // ---- Time ------------------------------------------------------------------------------

  /** Expires deadlines and retries what got no answer (called on every tick). */
  onTick(): void {
    const now = this.host.nowMs();
    for (const request of this.origin.values()) {
      if (now >= request.deadlineAtMs) {
        this.finish(request);
        request.reject(this.deadlineError(request));
      } else if (now >= request.retryAtMs) {
        // A new backoff round: every replica may be asked again, hints followed again.
        request.localTried = 0;
        request.redirects = 0;
        this.dispatch(request);
      }
    }
    for (const [id, wait] of this.ackWaits) {
      if (now >= wait.giveUpAtMs) {
        this.ackWaits.delete(id);
        const unconfirmed = wait.voters.filter((v) => !wait.confirmed.has(v));
        const error = ackIncomplete(wait.partition, wait.voters, unconfirmed);
        this.respondError(wait.waiter, error.code, error.message, null);
      } else if (now >= wait.queryAtMs) {
        this.queryAckAll(id, wait);
      }
    }
    for (const served of this.served.values()) this.expireServed(served, now);
    for (const [id, relayed] of this.relayed) {
      if (now < relayed.deadlineAtMs) continue;
      this.relayed.delete(id);
      this.servedCount--;
    }
  }

  /**
   * Drops the waiters past their deadline (their origins time out on their own): writes
   * whose entry never applies here, and reads whose read-index round never completes (a
   * leader that lost its quorum without noticing) or whose read point is not applied.
   */
  private expireServed(served: ServedPartition, nowMs: number): void {
    for (const [key, waiters] of served.writes) {
      this.servedCount -= dropExpired(waiters, nowMs);
      if (waiters.length === 0) served.writes.delete(key);
    }
    for (const [round, waiters] of served.readRounds) {
      this.servedCount -= dropExpired(waiters, nowMs);
      // The open round stays: reads arriving before the next Ready still join it.
      if (waiters.length === 0 && waiters !== served.openRound) served.readRounds.delete(round);
    }
    const due = served.readsAtIndex;
    let kept = 0;
    for (const entry of due) {
      this.servedCount -= dropExpired(entry.waiters, nowMs);
      if (entry.waiters.length > 0) due[kept++] = entry;
    }
    due.length = kept;
  }

  private deadlineError(request: OriginRequest): MeshKvError {
    const write = request.op === 'put' || request.op === 'delete';
    const replicas = this.host.placementReplicas(request.partition);
    const down = replicas.filter((id) => id !== this.host.nodeId && !this.host.linkUp(id));
    if (request.attempts > 0 && replicas.length > 0 && down.length * 2 >= replicas.length) {
      if (!write || !request.mayHaveApplied) {
        return unavailable(request.partition, replicas, down, request.target);
      }
    }
    return timeout(
      request.deadlineMs,
      write ? 'write' : 'read',
      request.mayHaveApplied,
      request.partition,
    );
  }

  /** Fails every request with CLOSED; later calls fail at once. */
  close(reason: string): void {
    this.closedReason = reason;
    for (const request of this.origin.values()) {
      const error =
        (request.op === 'put' || request.op === 'delete') && request.mayHaveApplied
          ? timeout(request.deadlineMs, 'write', true, request.partition)
          : closed(reason);
      request.reject(error);
    }
    this.origin.clear();
    this.unansweredSeqs.clear();
  }
}

/**
 * An answer that ends a request whichever attempt it answers: a result, or ACK_INCOMPLETE
 * (given once the write committed). Every attempt started after the request did, and a
 * write's (clientId, seq) applies once, so any attempt's result is the request's (an
 * ack:'all' write is answered at four fifths of its deadline, after retries went
 * elsewhere). Other errors speak for one attempt and count only from its target.
 */
function isFinalAnswer(response: ResponseRecord): boolean {
  return (
    response.outcome === 'boolean' ||
    response.outcome === 'value' ||
    (response.outcome === 'error' && response.code === ErrorCode.ACK_INCOMPLETE)
  );
}

function writeKey(clientId: string, seq: number): string {
  return `${clientId}\u0000${seq}`;
}

function encodeRound(round: number): Uint8Array {
  const bytes = new Uint8Array(6);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, Math.floor(round / 0x1_0000_0000));
  view.setUint32(2, round >>> 0);
  return bytes;
}

function decodeRound(context: Uint8Array): number {
  if (context.byteLength !== 6) return -1;
  const view = new DataView(context.buffer, context.byteOffset, 6);
  return view.getUint16(0) * 0x1_0000_0000 + view.getUint32(2);
}

export type { Outcome };
