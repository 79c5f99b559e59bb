/**
 * The memory backend, for tests and the deterministic simulation.
 *
 * A MemoryDisk is the "medium" that outlives store instances: open a store on it, write,
 * `crash()` it, open a new store on the same disk, and the new store sees exactly the
 * writes that had become durable. No timers, no clock, and randomness (snapshot stream
 * ids) only from the `random` option, which a simulation seeds: a write becomes
 * durable either in a microtask after it starts (`sync: 'auto'`) or when the test calls
 * `syncNext()`/`syncAll()` (`sync: 'manual'`), so a crash can be injected while a write
 * is pending, which then loses that write entirely (its promise rejects with 'closed').
 *
 * It runs the same implementation and binary format as the durable backends (store.ts,
 * codec.ts); only the Engine differs.
 */
import { binaryKey, keyOfBinary } from './binary-key.ts';
import type { Engine, EngineOp, EnginePage } from './engine.ts';
import { StorageError } from './errors.ts';
import type { NodeStorage } from './storage.ts';
import { openEngineStorage } from './store.ts';

export interface MemoryDiskOptions {
  /** Names the disk in error messages. Default 'memory'. */
  readonly name?: string;
  /**
   * 'auto' (default): each write becomes durable, and its promise resolves, in a microtask.
   * 'manual': writes stay pending (promise unresolved) until syncNext()/syncAll().
   */
  readonly sync?: 'auto' | 'manual';
  /** Random bytes for snapshot stream ids (EngineStorageOptions); default crypto's. */
  readonly random?: (bytes: Uint8Array) => void;
}

interface PendingWrite {
  readonly ops: readonly EngineOp[];
  readonly resolve: () => void;
  readonly reject: (error: StorageError) => void;
}

export class MemoryDisk {
  readonly name: string;
  readonly sync: 'auto' | 'manual';
  private readonly random: ((bytes: Uint8Array) => void) | undefined;
  /**
   * The value each key holds (the engine keeps the put's array: Engine.write). Only the
   * value, not the op and its key array: every durable record is a survivor the garbage
   * collector copies, and in `pnpm bench node` this disk's retained records cost ~30 %
   * of the CPU the benchmark means to spend on the host.
   */
  private readonly durable = new Map<string, Uint8Array>();
  private pending: PendingWrite[] = [];
  private engine: MemoryEngine | null = null;
  /** Set while a store opens: its housekeeping writes are durable at once in any mode. */
  private opening = false;

  constructor(options: MemoryDiskOptions = {}) {
    this.name = options.name ?? 'memory';
    this.sync = options.sync ?? 'auto';
    this.random = options.random;
  }

  /** Writes started but not yet durable (only ever > 0 in 'manual' mode, or mid-microtask). */
  get pendingWrites(): number {
    return this.pending.length;
  }

  /** Durable records (keys), for tests that check garbage is cleared. */
  get recordCount(): number {
    return this.durable.size;
  }

  /** Whether a store is open on this disk. */
  get isOpen(): boolean {
    return this.engine !== null;
  }

  /** Makes the oldest pending write durable; its promise resolves in a microtask. */
  syncNext(): boolean {
    const next = this.pending.shift();
    if (next === undefined) return false;
    this.apply(next.ops);
    next.resolve();
    return true;
  }

  /** Makes every pending write durable, in order. Returns how many there were. */
  syncAll(): number {
    let count = 0;
    while (this.syncNext()) count++;
    return count;
  }

  /**
   * Simulates a power loss: pending writes are lost (their promises reject with 'closed'),
   * and the open store stops (every later call rejects with 'closed'). Durable state stays;
   * open a new store on this disk to restart. A no-op if no store is open.
   */
  crash(): void {
    const engine = this.engine;
    if (engine === null) return;
    engine.dead = true;
    this.engine = null;
    const lost = this.pending;
    this.pending = [];
    const error = new StorageError('closed', `${this.name}: crashed; reopen the disk`);
    for (const write of lost) write.reject(error);
  }

  /**
   * Opens the store on this disk. 'locked' if one is open already. Opening writes (format
   * a new disk, clear garbage) become durable without syncNext(), even in 'manual' mode.
   */
  async open(): Promise<NodeStorage> {
    const engine = this.openEngine();
    this.opening = true;
    try {
      return await openEngineStorage(engine, { random: this.random });
    } finally {
      this.opening = false;
    }
  }

  /** The raw key space, for tests that plant corrupt or foreign records. 'locked' if open. */
  openEngine(): Engine {
    if (this.engine !== null) {
      throw new StorageError('locked', `${this.name}: a store is already open on this disk`);
    }
    this.engine = new MemoryEngine(this);
    return this.engine;
  }

  /** @internal */
  enqueue(write: PendingWrite): void {
    this.pending.push(write);
    if (this.sync === 'auto' || this.opening) {
      // Durable in a microtask, unless a crash discarded it first.
      void Promise.resolve().then(() => {
        if (this.pending[0] === write) this.syncNext();
      });
    }
  }

  /** @internal */
  apply(ops: readonly EngineOp[]): void {
    for (const op of ops) {
      const key = binaryKey(op.key);
      if (op.type === 'put') this.durable.set(key, op.value);
      else this.durable.delete(key);
    }
  }

  /** @internal */
  range(lo: Uint8Array, hi: Uint8Array | null): Array<readonly [Uint8Array, Uint8Array]> {
    const loKey = binaryKey(lo);
    const hiKey = hi === null ? null : binaryKey(hi);
    return [...this.durable]
      .filter(([key]) => key >= loKey && (hiKey === null || key < hiKey))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, value]) => [keyOfBinary(key), value.slice()] as const);
  }

  /** @internal */
  lookup(key: Uint8Array): Uint8Array | undefined {
    return this.durable.get(binaryKey(key))?.slice();
  }

  /** @internal */
  delete(lo: Uint8Array, hi: Uint8Array): void {
    const loKey = binaryKey(lo);
    const hiKey = binaryKey(hi);
    for (const key of this.durable.keys()) {
      if (key >= loKey && key < hiKey) this.durable.delete(key);
    }
  }

  /** @internal */
  release(engine: MemoryEngine): void {
    if (this.engine === engine) this.engine = null;
  }
}

const scanPageSize = 1000;

class MemoryEngine implements Engine {
  dead = false;
  readonly name: string;

  constructor(private readonly disk: MemoryDisk) {
    this.name = disk.name;
  }

  private alive(): void {
    if (this.dead) throw new StorageError('closed', `${this.name}: crashed or closed`);
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    this.alive();
    return this.disk.lookup(key);
  }

  scan(lo: Uint8Array, hi: Uint8Array | null): AsyncIterable<EnginePage> {
    this.alive();
    const view = this.disk.range(lo, hi);
    return (async function* pages() {
      for (let at = 0; at < view.length; at += scanPageSize) {
        yield view.slice(at, at + scanPageSize);
      }
    })();
  }

  write(ops: readonly EngineOp[]): Promise<void> {
    this.alive();
    // Kept as they are, not copied: the caller hands them over (Engine.write).
    return new Promise((resolve, reject) => this.disk.enqueue({ ops, resolve, reject }));
  }

  async clearRange(lo: Uint8Array, hi: Uint8Array): Promise<void> {
    this.alive();
    this.disk.delete(lo, hi);
  }

  async close(): Promise<void> {
    if (this.dead) return;
    this.dead = true;
    this.disk.release(this);
  }
}
