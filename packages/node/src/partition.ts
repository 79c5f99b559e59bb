/**
 * The state machine of one partition: applies committed entries to the KV data and the
 * session table, and says what to write and whom to answer.
 *
 * Contract (etcd-io/raft's "apply committed entries, in order, exactly once"):
 * - `apply(entries)` takes the committed entries in index order, the first right after
 *   `appliedIndex`; calls never overlap (the loop awaits each). It changes memory only;
 *   the returned KV and session writes go into the next storage batch, together with
 *   the applied state at `appliedIndex`. Until that batch is durable, `read` answers from
 *   an overlay of the applied writes; `persisted(index)` drops what a durable batch holds.
 * - Deterministic: the same entries applied to machines built from the same state give
 *   the same writes and results on every replica, whatever each replica's clock or
 *   restarts. The only time is the log's (`proposedAtMs`, its max so far).
 * - If `readStored` rejects during `apply`, the machine is unusable (every later call
 *   throws): the loop rebuilds it from durable state.
 *
 * Sessions (Raft thesis §6.3): per client, the results of its applied commands at or
 * above its lowest unanswered seq, so a retried command applies once and gets its first
 * result, in any order of arrival. A command below the session's lowestUnanswered does not
 * apply (its result is gone): `result_dropped`, which the node reports as OUTCOME_UNKNOWN.
 */
import { type Entry, EntryType } from '@meshkv/raft';
import type { KvWrite, SessionWrite } from '@meshkv/storage';
import {
  type Command,
  type CommandResult,
  decodeCommand,
  decodeSessionRecord,
  encodeSessionRecord,
  maxResultsPerSessionRecord,
} from './command.ts';
import { ValueCache } from './value-cache.ts';

export interface PartitionOptions {
  /** A session untouched this long, by the log's clock, is dropped. Default 10 min. */
  readonly sessionTtlMs?: number;
  /** Clients per partition; beyond it the least recently touched is dropped. Default 4096. */
  readonly maxSessions?: number;
  /**
   * Results kept per client; beyond it the lowest seq's result is dropped and the
   * session's lowestUnanswered rises past it. Consequence: with more requests than this
   * outstanding, a client's oldest ones may come back `result_dropped` (not applied, or a
   * retry of one that applied): never applied twice. Default 1024, at most
   * maxResultsPerSessionRecord (what a session record can hold).
   */
  readonly maxResultsPerSession?: number;
  /** Bytes of hot values kept in memory (value-cache.ts); 0: none. Default 256 KiB. */
  readonly valueCacheBytes?: number;
}

export const partitionDefaults = {
  sessionTtlMs: 10 * 60 * 1000,
  maxSessions: 4096,
  maxResultsPerSession: 1024,
  valueCacheBytes: 256 * 1024,
} as const;

/** A command that applied (or was recognised as a retry or a stale one). */
export interface AppliedClientCommand {
  readonly index: number;
  readonly clientId: string;
  readonly seq: number;
  /** The command's first result; 'result_dropped' if it is below the session's floor. */
  readonly result: CommandResult | 'result_dropped';
}

/** A Normal entry whose data is not a command: a no-op on every replica. */
export interface AppliedInvalidCommand {
  readonly index: number;
  readonly clientId: null;
  readonly seq: null;
  readonly result: 'command_invalid';
  readonly reason: string;
}

export type AppliedCommand = AppliedClientCommand | AppliedInvalidCommand;

export interface ApplyOutput {
  /** The index of the last entry applied: the next batch's applied state. */
  readonly appliedIndex: number;
  /** KV changes in apply order. */
  readonly kv: KvWrite[];
  /** Session changes, one per client touched or dropped (null) by this call. */
  readonly sessions: SessionWrite[];
  /** One per command entry, in index order. */
  readonly results: AppliedCommand[];
}

export interface PartitionInit {
  /** GroupState.appliedState.index. */
  readonly appliedIndex: number;
  /** GroupState.sessions. */
  readonly sessions: ReadonlyMap<string, Uint8Array>;
  /** The durable value of a key (the node passes `storage.get(group, key)`). */
  readonly readStored: (key: string) => Promise<Uint8Array | null>;
  readonly options?: PartitionOptions;
}

/** A session as held in memory (the encoder takes it as a SessionRecord). */
interface Session {
  lastTouchedMs: number;
  lastTouchedIndex: number;
  lowestUnanswered: number;
  readonly results: Map<number, CommandResult>;
}

interface OverlayEntry {
  readonly value: Uint8Array | null;
  /** The index of the entry that wrote it. */
  readonly index: number;
}

