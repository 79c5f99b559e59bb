/**
 * Data types shared by the Raft state machine, its storage contract and the durable
 * backends in @meshkv/storage. Indexes and terms are JavaScript numbers: they stay exact
 * up to 2^53, which at a million entries a second lasts ~285 years.
 */

/** A node's id as the registry assigns it (non-empty, at most 64 UTF-8 bytes). */
export type NodeId = string;

/** A Raft group's id: the partition number it replicates (0 ≤ id < Q). */
export type GroupId = number;

export const EntryType = {
  /** An application command (or an empty entry a new leader appends, §5.4.2). */
  Normal: 0,
  /** A membership change; `data` is an encoded ConfChange. */
  ConfChange: 1,
} as const;
export type EntryType = (typeof EntryType)[keyof typeof EntryType];

export interface Entry {
  readonly term: number;
  readonly index: number;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/** What must be durable before a node answers a vote or an append (Raft §5.1, Figure 2). */
export interface HardState {
  readonly term: number;
  /** Candidate voted for in `term`, or null. */
  readonly vote: NodeId | null;
  readonly commit: number;
}

/** Membership of a group; during joint consensus both `voters` and `votersOutgoing` apply. */
export interface ConfState {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
  /** Voters of the outgoing configuration while in a joint configuration, else empty. */
  readonly votersOutgoing: readonly NodeId[];
  /** Voters of the outgoing configuration that become learners when the joint state is left. */
  readonly learnersNext: readonly NodeId[];
  /** Leave the joint configuration automatically once it is committed. */
  readonly autoLeave: boolean;
}

export interface SnapshotMetadata {
  readonly index: number;
  readonly term: number;
  readonly confState: ConfState;
}

/** A snapshot of a group's state machine up to and including `metadata.index`. */
export interface Snapshot {
  readonly metadata: SnapshotMetadata;
  readonly data: Uint8Array;
}

/**
 * Bytes an entry counts for in size limits (`maxSizePerMsgBytes`, `maxInflightBytes`,
 * `Storage.entries(maxBytes)`): its payload plus a fixed allowance for the header.
 */
export function entrySizeBytes(entry: Entry): number {
  return entry.data.byteLength + ENTRY_HEADER_BYTES;
}

/** Fixed per-entry allowance (term, index, type) in `entrySizeBytes`. */
export const ENTRY_HEADER_BYTES = 24;

/** A ConfState with no members, as a fresh node that waits for a snapshot has. */
export const emptyConfState: ConfState = Object.freeze({
  voters: Object.freeze([]),
  learners: Object.freeze([]),
  votersOutgoing: Object.freeze([]),
  learnersNext: Object.freeze([]),
  autoLeave: false,
});

/** The HardState of a node that never voted nor learned of a commit. */
export const emptyHardState: HardState = Object.freeze({ term: 0, vote: null, commit: 0 });

export function isEmptyHardState(hs: HardState): boolean {
  return hs.term === 0 && hs.vote === null && hs.commit === 0;
}

export function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

/**
 * How a new group starts: its initial replicas persist this snapshot (index 1, term 1,
 * empty data) holding the initial configuration, so their logs start at index 2. A node
 * added later starts with empty storage; since no log holds entry 1, the leader catches
 * it up with a snapshot, which carries the configuration it must know.
 */
export function bootstrapSnapshot(confState: ConfState): Snapshot {
  return { metadata: { index: 1, term: 1, confState }, data: new Uint8Array(0) };
}
