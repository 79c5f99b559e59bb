/**
 * The disk backend for Node: LevelDB through classic-level, one database directory per
 * node. Every batch is one LevelDB WriteBatch written with `sync: true` (the LevelDB log is
 * fsynced before the promise resolves), which makes it atomic and durable; the KV data,
 * log segments and metadata share that one write-ahead log, so no cross-file ordering is
 * needed. Why LevelDB and not lmdb or a hand-made append-only log: README.md ("Disk").
 */
import { ClassicLevel } from 'classic-level';
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
  let openScans = 0;
  const closed = () => {
    openScans--;
  };
  return {
    name,
    get openScans() {
      return openScans;
    },
    get: (key) => db.get(key),
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
    write: (ops: readonly EngineOp[]) =>
      db.batch(
        ops.map((op) =>
          op.type === 'put'
            ? { type: 'put' as const, key: op.key, value: op.value }
            : { type: 'del' as const, key: op.key },
        ),
        { sync: true },
      ),
    clearRange: (lo, hi) => db.clear({ gte: lo, lt: hi }),
    close: () => db.close(),
  };
}