function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`partition: ${message}`);
}

function checkedOption(value: number | undefined, fallback: number, max: number, name: string) {
  const chosen = value ?? fallback;
  if (!Number.isSafeInteger(chosen) || chosen < 1 || chosen > max) {
    throw new RangeError(`partition: ${name} must be an integer in [1, ${max}], got ${chosen}`);
  }
  return chosen;
}

export class PartitionMachine {
  private readonly sessionTtlMs: number;
  private readonly maxSessions: number;
  private readonly maxResultsPerSession: number;
  private readonly readStored: (key: string) => Promise<Uint8Array | null>;
  /** Iteration order is least recently touched first (ascending lastTouchedIndex). */
  private readonly sessions = new Map<string, Session>();
  /** Applied writes not yet durable, newest per key. */
  private readonly overlay = new Map<string, OverlayEntry>();
  /** Hot values, coherent with applies (read after the overlay, before storage). */
  private readonly cache: ValueCache;
  /** Overlay writes in apply order (parallel arrays from `overlayHead`), for `persisted`. */
  private overlayKeys: string[] = [];
  private overlayIndexes: number[] = [];
  private overlayHead = 0;
  /** Clients touched or dropped by the apply in progress (reused). */
  private readonly dirty = new Set<string>();
  private appliedIndexValue: number;
  private persistedIndexValue: number;
  private clockMsValue = 0;
  /**
   * At most the oldest session's lastTouchedMs (0 at first): while the clock is below it
   * plus the TTL, no session can have expired. Touches only raise the oldest one's, and
   * sessions made later are touched at the clock, which never goes back.
   */
  private oldestTouchedMsBound = 0;
  private applying = false;
  private failed = false;

  constructor(init: PartitionInit) {
    const options = init.options ?? {};
    this.sessionTtlMs = checkedOption(
      options.sessionTtlMs,
      partitionDefaults.sessionTtlMs,
      Number.MAX_SAFE_INTEGER,
      'sessionTtlMs',
    );
    this.maxSessions = checkedOption(
      options.maxSessions,
      partitionDefaults.maxSessions,
      1 << 20,
      'maxSessions',
    );
    this.maxResultsPerSession = checkedOption(
      options.maxResultsPerSession,
      partitionDefaults.maxResultsPerSession,
      maxResultsPerSessionRecord,
      'maxResultsPerSession',
    );
    assert(
      Number.isSafeInteger(init.appliedIndex) && init.appliedIndex >= 0,
      `appliedIndex ${init.appliedIndex}`,
    );
    this.appliedIndexValue = init.appliedIndex;
    this.persistedIndexValue = init.appliedIndex;
    this.readStored = init.readStored;
    this.cache = new ValueCache(options.valueCacheBytes ?? partitionDefaults.valueCacheBytes);

    const loaded: [string, Session][] = [];
    for (const [clientId, bytes] of init.sessions) {
      const record = decodeSessionRecord(bytes);
      if ('invalid' in record) {
        throw new Error(
          `partition: the stored session of ${clientId} is corrupt: ${record.invalid}`,
        );
      }
      assert(
        record.lastTouchedIndex <= init.appliedIndex,
        `session ${clientId} touched at ${record.lastTouchedIndex}, after the applied index`,
      );
      loaded.push([
        clientId,
        {
          lastTouchedMs: record.lastTouchedMs,
          lastTouchedIndex: record.lastTouchedIndex,
          lowestUnanswered: record.lowestUnanswered,
          results: new Map(record.results),
        },
      ]);
    }
    // Rebuild the LRU order from the records alone, so every replica (restarted or not, or
    // restored from a snapshot) evicts the same client.
    loaded.sort((a, b) => a[1].lastTouchedIndex - b[1].lastTouchedIndex);
    for (const [clientId, session] of loaded) {
      assert(session.lastTouchedMs >= this.clockMsValue, 'lastTouchedMs follows the index order');
      // Every command that moves the clock touches a session with the new clock, and the
      // session touched last is never dropped: the clock is the newest lastTouchedMs.
      this.clockMsValue = session.lastTouchedMs;
      this.sessions.set(clientId, session);
    }
  }

  /** The index of the last entry applied. */
  get appliedIndex(): number {
    return this.appliedIndexValue;
  }

