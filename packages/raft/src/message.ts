import type { Entry, GroupId, NodeId, SnapshotMetadata } from './types.ts';

/**
 * Message types. "Local" types never cross the network: the RawNode creates them from
 * method calls (Hup from campaign(), Prop from propose(), ...) and `RawNode.step`
 * refuses them. Prop and ReadIndex also travel follower → leader when forwarded.
 */
export const MessageType = {
  /** Local: start an election (campaign()). */
  Hup: 0,
  /** Local: the leader should broadcast heartbeats. */
  Beat: 1,
  /** Proposal of entries; local, or forwarded by a follower to its leader. term = 0. */
  Prop: 2,
  /** Leader → follower: append `entries` after (`index`, `logTerm`); `commit` is the leader's commit. */
  App: 3,
  /** Follower → leader: `index` appended (or rejected, with `rejectHint`/`logTerm` for fast backtracking). */
  AppResp: 4,
  /** Candidate → voter: vote for me at `term`; my last entry is (`index`, `logTerm`). */
  Vote: 5,
  VoteResp: 6,
  /** Leader → follower: one chunk of a snapshot (`snapshot` field). */
  Snap: 7,
  /** Leader → follower: I am alive; `commit` is min(follower's match, leader's commit). */
  Heartbeat: 8,
  HeartbeatResp: 9,
  /** Local: the host reports a peer unreachable (reportUnreachable()). */
  Unreachable: 10,
  /** Local: the host reports a snapshot transfer outcome (reportSnapshot()). */
  SnapStatus: 11,
  /** Local: the leader checks it still hears from a quorum. */
  CheckQuorum: 12,
  /**
   * Ask the leader to transfer leadership to `from`, the transferee (etcd's convention):
   * when a follower forwards it, `from` is the transferee, not the sending node.
   */
  TransferLeader: 13,
  /** Leader → transferee: campaign now, bypassing the election timeout and PreVote (§3.10). */
  TimeoutNow: 14,
  /** Read-index request carrying `context`; local, or forwarded by a follower. term = 0. */
  ReadIndex: 15,
  /** Leader → follower: the read index for `context` is `index`. */
  ReadIndexResp: 16,
  /** Pre-candidate → voter: would you vote for me at `term` (not yet adopted)? (thesis §9.6) */
  PreVote: 17,
  PreVoteResp: 18,
  /**
   * Follower → leader, for snapshot `index`: `rejectHint` bytes are reassembled in order
   * (flow control; 0 = start over), or `reject` = the snapshot is refused (too large, or
   * its configuration does not include the follower): the leader sends a fresh one later.
   */
  SnapResp: 19,
  /**
   * Leader → follower in replicate state that acknowledged every entry through (`index`,
   * `logTerm`): `commit` is the leader's commit. The commit-only MsgApp of a commit
   * advance, without its answer: an answer would only repeat the match the leader has.
   * A follower whose log does not match there answers as to a rejected MsgApp.
   */
  Commit: 20,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

const messageTypeNames: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(MessageType).map(([name, value]) => [value, `Msg${name}`]),
);

/** "MsgApp", "MsgVote", ... for logs and test output. */
export function messageTypeName(type: MessageType): string {
  return messageTypeNames[type] ?? `Msg(${type})`;
}

/** Types that only ever originate inside the local node. */
export function isLocalMessage(type: MessageType): boolean {
  return (
    type === MessageType.Hup ||
    type === MessageType.Beat ||
    type === MessageType.Unreachable ||
    type === MessageType.SnapStatus ||
    type === MessageType.CheckQuorum
  );
}

/** Types that answer a request; they are only accepted from members of the configuration. */
export function isResponseMessage(type: MessageType): boolean {
  return (
    type === MessageType.AppResp ||
    type === MessageType.VoteResp ||
    type === MessageType.HeartbeatResp ||
    type === MessageType.PreVoteResp ||
    type === MessageType.SnapResp
  );
}

/**
 * One chunk of a snapshot. The leader cuts `Storage.snapshot().data` into chunks of at
 * most `maxSnapshotChunkBytes` and sends them in order; the follower reassembles them and
 * installs the snapshot once it has `totalBytes`. The follower acknowledges each chunk
 * with SnapResp (bytes received in order); the leader keeps at most
 * `maxSnapshotInflightChunks` unacknowledged and resends from the acknowledged offset
 * when the transfer stalls.
 */
export interface SnapshotChunk {
  /** The snapshot's metadata, repeated in every chunk so each is self-describing. */
  readonly metadata: SnapshotMetadata;
  /** Position of `data` in the whole snapshot. */
  readonly offsetBytes: number;
  /** Size of the whole snapshot's data. */
  readonly totalBytes: number;
  readonly data: Uint8Array;
}

/**
 * A Raft message. Every field is always present (zero values when unused) so the shape
 * is monomorphic and codecs are simple. `groupId` lets many groups share one node and one
 * link: the host routes an incoming message to the RawNode of that group.
 */
export interface Message {
  readonly groupId: GroupId;
  readonly type: MessageType;
  readonly from: NodeId;
  readonly to: NodeId;
  /** Sender's term; 0 for Prop and ReadIndex (they are not tied to a term). */
  readonly term: number;
  /** App: term of the entry at `index`. AppResp(reject): term of `rejectHint`. Vote/PreVote: last log term. */
  readonly logTerm: number;
  /** App: index preceding `entries`. AppResp: last index appended (or rejected). Vote: last log index. ReadIndexResp: the read index. SnapResp: snapshot index. */
  readonly index: number;
  readonly entries: readonly Entry[];
  readonly commit: number;
  /** Vote/PreVote/AppResp/SnapResp: the request was refused. */
  readonly reject: boolean;
  /** AppResp(reject): the follower's guess of the last index that may match (fast backtracking). SnapResp: bytes received. */
  readonly rejectHint: number;
  /** ReadIndex/ReadIndexResp/Heartbeat(Resp): the read request's context. Vote: "transfer" marker. */
  readonly context: Uint8Array;
  /** Snap: the chunk carried; null for every other type. */
  readonly snapshot: SnapshotChunk | null;
}

const noEntries: readonly Entry[] = Object.freeze([]);
const noBytes = new Uint8Array(0);

/** Builds a Message, filling every field not given with its zero value. */
export function newMessage(
  fields: Pick<Message, 'groupId' | 'type' | 'from' | 'to'> & Partial<Message>,
): Message {
  return {
    groupId: fields.groupId,
    type: fields.type,
    from: fields.from,
    to: fields.to,
    term: fields.term ?? 0,
    logTerm: fields.logTerm ?? 0,
    index: fields.index ?? 0,
    entries: fields.entries ?? noEntries,
    commit: fields.commit ?? 0,
    reject: fields.reject ?? false,
    rejectHint: fields.rejectHint ?? 0,
    context: fields.context ?? noBytes,
    snapshot: fields.snapshot ?? null,
  };
}
