/**
 * The one implementation of NodeStorage, over any Engine (memory, IndexedDB, LevelDB).
 *
 * Durability argument: a batch becomes ONE Engine.write (all puts and deletes of all its
 * groups plus the node record), which the engine applies atomically and durably. All
 * state is reachable only through the group records, so a crash leaves either the old or
 * the new records, and with them a consistent view. Data that a batch makes unreachable
 * (a removed group, a state machine replaced by a restore, staged chunks never committed)
 * lives under "spaces" listed as garbage in the node record by that same atomic write; it
 * is cleared by range afterwards, or on the next open if a crash came first.
 *
 * The log of a group is a sequence of segments (one record per batch and group, split at
 * 8 MiB), keyed by their first index. A segment covers its entries up to the first index
 * of the next segment: appending at i deletes the segments starting at or after i and
 * writes a new one at i, which masks the tail of the segment it lands in without
 * rewriting it. Compaction deletes the segments wholly at or below the compaction point.
 */
import {
  type ConfState,
  type Entry,
  emptyConfState,
  type GroupId,
  type HardState,
  type Snapshot,
} from '@meshkv/raft';
import {
  batchKey,
  type Chunk,
  type ChunkRecord,
  chunkRecordBytes,
  DecodeError,
  decodeChunk,
  decodeGroup,
  decodeNode,
  decodeSegment,
  decodeSnapshot,
  encodeChunk,
  encodeGroup,
  encodeNode,
  encodeSegment,
  encodeSnapshot,
  type GroupRecord,
  groupKey,
  hex,
  kvKey,
  type NodeRecord,
  nodeKey,
  readBatchSeq,
  readSegmentFirstIndex,
  readSpace,
  readStateMachineKey,
  seal,
  segmentBytes,
  segmentEntryBytes,
  segmentKey,
  sessionKey,
  sessionRange,
  snapshotKey,
  spaceRange,
  streamIdBytes,
  Table,
  tableRange,
  unseal,
  utf8Length,
} from './codec.ts';
import type { Engine, EngineOp, EnginePage } from './engine.ts';
import { StorageError } from './errors.ts';
import { type Segment, SegmentLog, type Undo } from './segment-log.ts';
import {
  type AppliedState,
  type GroupState,
  type GroupWrite,
  limits,
  type NodeState,
  type NodeStorage,
  type SnapshotChunkOptions,
  type SnapshotRestore,
  type WriteBatch,
} from './storage.ts';

/** Log segments are split so that no single record grows past this (LevelDB, IDB values). */
const maxSegmentBytes = 8 * 1024 * 1024;
const defaultTargetChunkBytes = 1024 * 1024;
/** A misspelt field must not be ignored silently. */
const groupWriteFields = new Set<string>([
  'group',
  'create',
  'remove',
  'snapshot',
  'restore',
  'entries',
  'savedSnapshot',
  'compactTo',
  'hardState',
  'appliedState',
  'kv',
  'sessions',
] satisfies (keyof GroupWrite)[]);

/** A group record being planned: each field of a part replaces what it changes. */
type DraftRecord = { -readonly [K in keyof GroupRecord]: GroupRecord[K] };

function draftOf(record: GroupRecord): DraftRecord {
  return {
    group: record.group,
    logSpace: record.logSpace,
    stateSpace: record.stateSpace,
    hardState: record.hardState,
    compacted: record.compacted,
    snapshotIndex: record.snapshotIndex,
    appliedState: record.appliedState,
  };
}

interface GroupMirror {
  readonly record: GroupRecord;
  /** Edited in place while a batch is planned (undone if the batch is rejected). */
  readonly log: SegmentLog;
}

function lastIndexOf(m: GroupMirror): number {
  return m.log.lastIndex() ?? m.record.compacted.index;
}

function termAt(m: GroupMirror, index: number): number | undefined {
  if (index === m.record.compacted.index) return m.record.compacted.term;
  if (index < m.record.compacted.index) return undefined;
  return m.log.termAt(index);
}

export interface EngineStorageOptions {
  /**
   * Fills its argument with random bytes: the ids of snapshot streams (unique across
   * nodes and restarts, so a restore never splices two streams). Default
   * `crypto.getRandomValues`; a deterministic simulation passes its seeded source.
   */
  readonly random?: (bytes: Uint8Array) => void;
}

const cryptoRandom = (bytes: Uint8Array): void => {
  globalThis.crypto.getRandomValues(bytes);
};

/** Opens a store over `engine`: initializes an empty database, refuses a foreign one. */
export async function openEngineStorage(
  raw: Engine,
  options: EngineStorageOptions = {},
): Promise<NodeStorage> {
  const engine = sealedEngine(raw);
  try {
    const nodeBytes = await raw.get(nodeKey());
    let node: NodeRecord;
    let batchSeq = 0;
    if (nodeBytes === undefined) {
      for await (const page of raw.scan(new Uint8Array(0), null)) {
        if (page.length > 0) {
          throw new StorageError(
            'corrupt',
            `${engine.name}: holds data but no meshkv node record: not a meshkv store, refusing to open it`,
          );
        }
      }
      node = { nextSpace: 1, garbage: [] };
      await engine.write([nodePut(node), sealedPut(batchKey(batchSeq), new Uint8Array(0))]);
    } else {
      node = decodeNode(unsealNode(nodeBytes, engine.name), `${engine.name}: node record`);
      batchSeq = await readBatchMarker(engine);
    }
    const { groups } = await readGroups(engine);
    const storage = new EngineStorage(
      engine,
      node,
      groups,
      batchSeq,
      options.random ?? cryptoRandom,
    );
    await storage.collectGarbage(node.garbage);
    return storage;
  } catch (error) {
    await engine.close().catch(() => {});
    throw asStorageError(engine.name, error);
  }
}

