/**
 * The disk backend for Node: LevelDB through classic-level, one database directory per
 * node. Every batch is one LevelDB WriteBatch written with `sync: true` (the LevelDB log is
 * fsynced before the promise resolves), which makes it atomic and durable; the KV data,
 * log segments and metadata share that one write-ahead log, so no cross-file ordering is
 * needed. Why LevelDB and not lmdb or a hand-made append-only log: README.md ("Disk").
 */
import { createRequire } from 'node:module';
import { ClassicLevel } from 'classic-level';
// The store's checksums use Node's native CRC-32 (crc32.node.ts) from here on.
import './crc32.node.ts';
import type { Engine, EngineOp, EnginePage } from './engine.ts';
import { StorageError } from './errors.ts';
import type { NodeStorage } from './storage.ts';
import { openEngineStorage } from './store.ts';

const scanPageSize = 1000;

/** The LevelDB engine; `openScans` counts scans whose iterator is still open. */
export interface LevelEngine extends Engine {
  readonly openScans: number;
}

type LevelIterator = { close(): Promise<void> };

/**
 * classic-level's private get (abstract-level's `_get`, which its public `get()` calls after
 * preparing the call: an object spread of the options and encoder lookups per call).
 */
interface LevelPrivate {
  _get(key: Uint8Array, options: typeof getOptions): Promise<Uint8Array | undefined>;
}

/**
 * classic-level's native binding, for writes: its chained batch (`batch_init`, then
 * `batch_put`/`batch_del` per operation, `batch_write`) is the same LevelDB WriteBatch the
 * array form (`batch_do`, behind abstract-level's `batch()`/`_batch`) builds, without that
 * form's per-operation property reads (`type`, `key`, `value`, each by a name the binding
 * turns into a V8 string per call) and string conversion of `type`. Measured, the
 * JavaScript thread's part of a 60-operation batch fell ~110-130 -> ~75-80 us. Each call
 * copies the key and value synchronously, so the caller's buffers are free once it returns.
 * `batch_write` with `sync: true` is one WriteBatch written and fsynced (LevelDB's
 * `WriteOptions.sync`) before its promise resolves: durability as before.
 */
interface LevelBinding {
  batch_init(db: unknown): LevelNativeBatch;
  batch_put(batch: LevelNativeBatch, key: Uint8Array, value: Uint8Array): void;
  batch_del(batch: LevelNativeBatch, key: Uint8Array): void;
  batch_clear(batch: LevelNativeBatch): void;
  batch_write(batch: LevelNativeBatch, options: { readonly sync: boolean }): Promise<void>;
}
declare const nativeBatch: unique symbol;
type LevelNativeBatch = { readonly [nativeBatch]: true };

const binding = createRequire(import.meta.url)('classic-level/binding.js') as LevelBinding;

/** The native database handle classic-level keeps under its own `Symbol('context')`. */
function nativeContext(db: object): unknown {
  const key = Object.getOwnPropertySymbols(db).find((s) => s.description === 'context');
  const context = key === undefined ? undefined : (db as Record<symbol, unknown>)[key];
  if (context === undefined) throw new Error('classic-level: no native database context found');
  return context;
}

const syncWrite = { sync: true } as const;
/** What abstract-level passes `_get` for our 'view' encodings (values come back as Buffers). */
const getOptions = { keyEncoding: 'view', valueEncoding: 'view', fillCache: true } as const;

/**
 * Closes the iterator of a scan dropped unfinished (neither drained nor returned, e.g. an
 * abandoned snapshot stream) once the scan is garbage-collected: an open iterator pins a
 * LevelDB snapshot (old versions survive compaction) until the database closes.
 */
const abandonedScans = new FinalizationRegistry<{ iterator: LevelIterator; closed: () => void }>(
  ({ iterator, closed }) => {
    closed();
    iterator.close().catch(() => {});
  },
);

/** Opens (creating if missing) the store in directory `path`. */
export async function openDiskStorage(path: string): Promise<NodeStorage> {
  return openEngineStorage(await openLevelEngine(path));
}

function levelCode(error: unknown): string | undefined {
  for (let e = error; e instanceof Error; e = e.cause) {
    const code = (e as Error & { code?: unknown }).code;
    if (code === 'LEVEL_LOCKED' || code === 'LEVEL_CORRUPTION') return code;
  }
  return undefined;
}

/** The raw LevelDB key space of a store (store.ts uses it; tests plant bad records in it). */
export async function openLevelEngine(path: string): Promise<LevelEngine> {
  const name = `LevelDB ${path}`;
  const db = new ClassicLevel<Uint8Array, Uint8Array>(path, {
    keyEncoding: 'view',
    valueEncoding: 'view',
    // Measured (README "Disk"): 64 MiB memtables write large entries ~1.5x faster than
    // the 4 MiB default, for at most two such buffers of memory.
    writeBufferSize: 64 * 1024 * 1024,
  });
  try {
    await db.open();
  } catch (error) {
    const code = levelCode(error);
    const detail = error instanceof Error ? (error.cause ?? error) : error;
    throw new StorageError(
      code === 'LEVEL_LOCKED' ? 'locked' : code === 'LEVEL_CORRUPTION' ? 'corrupt' : 'io',
      `${name}: cannot open: ${detail instanceof Error ? detail.message : String(detail)}`,
      { cause: error },
    );
  }
  const raw = db as unknown as LevelPrivate;
  // The private calls skip abstract-level's open check; the native handle must be open.
  const assertOpen = () => {
    if (db.status !== 'open') throw new Error(`${name} is ${db.status}`);
  };
  const context = nativeContext(db);
  /**
   * A native batch between writes, cleared, for the next one: a batch is freed only when
   * its handle is garbage-collected (the binding keeps no count of its memory), so one is
   * reused rather than one left per write; writes that overlap take fresh ones.
   */
  let idleBatch: LevelNativeBatch | null = null;
  let openScans = 0;
  const closed = () => {
    openScans--;
  };
  return {
    name,
    get openScans() {
      return openScans;
    },
    async get(key) {
      assertOpen();
      return raw._get(key, getOptions);
    },
    scan(lo: Uint8Array, hi: Uint8Array | null): AsyncIterable<EnginePage> {
      // classic-level iterators read from a LevelDB snapshot taken here, synchronously.
      const iterator = db.iterator(hi === null ? { gte: lo } : { gte: lo, lt: hi });
      openScans++;
      const token = {};
      const pages = (async function* pages() {
        try {
          for (;;) {
            const page = await iterator.nextv(scanPageSize);
            if (page.length === 0) return;
            yield page;
          }
        } finally {
          abandonedScans.unregister(token);
          closed();
          await iterator.close();
        }
      })();
      abandonedScans.register(pages, { iterator, closed }, token);
      return pages;
    },
    async write(ops: readonly EngineOp[]) {
      assertOpen();
      const batch = idleBatch ?? binding.batch_init(context);
      idleBatch = null;
      try {
        for (let i = 0; i < ops.length; i++) {
          const op = ops[i]!;
          if (op.type === 'put') binding.batch_put(batch, op.key, op.value);
          else binding.batch_del(batch, op.key);
        }
        await binding.batch_write(batch, syncWrite);
      } finally {
        binding.batch_clear(batch);
        idleBatch ??= batch;
      }
    },
    clearRange: (lo, hi) => db.clear({ gte: lo, lt: hi }),
    close: () => db.close(),
  };
}