  /** The partition's clock: the greatest proposedAtMs applied so far. */
  get clockMs(): number {
    return this.clockMsValue;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Applied writes not yet reported durable by `persisted`. */
  get overlaySize(): number {
    return this.overlay.size;
  }

  /**
   * The value of `key` as of every entry applied so far (durable or not yet): the overlay,
   * else storage (which answers after every write issued before this call).
   */
  read(key: string): Promise<Uint8Array | null> {
    this.checkUsable();
    const entry = this.overlay.get(key);
    if (entry !== undefined) return Promise.resolve(entry.value);
    const cached = this.cache.get(key);
    return cached === undefined ? this.readThrough(key) : Promise.resolve(cached);
  }

  /** The stored value of `key`, which then fills the cache (unless a write applied since). */
  private readThrough(key: string): Promise<Uint8Array | null> {
    const token = this.cache.readStarted(key);
    return this.readStored(key).then((stored) => {
      this.cache.fill(key, token, stored);
      return stored;
    });
  }

  /** A batch whose applied state reached `index` is durable: drop the overlay up to it. */
  persisted(index: number): void {
    this.checkUsable();
    assert(
      index >= this.persistedIndexValue && index <= this.appliedIndexValue,
      `persisted(${index}) outside [${this.persistedIndexValue}, ${this.appliedIndexValue}]`,
    );
    this.persistedIndexValue = index;
    const keys = this.overlayKeys;
    const indexes = this.overlayIndexes;
    let head = this.overlayHead;
    while (head < keys.length && indexes[head]! <= index) {
      const key = keys[head]!;
      const entry = this.overlay.get(key);
      // A later write of the key (not yet durable) stays.
      if (entry !== undefined && entry.index <= index) this.overlay.delete(key);
      head++;
    }
    if (head === keys.length) {
      keys.length = 0;
      indexes.length = 0;
      head = 0;
    } else if (head >= 1024 && head * 2 >= keys.length) {
      keys.splice(0, head);
      indexes.splice(0, head);
      head = 0;
    }
    this.overlayHead = head;
  }

  /** Applies committed entries (see the contract above). */
  async apply(entries: readonly Entry[]): Promise<ApplyOutput> {
    return this.applyNow(entries);
  }

  /**
   * `apply`, answering at once when no entry needs to read storage (only a delete of a key
   * the overlay lacks does): the loop applies every group of every round, and an async
   * call costs a function object, promises and microtask turns each time. Throws instead
   * of rejecting when it answers at once.
   */
  applyNow(entries: readonly Entry[]): ApplyOutput | Promise<ApplyOutput> {
    this.checkUsable();
    assert(!this.applying, 'apply called while another apply is in progress');
    this.applying = true;
    const output: ApplyOutput = {
      appliedIndex: this.appliedIndexValue,
      kv: [],
      sessions: [],
      results: [],
    };
    // Set.clear() allocates a new table even when empty: only when there is something.
    if (this.dirty.size > 0) this.dirty.clear();
    try {
      for (let i = 0; i < entries.length; i++) {
        const pending = this.applyEntry(entries[i]!, output);
        if (pending !== undefined) return this.applyRest(pending, entries, i + 1, output);
      }
      return this.finishApply(output);
    } catch (error) {
      this.failed = true;
      this.applying = false;
      throw error;
    }
  }

  /** The rest of an apply once `pending` (an entry's storage read) settled. */
  private async applyRest(
    pending: Promise<void>,
    entries: readonly Entry[],
    from: number,
    output: ApplyOutput,
  ): Promise<ApplyOutput> {
    try {
      await pending;
      for (let i = from; i < entries.length; i++) {
        const next = this.applyEntry(entries[i]!, output);
        if (next !== undefined) await next;
      }
      return this.finishApply(output);
    } catch (error) {
      this.failed = true;
      throw error;
    } finally {
      this.applying = false;
    }
  }

  /** Applies one entry; a promise if its result waits for a storage read. */
  private applyEntry(entry: Entry, output: ApplyOutput): Promise<void> | undefined {
    const index = entry.index;
    assert(
      index === this.appliedIndexValue + 1,
      `entry ${index} applied after ${this.appliedIndexValue}`,
    );
    this.appliedIndexValue = index;
    // Empty data is a new leader's no-op (§5.4.2); ConfChanges are the loop's.
    if (entry.type !== EntryType.Normal || entry.data.length === 0) return undefined;
    const command = decodeCommand(entry.data);
    if (command.kind === 'invalid') {
      output.results.push({
        index,
        clientId: null,
        seq: null,
        result: 'command_invalid',
        reason: command.reason,
      });
      return undefined;
    }
    const session = this.touch(command, index);
    if (command.seq < session.lowestUnanswered) {
      this.answer(command, index, 'result_dropped', output);
      return undefined;
    }
    const first = session.results.get(command.seq);
    if (first !== undefined) {
      this.answer(command, index, first, output);
      return undefined;
    }
    if (command.kind === 'put') {
      this.applyWrite(command, session, index, true, output);
      return undefined;
    }
    // A delete: whether the key holds a value after every entry applied so far.
    const written = this.overlay.get(command.key);
    if (written !== undefined) {
      this.applyWrite(command, session, index, written.value !== null, output);
      return undefined;
    }
    const cached = this.cache.get(command.key);
    if (cached !== undefined) {
      this.applyWrite(command, session, index, cached !== null, output);
      return undefined;
    }
    return this.readThrough(command.key).then((stored) => {
      this.applyWrite(command, session, index, stored !== null, output);
    });
  }

  private applyWrite(
    command: Command,
    session: Session,
    index: number,
    result: CommandResult,
    output: ApplyOutput,
  ): void {
    this.writeKv(command, result, index, output.kv);
    this.keepResult(session, command.seq, result);
    this.answer(command, index, result, output);
  }

  private answer(
    command: Command,
    index: number,
    result: CommandResult | 'result_dropped',
    output: ApplyOutput,
  ): void {
    output.results.push({ index, clientId: command.clientId, seq: command.seq, result });
    while (this.sessions.size > this.maxSessions) this.dropOldestSession();
  }

  private finishApply(output: ApplyOutput): ApplyOutput {
    for (const clientId of this.dirty) {
      const session = this.sessions.get(clientId);
      output.sessions.push({
        clientId,
        record: session === undefined ? null : encodeSessionRecord(session),
      });
    }
    if (this.dirty.size > 0) this.dirty.clear();
    this.applying = false;
    return {
      appliedIndex: this.appliedIndexValue,
      kv: output.kv,
      sessions: output.sessions,
      results: output.results,
    };
  }

  private checkUsable(): void {
    assert(!this.failed, 'a previous apply failed: rebuild the machine from durable state');
  }

  /**
   * Advances the clock, expires sessions, then finds or creates the command's session,
   * marks it most recently touched and raises its lowestUnanswered.
   */
  private touch(command: Command, index: number): Session {
    const clockMs = Math.max(this.clockMsValue, command.proposedAtMs);
    this.clockMsValue = clockMs;
    // Oldest first; lastTouchedMs grows along the order, so stop at the first live one.
    // Looked at only once the oldest may have expired (a walk per command was a cost).
    if (this.oldestTouchedMsBound + this.sessionTtlMs <= clockMs) {
      this.oldestTouchedMsBound = clockMs;
      for (const [clientId, session] of this.sessions) {
        if (session.lastTouchedMs + this.sessionTtlMs > clockMs) {
          this.oldestTouchedMsBound = session.lastTouchedMs;
          break;
        }
        this.sessions.delete(clientId);
        this.dirty.add(clientId);
      }
    }
    const clientId = command.clientId;
    let session = this.sessions.get(clientId);
    if (session === undefined) {
      session = { lastTouchedMs: 0, lastTouchedIndex: 0, lowestUnanswered: 0, results: new Map() };
    } else {
      this.sessions.delete(clientId);
    }
    this.sessions.set(clientId, session);
    session.lastTouchedMs = clockMs;
    session.lastTouchedIndex = index;
    this.dirty.add(clientId);
    if (command.lowestUnanswered > session.lowestUnanswered) {
      session.lowestUnanswered = command.lowestUnanswered;
      for (const seq of session.results.keys()) {
        if (seq < command.lowestUnanswered) session.results.delete(seq);
      }
    }
    return session;
  }

  private keepResult(session: Session, seq: number, result: CommandResult): void {
    session.results.set(seq, result);
    if (session.results.size <= this.maxResultsPerSession) return;
    let lowest = seq;
    for (const kept of session.results.keys()) if (kept < lowest) lowest = kept;
    session.results.delete(lowest);
    // Below the dropped result nothing may apply any more: its retry must not apply twice.
    session.lowestUnanswered = lowest + 1;
  }

  private dropOldestSession(): void {
    const oldest = this.sessions.keys().next();
    assert(oldest.done !== true, 'a session to drop');
    this.sessions.delete(oldest.value);
    this.dirty.add(oldest.value);
  }

  private writeKv(command: Command, result: CommandResult, index: number, kv: KvWrite[]): void {
    // Deleting an absent key changes nothing: no write.
    if (command.kind === 'delete' && !result) return;
    const value = command.value;
    this.overlay.set(command.key, { value, index });
    this.cache.write(command.key, value);
    this.overlayKeys.push(command.key);
    this.overlayIndexes.push(index);
    kv.push({ key: command.key, value });
  }
}