/**
 * The node record's value. One that fails its checksum but reads as a node record of
 * another version (format 1 did not seal records) is refused as 'unsupported_version'.
 */
function unsealNode(sealed: Uint8Array, name: string): Uint8Array {
  const what = `${name}: node record`;
  try {
    return unseal(nodeKey(), sealed, what);
  } catch (error) {
    try {
      decodeNode(sealed, what);
    } catch (older) {
      if (older instanceof DecodeError && older.code === 'unsupported_version') throw older;
    }
    throw error;
  }
}

/**
 * The store's batch count, from its marker: every engine write moves the marker from `seq`
 * to `seq + 1` in the same atomic write, so exactly one marker exists. Two mean the engine
 * lost a write but kept later ones (LevelDB, without paranoid checks, skips a damaged log
 * record on recovery and replays the rest): refused, since acknowledged data is gone.
 */
async function readBatchMarker(engine: Engine): Promise<number> {
  const markers = (await collect(engine.scan(...tableRange(Table.Batch)))).map(([key]) =>
    readBatchSeq(key),
  );
  if (markers.length === 1) return markers[0]!;
  throw new StorageError(
    'corrupt',
    markers.length === 0
      ? `${engine.name}: has no batch marker`
      : `${engine.name}: holds batch markers ${markers.join(', ')}: writes after batch ${markers[0]} were lost while later ones survived`,
  );
}

/**
 * The engine as the store sees it: every value it reads checked against the checksum of
 * its key and value ('corrupt' on a mismatch). Every value the store writes is sealed
 * (codec.ts, `seal`) when its op is made: `sealedPut`, or an encoder given the key.
 */
function sealedEngine(engine: Engine): Engine {
  const name = engine.name;
  const what = `${name}: record`;
  return {
    name,
    async get(key) {
      const sealed = await engine.get(key);
      return sealed === undefined ? undefined : unseal(key, sealed, what);
    },
    scan(lo, hi) {
      const pages = engine.scan(lo, hi);
      return (async function* unsealed() {
        for await (const page of pages) {
          yield page.map(([key, sealed]) => [key, unseal(key, sealed, what)] as const);
        }
      })();
    },
    // Values come sealed: every put the store makes is built by sealedPut or an encoder
    // given its key (one allocation per record, not a copy behind its checksum).
    write: (ops) => engine.write(ops),
    clearRange: (lo, hi) => engine.clearRange(lo, hi),
    close: () => engine.close(),
  };
}

/** A put of a raw value (KV data, a session record, the batch marker), sealed under its key. */
function sealedPut(key: Uint8Array, value: Uint8Array): EngineOp {
  return { type: 'put', key, value: seal(key, value) };
}

function nodePut(node: NodeRecord): EngineOp {
  const key = nodeKey();
  return { type: 'put', key, value: encodeNode(node, key) };
}

function asStorageError(name: string, error: unknown): StorageError {
  if (error instanceof StorageError) return error;
  if (error instanceof DecodeError) return new StorageError(error.code, error.message);
  const message = error instanceof Error ? error.message : String(error);
  return new StorageError('io', `${name}: ${message}`, { cause: error });
}

async function collect(pages: AsyncIterable<EnginePage>): Promise<EnginePage> {
  const all: Array<readonly [Uint8Array, Uint8Array]> = [];
  for await (const page of pages) all.push(...page);
  return all;
}

/** Reads every group: a few range scans plus one per group for its sessions. */
async function readGroups(engine: Engine) {
  const name = engine.name;
  const [groupPairs, segmentPairs, snapshotPairs] = await Promise.all([
    collect(engine.scan(...tableRange(Table.Group))),
    collect(engine.scan(...tableRange(Table.Segment))),
    collect(engine.scan(...tableRange(Table.Snapshot))),
  ]);
  const segmentsBySpace = new Map<number, Array<readonly [Uint8Array, Uint8Array]>>();
  for (const pair of segmentPairs) {
    const space = readSpace(pair[0]);
    const list = segmentsBySpace.get(space) ?? [];
    if (list.length === 0) segmentsBySpace.set(space, list);
    list.push(pair);
  }
  const snapshots = new Map(snapshotPairs.map(([key, value]) => [readSpace(key), value]));

  const groups = new Map<GroupId, { state: GroupState; mirror: GroupMirror }>();
  await Promise.all(
    groupPairs.map(async ([key, value]) => {
      const what = `${name}: group record ${readSpace(key)}`;
      const record = decodeGroup(value, what);
      if (record.group !== readSpace(key)) {
        throw new StorageError('corrupt', `${what} names group ${record.group}`);
      }
      const { entries, segments } = readLog(
        name,
        record,
        segmentsBySpace.get(record.logSpace) ?? [],
      );
      let snapshot: Snapshot | null = null;
      if (record.snapshotIndex !== null) {
        const bytes = snapshots.get(record.logSpace);
        const snapshotWhat = `${name}: snapshot of group ${record.group}`;
        if (bytes === undefined) throw new StorageError('corrupt', `${snapshotWhat} is missing`);
        snapshot = decodeSnapshot(bytes, snapshotWhat);
        if (snapshot.metadata.index !== record.snapshotIndex) {
          throw new StorageError(
            'corrupt',
            `${snapshotWhat} has index ${snapshot.metadata.index}, the group record says ${record.snapshotIndex}`,
          );
        }
      }
      const sessions = new Map<string, Uint8Array>();
      for (const [sessionKeyBytes, record_] of await collect(
        engine.scan(...sessionRange(record.stateSpace)),
      )) {
        const { name: clientId } = readStateMachineKey(
          sessionKeyBytes,
          `${name}: session of group ${record.group}`,
        );
        sessions.set(clientId, record_);
      }
      groups.set(record.group, {
        state: {
          group: record.group,
          hardState: record.hardState,
          snapshot,
          compacted: record.compacted,
          entries,
          appliedState: record.appliedState,
          sessions,
        },
        mirror: { record, log: new SegmentLog(segments) },
      });
    }),
  );
  return { groups };
}

/** Rebuilds a group's log from its segments (see the file comment for the masking rule). */
function readLog(
  name: string,
  record: GroupRecord,
  pairs: ReadonlyArray<readonly [Uint8Array, Uint8Array]>,
): { entries: Entry[]; segments: Segment[] } {
  const entries: Entry[] = [];
  const segments: Segment[] = [];
  const compacted = record.compacted.index;
  pairs.forEach(([key, value], i) => {
    const first = readSegmentFirstIndex(key);
    const what = `${name}: log segment at index ${first} of group ${record.group}`;
    const decoded = decodeSegment(value, what);
    if (decoded[0]!.index !== first) {
      throw new StorageError('corrupt', `${what} starts at index ${decoded[0]!.index}`);
    }
    const next = pairs[i + 1];
    const end = next === undefined ? Number.POSITIVE_INFINITY : readSegmentFirstIndex(next[0]);
    const covered = decoded.filter((e) => e.index < end);
    if (next !== undefined && first + covered.length !== end) {
      throw new StorageError('corrupt', `${what} leaves a gap before index ${end}`);
    }
    segments.push({ first, count: covered.length, terms: covered.map((e) => e.term) });
    for (const e of covered) if (e.index > compacted) entries.push(e);
  });
  const head = segments[0];
  if (head !== undefined && head.first > compacted + 1) {
    throw new StorageError(
      'corrupt',
      `${name}: the log of group ${record.group} starts at ${head.first}, after its compaction point ${compacted}`,
    );
  }
  return { entries, segments };
}

// ---- Validation helpers -----------------------------------------------------------------

function isIndex(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isWellFormed(text: string): boolean {
  return (text as string & { isWellFormed(): boolean }).isWellFormed();
}

/** The UTF-8 length of a non-empty well-formed string; -1 for anything else. */
function textBytes(value: unknown): number {
  if (typeof value !== 'string' || value.length === 0 || !isWellFormed(value)) return -1;
  return utf8Length(value);
}

/**
 * `what` names the checked field in error messages; with `at` ≥ 0 its `[]` becomes
 * `[at]` ('kv[].key', 3: 'kv[3].key'). Messages are only made for a failure: checks run
 * per entry and per KV write, so the names must not be built for every call.
 */
function label(what: string, at: number): string {
  return at < 0 ? what : what.replace('[]', `[${at}]`);
}

const confStateFields = ['voters', 'learners', 'votersOutgoing', 'learnersNext'] as const;

class BatchChecker {
  bytes = 0;
  /** The group whose part is being checked (named in messages), or null. */
  part: GroupId | null = null;
  constructor(private readonly prefix: string) {}

  private message(message: string): string {
    return this.part === null
      ? `${this.prefix}${message}`
      : `${this.prefix}group ${this.part}: ${message}`;
  }
  fail(message: string): never {
    throw new StorageError('invalid_argument', this.message(message));
  }
  tooLarge(message: string): never {
    throw new StorageError('too_large', this.message(message));
  }
  index(value: unknown, what: string, at = -1): number {
    if (!isIndex(value)) {
      this.fail(`${label(what, at)} must be a safe non-negative integer, got ${value}`);
    }
    return value;
  }
  bytesValue(value: unknown, maxBytes: number, what: string, at = -1): Uint8Array {
    if (!(value instanceof Uint8Array)) this.fail(`${label(what, at)} must be a Uint8Array`);
    if (value.length > maxBytes) {
      this.tooLarge(`${label(what, at)} is ${value.length} bytes, the limit is ${maxBytes}`);
    }
    this.count(value.length);
    return value;
  }
  text(value: unknown, maxBytes: number, what: string, at = -1): string {
    const length = textBytes(value);
    if (length < 0) this.fail(`${label(what, at)} must be a non-empty well-formed string`);
    if (length > maxBytes) {
      this.tooLarge(`${label(what, at)} is ${length} UTF-8 bytes, the limit is ${maxBytes}`);
    }
    this.count(length);
    return value as string;
  }
  count(bytes: number): void {
    this.bytes += bytes;
    if (this.bytes > limits.maxBatchBytes) {
      this.tooLarge(`the batch carries more than ${limits.maxBatchBytes} bytes`);
    }
  }
  confState(conf: ConfState, what: string): void {
    if (typeof conf !== 'object' || conf === null) this.fail(`${what} must be a ConfState`);
    for (const field of confStateFields) {
      const list = conf[field];
      if (!Array.isArray(list)) this.fail(`${what}.${field} must be an array`);
      if (list.length > limits.maxConfMembers) {
        this.tooLarge(
          `${what}.${field} lists ${list.length} members, the limit is ${limits.maxConfMembers}`,
        );
      }
      for (const id of list) {
        const length = textBytes(id);
        // The message (and its name) only for a failure: a batch checks a ConfState per part.
        if (length < 0 || length > limits.maxNodeIdBytes) {
          this.text(id, limits.maxNodeIdBytes, `${what}.${field} member`);
        }
        this.count(length);
      }
    }
    if (typeof conf.autoLeave !== 'boolean') this.fail(`${what}.autoLeave must be a boolean`);
  }
  snapshot(snapshot: Snapshot, what: string): void {
    if (typeof snapshot !== 'object' || snapshot === null) this.fail(`${what} must be a Snapshot`);
    this.index(snapshot.metadata?.index, `${what}.metadata.index`);
    this.index(snapshot.metadata.term, `${what}.metadata.term`);
    this.confState(snapshot.metadata.confState, `${what}.metadata.confState`);
    this.bytesValue(snapshot.data, limits.maxSnapshotDataBytes, `${what}.data`);
  }
}

// ---- The store ----------------------------------------------------------------------------

class EngineStorage implements NodeStorage {
  readonly name: string;
  private tail: Promise<unknown> = Promise.resolve();
  /** Set once the store stops: every later call fails with it. */
  private stopped: StorageError | null = null;
  private closed: Promise<void> | null = null;
  private readonly mirrors: Map<GroupId, GroupMirror>;
  /** What open() read, served to the first load() unless a write came first: a restart reads once. */
  private opened: NodeState | null;

  constructor(
    private readonly engine: Engine,
    private node: NodeRecord,
    groups: Map<GroupId, { state: GroupState; mirror: GroupMirror }>,
    /** The batch marker's seq: how many engine writes the store has made (readBatchMarker). */
    private batchSeq: number,
    private readonly random: (bytes: Uint8Array) => void,
  ) {
    this.name = engine.name;
    this.mirrors = new Map([...groups].map(([id, g]) => [id, g.mirror]));
    this.opened = { groups: new Map([...groups].map(([id, g]) => [id, g.state])) };
  }

  /**
   * Runs `task` after every call made before it. Contract errors leave the store usable; an
   * engine failure (anything not a StorageError, or 'io'/'closed') stops it for good.
   */
  private run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(async () => {
      if (this.stopped !== null) throw this.stopped;
      try {
        return await task();
      } catch (error) {
        if (error instanceof DecodeError) throw asStorageError(this.name, error);
        if (error instanceof StorageError && error.code !== 'io' && error.code !== 'closed') {
          throw error;
        }
        this.stopped = asStorageError(this.name, error);
        throw this.stopped;
      }
    });
    // Not result.catch(): that would keep the call's value (an open scan) alive until the next call.
    this.tail = result.then(
      () => {},
      () => {},
    );
    return result;
  }

  /**
   * Writes `ops` and moves the batch marker on in the same write (readBatchMarker); any
   * engine failure is an 'io' (or 'closed') stop.
   */
  private async engineWrite(ops: EngineOp[]): Promise<void> {
    ops.push(
      { type: 'del', key: batchKey(this.batchSeq) },
      sealedPut(batchKey(this.batchSeq + 1), new Uint8Array(0)),
    );
    try {
      await this.engine.write(ops);
      this.batchSeq++;
    } catch (error) {
      if (error instanceof StorageError && error.code === 'closed') throw error;
      throw new StorageError(
        'io',
        `${this.name}: write failed, the store stops: ${String(error)}`,
        {
          cause: error,
        },
      );
    }
  }

  /** Clears the data of unreferenced spaces, then drops them from the node record. */
  async collectGarbage(spaces: readonly number[]): Promise<void> {
    if (spaces.length === 0) return;
    for (const space of spaces) {
      for (const table of [Table.Segment, Table.Snapshot, Table.StateMachine]) {
        await this.engine.clearRange(...spaceRange(table, space));
      }
    }
    const node = {
      nextSpace: this.node.nextSpace,
      garbage: this.node.garbage.filter((s) => !spaces.includes(s)),
    };
    await this.engineWrite([nodePut(node)]);
    this.node = node;
  }

  load(): Promise<NodeState> {
    return this.run(async () => {
      const opened = this.opened;
      this.opened = null;
      if (opened !== null) return opened;
      const { groups } = await readGroups(this.engine);
      return { groups: new Map([...groups].map(([id, g]) => [id, g.state])) };
    });
  }

  write(batch: WriteBatch): Promise<void> {
    return this.run(async () => {
      this.opened = null;
      let plan: ReturnType<EngineStorage['plan']>;
      try {
        plan = this.plan(batch);
      } catch (error) {
        // A failed plan has undone its edits: whatever it trips over is the caller's input.
        if (error instanceof StorageError) throw error;
        throw new StorageError(
          'invalid_argument',
          `${this.name}: write: malformed batch: ${String(error)}`,
        );
      }
      await this.engineWrite(plan.ops);
      for (const [id, mirror] of plan.mirrors) {
        if (mirror === null) this.mirrors.delete(id);
        else {
          this.mirrors.set(id, mirror);
          mirror.log.settle();
        }
      }
      for (const restore of plan.restores) restore.committed = true;
      this.node = plan.node;
      // Cleared as a call of its own: the batch is durable whatever happens to the clearing.
      if (plan.freed.length > 0) this.run(() => this.collectGarbage(plan.freed)).catch(() => {});
    });
  }

  /**
   * Validates a whole batch against the current state and turns it into engine ops. The
   * groups' segment logs are edited in place as it goes; if it throws, they are put back.
   */
  private plan(batch: WriteBatch) {
    const undo: Undo[] = [];
    try {
      return this.planGroups(batch, undo);
    } catch (error) {
      for (let i = undo.length - 1; i >= 0; i--) undo[i]!();
      throw error;
    }
  }

  private planGroups(batch: WriteBatch, undo: Undo[]) {
    const check: BatchChecker = new BatchChecker(`${this.name}: write: `);
    if (typeof batch !== 'object' || batch === null || !Array.isArray(batch.groups)) {
      check.fail('the batch must be {groups: GroupWrite[]}');
    }
    if (batch.groups.length > limits.maxGroupsPerBatch) {
      check.tooLarge(
        `the batch writes ${batch.groups.length} groups, the limit is ${limits.maxGroupsPerBatch}`,
      );
    }
    const ops: EngineOp[] = [];
    const mirrors = new Map<GroupId, GroupMirror | null>();
    const restores: Restore[] = [];
    const freed: number[] = [];
    let nextSpace = this.node.nextSpace;
    let garbage = [...this.node.garbage];
    // One function for the whole batch, not one per part: the segments a log edit drops
    // belong to the log of the part being planned.
    let droppingLogSpace = 0;
    const dropSegment = (segment: Segment): void => {
      ops.push({ type: 'del', key: segmentKey(droppingLogSpace, segment.first) });
    };

    for (const gw of batch.groups) {
      check.part = null;
      const id = gw?.group;
      if (!Number.isSafeInteger(id) || id < 0 || id >= 2 ** 32) {
        check.fail(`group id must be an integer in [0, 2^32), got ${id}`);
      }
      if (mirrors.has(id)) check.fail(`group ${id} appears twice in the batch`);
      for (const field in gw) {
        if (groupWriteFields.has(field)) continue;
        const unknown = Object.keys(gw).filter((name) => !groupWriteFields.has(name));
        if (unknown.length > 0) check.fail(`group ${id}: unknown field(s) ${unknown.join(', ')}`);
      }
      const g = check;
      g.part = id;
      const m = this.mirrors.get(id);

      if (gw.remove !== undefined) {
        if (gw.remove !== true) g.fail('remove must be true or absent');
        const others = Object.entries(gw)
          .filter(([k, v]) => k !== 'group' && k !== 'remove' && v !== undefined)
          .map(([k]) => k);
        if (others.length > 0)
          g.fail(`remove excludes every other field (got ${others.join(', ')})`);
        if (m === undefined)
          throw new StorageError('unknown_group', `${this.name}: write: group ${id} is not hosted`);
        ops.push({ type: 'del', key: groupKey(id) });
        garbage.push(m.record.logSpace, m.record.stateSpace);
        freed.push(m.record.logSpace, m.record.stateSpace);
        mirrors.set(id, null);
        continue;
      }

      // The group record as this part leaves it: a copy, edited in place by each field (the
      // stored one stays as it is until the batch is durable). Written only if a field
      // changed it: a part of entries alone (or restating the stored hard state) leaves it
      // as stored, and its encoding and seal were a third of a small part's cost.
      let record: DraftRecord;
      let log: SegmentLog;
      let recordChanged = false;
      if (gw.create !== undefined) {
        if (gw.create !== true) g.fail('create must be true or absent');
        if (m !== undefined)
          throw new StorageError(
            'group_exists',
            `${this.name}: write: group ${id} is already hosted`,
          );
        record = {
          group: id,
          logSpace: nextSpace++,
          stateSpace: nextSpace++,
          hardState: { term: 0, vote: null, commit: 0 },
          compacted: { index: 0, term: 0 },
          snapshotIndex: null,
          appliedState: { index: 0, term: 0, confState: emptyConfState },
        };
        log = new SegmentLog();
        recordChanged = true;
      } else {
        if (m === undefined) {
          throw new StorageError(
            'unknown_group',
            `${this.name}: write: group ${id} is not hosted (create it first)`,
          );
        }
        record = draftOf(m.record);
        log = m.log;
      }
      const mirror: GroupMirror = { record, log };
      const logSpace = record.logSpace;
      droppingLogSpace = logSpace;

      if (gw.snapshot !== undefined) {
        g.snapshot(gw.snapshot, 'snapshot');
        const meta = gw.snapshot.metadata;
        if (record.snapshotIndex !== null && meta.index < record.snapshotIndex) {
          throw new StorageError(
            'snapshot_out_of_date',
            `${this.name}: write: group ${id}: snapshot at index ${meta.index} is older than the stored one at ${record.snapshotIndex}`,
          );
        }
        undo.push(log.clear(dropSegment));
        const key = snapshotKey(logSpace);
        ops.push({ type: 'put', key, value: encodeSnapshot(gw.snapshot, key) });
        record.compacted = { index: meta.index, term: meta.term };
        record.snapshotIndex = meta.index;
        recordChanged = true;
      }

      let restored: AppliedState | null = null;
      if (gw.restore !== undefined) {
        const restore = gw.restore;
        if (!(restore instanceof Restore) || restore.storage !== this) {
          g.fail('restore must come from beginRestore on this store');
        }
        if (restore.group !== id) g.fail(`restore was begun for group ${restore.group}`);
        if (!restore.complete || restore.appliedState === null)
          g.fail('restore has not received its final chunk');
        if (restore.committed || restore.aborted || restores.includes(restore))
          g.fail('restore was already used or aborted');
        garbage = garbage.filter((s) => s !== restore.space);
        garbage.push(record.stateSpace);
        freed.push(record.stateSpace);
        record.stateSpace = restore.space;
        record.appliedState = restore.appliedState;
        restores.push(restore);
        restored = restore.appliedState;
        recordChanged = true;
      }

      if (gw.entries !== undefined) {
        this.planEntries(g, gw.entries, mirror, ops, undo, dropSegment);
      }

      if (gw.savedSnapshot !== undefined) {
        g.snapshot(gw.savedSnapshot, 'savedSnapshot');
        const meta = gw.savedSnapshot.metadata;
        const last = lastIndexOf(mirror);
        if (meta.index < record.compacted.index || meta.index > last) {
          g.fail(
            `savedSnapshot index ${meta.index} is outside the log [${record.compacted.index}, ${last}]`,
          );
        }
        const term = termAt(mirror, meta.index);
        if (term !== meta.term)
          g.fail(
            `savedSnapshot term ${meta.term} differs from the log's term ${term} at ${meta.index}`,
          );
        if (record.snapshotIndex !== null && meta.index <= record.snapshotIndex) {
          throw new StorageError(
            'snapshot_out_of_date',
            `${this.name}: write: group ${id}: savedSnapshot at index ${meta.index} is not newer than the stored one at ${record.snapshotIndex}`,
          );
        }
        const key = snapshotKey(logSpace);
        ops.push({ type: 'put', key, value: encodeSnapshot(gw.savedSnapshot, key) });
        record.snapshotIndex = meta.index;
        recordChanged = true;
      }

      if (gw.compactTo !== undefined) {
        const to = g.index(gw.compactTo, 'compactTo');
        const last = lastIndexOf(mirror);
        if (to > last) g.fail(`compactTo ${to} is beyond the last index ${last}`);
        // Compacting past the latest snapshot would lose entries a lagging follower needs and
        // no snapshot covers (Storage.firstIndex is snapshot index + 1 in raft's contract).
        if (to > (record.snapshotIndex ?? 0)) {
          g.fail(
            `compactTo ${to} is beyond the latest snapshot (${record.snapshotIndex ?? 'none'}): save one first`,
          );
        }
        if (to > record.compacted.index) {
          const term = termAt(mirror, to)!;
          undo.push(log.dropThrough(to, dropSegment));
          record.compacted = { index: to, term };
          recordChanged = true;
        }
      }

      if (gw.hardState !== undefined) {
        const hs: HardState = gw.hardState;
        g.index(hs?.term, 'hardState.term');
        g.index(hs.commit, 'hardState.commit');
        if (hs.vote !== null) g.text(hs.vote, limits.maxNodeIdBytes, 'hardState.vote');
        if (hs.term < record.hardState.term)
          g.fail(`hardState.term ${hs.term} < stored term ${record.hardState.term}`);
        if (hs.commit < record.hardState.commit) {
          g.fail(`hardState.commit ${hs.commit} < stored commit ${record.hardState.commit}`);
        }
        const stored = record.hardState;
        if (hs.term !== stored.term || hs.vote !== stored.vote || hs.commit !== stored.commit) {
          record.hardState = { term: hs.term, vote: hs.vote, commit: hs.commit };
          recordChanged = true;
        }
      }

      if (gw.appliedState !== undefined) {
        const applied: AppliedState = gw.appliedState;
        g.index(applied?.index, 'appliedState.index');
        g.index(applied.term, 'appliedState.term');
        g.confState(applied.confState, 'appliedState.confState');
        if (applied.index < record.appliedState.index) {
          g.fail(`appliedState.index ${applied.index} < stored ${record.appliedState.index}`);
        }
        const stored = record.appliedState;
        if (
          applied.index !== stored.index ||
          applied.term !== stored.term ||
          (applied.confState !== stored.confState &&
            !sameConfState(applied.confState, stored.confState))
        ) {
          record.appliedState = applied;
          recordChanged = true;
        }
      }

      const installs = gw.snapshot !== undefined || gw.restore !== undefined;
      this.checkRecoverable(g, mirror, installs, restored, gw.snapshot ?? null);

      const kv = gw.kv;
      if (kv !== undefined) {
        if (!Array.isArray(kv)) g.fail('kv must be an array');
        for (let i = 0; i < kv.length; i++) {
          const op = kv[i]!;
          const key = kvKey(record.stateSpace, g.text(op?.key, limits.maxKeyBytes, 'kv[].key', i));
          if (op.value === null) ops.push({ type: 'del', key });
          else {
            const value = g.bytesValue(op.value, limits.maxValueBytes, 'kv[].value', i);
            ops.push(sealedPut(key, value));
          }
        }
      }

      const sessions = gw.sessions;
      if (sessions !== undefined) {
        if (!Array.isArray(sessions)) g.fail('sessions must be an array');
        for (let i = 0; i < sessions.length; i++) {
          const op = sessions[i]!;
          const clientId = g.text(op?.clientId, limits.maxClientIdBytes, 'sessions[].clientId', i);
          const key = sessionKey(record.stateSpace, clientId);
          if (op.record === null) ops.push({ type: 'del', key });
          else {
            const value = g.bytesValue(
              op.record,
              limits.maxSessionRecordBytes,
              'sessions[].record',
              i,
            );
            ops.push(sealedPut(key, value));
          }
        }
      }

      if (recordChanged) {
        const key = groupKey(id);
        ops.push({ type: 'put', key, value: encodeGroup(record, key) });
      }
      mirrors.set(id, mirror);
    }
    check.part = null;

    const node: NodeRecord = { nextSpace, garbage };
    if (nextSpace >= 2 ** 32) {
      throw new StorageError(
        'too_large',
        `${this.name}: write: the node has used up its 2^32 space ids`,
      );
    }
    if (nextSpace !== this.node.nextSpace || !sameNumbers(garbage, this.node.garbage)) {
      ops.push(nodePut(node));
    }
    return { ops, mirrors, restores, freed, node };
  }

  /**
   * What a restarted node rebuilds from a group must make sense (Raft thesis §5.3, §5.4):
   * commit within the log; after a part that installs a snapshot or a restore
   * (`installs`), the state machine at or after the compaction point (the entries between
   * would be gone, applied by no one); a restored state machine (`restored`) on the log, so
   * that it pairs with the snapshot committed with it (`snapshot`; at its index, with its
   * configuration), not with entries the node lacks; and the applied state, where the log
   * holds its index, on the log's term.
   */
  private checkRecoverable(
    g: BatchChecker,
    m: GroupMirror,
    installs: boolean,
    restored: AppliedState | null,
    snapshot: Snapshot | null,
  ): void {
    const { compacted, hardState, appliedState: applied } = m.record;
    const last = lastIndexOf(m);
    if (hardState.commit > last) {
      g.fail(`hardState.commit ${hardState.commit} is beyond the last index ${last}`);
    }
    if (installs && applied.index < compacted.index) {
      g.fail(
        `the state machine (applied ${applied.index}) would lag the log compacted at ${compacted.index}: entries ${applied.index + 1}..${compacted.index} would be lost`,
      );
    }
    if (restored !== null && restored.index > last) {
      g.fail(
        `restore is at index ${restored.index}, beyond the log (last index ${last}, snapshot ${m.record.snapshotIndex ?? 'none'})`,
      );
    }
    if (
      restored !== null &&
      snapshot !== null &&
      restored.index === snapshot.metadata.index &&
      !sameConfState(restored.confState, snapshot.metadata.confState)
    ) {
      g.fail(`restore's configuration differs from the snapshot's at index ${restored.index}`);
    }
    const term = applied.index <= last ? termAt(m, applied.index) : undefined;
    if (term !== undefined && term !== applied.term) {
      g.fail(
        `${restored !== null ? 'restore' : 'appliedState'} is at index ${applied.index} term ${applied.term}, the log has term ${term} there`,
      );
    }
  }

  private planEntries(
    g: BatchChecker,
    entries: readonly Entry[],
    m: GroupMirror,
    ops: EngineOp[],
    undo: Undo[],
    dropSegment: (segment: Segment) => void,
  ): void {
    if (!Array.isArray(entries) || entries.length === 0) {
      g.fail('entries must be a non-empty array');
    }
    const from = g.index(entries[0]?.index, 'entries[0].index');
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e?.index !== from + i) g.fail(`entries[${i}].index is ${e?.index}, expected ${from + i}`);
      g.index(e.term, 'entries[].term', i);
      if (e.type !== 0 && e.type !== 1) g.fail(`entries[${i}].type ${e.type} is not an EntryType`);
      g.bytesValue(e.data, limits.maxEntryDataBytes, 'entries[].data', i);
    }
    // Entries the log has compacted away are ignored, as raft's MemoryStorage.append does.
    const compacted = m.record.compacted.index;
    const appended = from > compacted ? entries : entries.slice(compacted + 1 - from);
    if (appended.length === 0) return;
    const start = appended[0]!.index;
    const end = start + appended.length - 1;
    const last = lastIndexOf(m);
    if (start > last + 1)
      g.fail(`entries[0].index ${from} leaves a gap after the last index ${last}`);
    // Committed entries are never replaced (Raft thesis §3.6, Leader Completeness): entries
    // may only restate them, with the same terms, and must reach the last committed one.
    const committed = Math.min(m.record.hardState.commit, last);
    if (start <= committed) {
      if (end < committed) {
        g.fail(`entries ${start}..${end} would truncate committed entries up to ${committed}`);
      }
      for (let i = start; i <= committed; i++) {
        const term = termAt(m, i);
        if (appended[i - start]!.term !== term) {
          g.fail(
            `entry ${i} has term ${appended[i - start]!.term}, the committed one term ${term}`,
          );
        }
      }
    }
    let previousTerm = termAt(m, start - 1)!;
    for (const e of appended) {
      if (e.term < previousTerm) {
        g.fail(`entry ${e.index} has term ${e.term} < the previous entry's term ${previousTerm}`);
      }
      previousTerm = e.term;
    }

    undo.push(m.log.truncateFrom(start, dropSegment));
    for (let at = 0; at < appended.length; ) {
      let runEnd = at + 1;
      let bytes = segmentBytes(appended, at, runEnd);
      while (
        runEnd < appended.length &&
        bytes + segmentEntryBytes(appended[runEnd]!) <= maxSegmentBytes
      ) {
        bytes += segmentEntryBytes(appended[runEnd]!);
        runEnd++;
      }
      // One segment holding all of them is the common case: no copy of the array then.
      const run = at === 0 && runEnd === appended.length ? appended : appended.slice(at, runEnd);
      const key = segmentKey(m.record.logSpace, run[0]!.index);
      ops.push({ type: 'put', key, value: encodeSegment(run, key) });
      undo.push(
        m.log.push({ first: run[0]!.index, count: run.length, terms: run.map((e) => e.term) }),
      );
      at = runEnd;
    }
  }

  get(group: GroupId, key: string): Promise<Uint8Array | null> {
    const check: BatchChecker = new BatchChecker(`${this.name}: get: `);
    return this.run(async () => {
      check.text(key, limits.maxKeyBytes, 'key');
      const m = this.hosted(group, 'get');
      const value = await this.engine.get(kvKey(m.record.stateSpace, key));
      return value ?? null;
    });
  }

  private hosted(group: GroupId, call: string): GroupMirror {
    const m = this.mirrors.get(group);
    if (m === undefined)
      throw new StorageError(
        'unknown_group',
        `${this.name}: ${call}: group ${group} is not hosted`,
      );
    return m;
  }

  snapshotChunks(group: GroupId, options: SnapshotChunkOptions = {}): AsyncIterable<Uint8Array> {
    const targetBytes = options.targetChunkBytes ?? defaultTargetChunkBytes;
    // The view is fixed now, in call order with writes: the scan starts when this task runs.
    const view = this.run(async () => {
      if (!isIndex(targetBytes) || targetBytes === 0 || targetBytes > limits.maxTargetChunkBytes) {
        throw new StorageError(
          'invalid_argument',
          `${this.name}: snapshotChunks: targetChunkBytes must be in [1, ${limits.maxTargetChunkBytes}], got ${targetBytes}`,
        );
      }
      const m = this.hosted(group, 'snapshotChunks');
      const [lo, hi] = spaceRange(Table.StateMachine, m.record.stateSpace);
      return { applied: m.record.appliedState, pages: this.engine.scan(lo, hi) };
    });
    view.catch(() => {});
    const streamId = new Uint8Array(streamIdBytes);
    this.random(streamId);
    const name = this.name;
    return (async function* chunks() {
      const { applied, pages } = await view;
      let seq = 0;
      let records: ChunkRecord[] = [];
      let bytes = 0;
      const chunk = (final: boolean): Uint8Array => {
        const encoded = encodeChunk({
          streamId,
          seq,
          final,
          appliedState: seq === 0 ? applied : null,
          records,
        } satisfies Chunk);
        seq++;
        records = [];
        bytes = 0;
        return encoded;
      };
      for await (const page of pages) {
        for (const [key, value] of page) {
          if (bytes >= targetBytes) yield chunk(false);
          const { part, name: recordName } = readStateMachineKey(
            key,
            `${name}: state machine record`,
          );
          const record = { part, name: recordName, value };
          records.push(record);
          bytes += chunkRecordBytes(record);
        }
      }
      yield chunk(true);
    })();
  }

  beginRestore(group: GroupId): Promise<SnapshotRestore> {
    return this.run(async () => {
      if (!Number.isSafeInteger(group) || group < 0 || group >= 2 ** 32) {
        throw new StorageError(
          'invalid_argument',
          `${this.name}: beginRestore: group id ${group} is invalid`,
        );
      }
      // The staging space is garbage until a batch commits it: a crash discards it.
      const node = {
        nextSpace: this.node.nextSpace + 1,
        garbage: [...this.node.garbage, this.node.nextSpace],
      };
      await this.engineWrite([nodePut(node)]);
      this.node = node;
      return new Restore(this, group, this.node.nextSpace - 1);
    });
  }

  /** Stages one decoded chunk (called by Restore through the call queue). */
  stage(restore: Restore, bytes: Uint8Array): Promise<void> {
    return this.run(async () => {
      const what = `${this.name}: restore of group ${restore.group}: chunk ${restore.nextSeq}`;
      if (!(bytes instanceof Uint8Array))
        throw new StorageError('invalid_argument', `${what} must be a Uint8Array`);
      if (bytes.length > limits.maxChunkBytes) {
        throw new StorageError(
          'too_large',
          `${what} is ${bytes.length} bytes, the limit is ${limits.maxChunkBytes}`,
        );
      }
      const chunk = decodeChunk(bytes, what);
      if (restore.committed || restore.aborted || restore.complete) {
        throw new StorageError('invalid_argument', `${what}: the restore is finished or aborted`);
      }
      if (
        chunk.seq !== restore.nextSeq ||
        (restore.streamId !== null && !equalBytes(chunk.streamId, restore.streamId))
      ) {
        throw new StorageError(
          'invalid_argument',
          `${what}: got chunk ${chunk.seq} of stream ${hex(chunk.streamId)}, expected chunk ${restore.nextSeq} of stream ${restore.streamId === null ? 'any' : hex(restore.streamId)}`,
        );
      }
      const check: BatchChecker = new BatchChecker(`${what}: `);
      const ops: EngineOp[] = [];
      for (const r of chunk.records) {
        if (r.part === 'kv') {
          check.text(r.name, limits.maxKeyBytes, 'key');
          check.bytesValue(r.value, limits.maxValueBytes, `value of ${JSON.stringify(r.name)}`);
          ops.push(sealedPut(kvKey(restore.space, r.name), r.value));
        } else {
          check.text(r.name, limits.maxClientIdBytes, 'client id');
          check.bytesValue(
            r.value,
            limits.maxSessionRecordBytes,
            `session of ${JSON.stringify(r.name)}`,
          );
          ops.push(sealedPut(sessionKey(restore.space, r.name), r.value));
        }
      }
      if (chunk.appliedState !== null)
        check.confState(chunk.appliedState.confState, 'appliedState.confState');
      if (ops.length > 0) await this.engineWrite(ops);
      if (chunk.seq === 0) {
        restore.streamId = chunk.streamId;
        restore.appliedState = chunk.appliedState;
      }
      restore.nextSeq++;
      restore.complete = chunk.final;
    });
  }

  discard(restore: Restore): Promise<void> {
    return this.run(async () => {
      if (restore.committed || restore.aborted) return;
      restore.aborted = true;
      await this.collectGarbage([restore.space]);
    });
  }

  close(): Promise<void> {
    if (this.closed === null) {
      this.closed = this.tail.then(async () => {
        const crashed = this.stopped?.code === 'closed';
        this.stopped = new StorageError('closed', `${this.name}: the store is closed`);
        if (!crashed) await this.engine.close();
      });
      this.tail = this.closed.catch(() => {});
    }
    return this.closed;
  }
}

class Restore implements SnapshotRestore {
  nextSeq = 0;
  streamId: Uint8Array | null = null;
  appliedState: AppliedState | null = null;
  complete = false;
  committed = false;
  aborted = false;

  constructor(
    readonly storage: EngineStorage,
    readonly group: GroupId,
    readonly space: number,
  ) {}

  add(chunk: Uint8Array): Promise<void> {
    return this.storage.stage(this, chunk);
  }

  abort(): Promise<void> {
    return this.storage.discard(this);
  }
}

function sameConfState(a: ConfState, b: ConfState): boolean {
  const same = (x: readonly string[], y: readonly string[]) =>
    x.length === y.length && x.every((id, i) => id === y[i]);
  return (
    same(a.voters, b.voters) &&
    same(a.learners, b.learners) &&
    same(a.votersOutgoing, b.votersOutgoing) &&
    same(a.learnersNext, b.learnersNext) &&
    a.autoLeave === b.autoLeave
  );
}

function sameNumbers(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
