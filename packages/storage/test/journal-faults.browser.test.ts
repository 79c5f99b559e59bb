// Seeded fault injection on the IndexedDB engine and its OPFS journal: random writes and
// range deletes, and between them every way this backend knows a crash or the browser to
// leave its two copies (database lost, journal lost, torn journal tail, either copy one
// batch ahead). After each reopen the engine must hold exactly the batches a model holds.
// A failure names its seed; `STORAGE_SEED` is not read in the browser, so replay a seed
// by putting it in `seeds`.
import { expect } from 'chai';
import { promisifyRequest } from 'idb-keyval';
import type { JournalOp } from '../src/codec.ts';
import type { Engine, EngineOp } from '../src/engine.ts';
import {
  deleteIndexedDbStorage,
  indexedDbName,
  openIndexedDbEngine,
} from '../src/indexeddb.browser.ts';
import { deleteJournal, Journal, journalPath } from '../src/journal.browser.ts';
import { prng } from './contract.ts';

const seeds = [1, 2, 3];
const steps = 40;
const run = `${Date.now()}-${Math.random()}`;

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');

/** The key space as the model keeps it: hex keys (which sort as the bytes do). */
type Model = Map<string, string>;

function applyToModel(model: Model, ops: readonly JournalOp[]): void {
  for (const op of ops) {
    if (op.type === 'put') model.set(hex(op.key), hex(op.value));
    else if (op.type === 'del') model.delete(hex(op.key));
    else {
      const [lo, hi] = [hex(op.key), hex(op.end)];
      for (const key of [...model.keys()]) if (key >= lo && key < hi) model.delete(key);
    }
  }
}

async function contents(engine: Engine): Promise<string[][]> {
  const pairs: string[][] = [];
  for await (const page of engine.scan(new Uint8Array(0), null)) {
    for (const [key, value] of page) pairs.push([hex(key), hex(value)]);
  }
  return pairs;
}

function randomOps(random: () => number): JournalOp[] {
  const key = () =>
    Uint8Array.from({ length: 1 + Math.floor(random() * 2) }, () => 16 + Math.floor(random() * 6));
  const ops: JournalOp[] = [];
  for (let n = 1 + Math.floor(random() * 4); n > 0; n--) {
    const roll = random();
    if (roll < 0.7) {
      const value = Uint8Array.from({ length: Math.floor(random() * 300) }, () =>
        Math.floor(random() * 256),
      );
      ops.push({ type: 'put', key: key(), value });
    } else if (roll < 0.9) {
      ops.push({ type: 'del', key: key() });
    } else {
      const [a, b] = [key(), key()].sort((x, y) => (hex(x) < hex(y) ? -1 : 1)) as [
        Uint8Array,
        Uint8Array,
      ];
      ops.push({ type: 'delRange', key: a, end: b });
    }
  }
  return ops;
}

async function journalFile(dbName: string): Promise<FileSystemFileHandle> {
  let dir = await navigator.storage.getDirectory();
  for (const part of journalPath(dbName)) dir = await dir.getDirectoryHandle(part);
  for await (const name of (dir as unknown as { keys(): AsyncIterable<string> }).keys()) {
    return dir.getFileHandle(name);
  }
  throw new Error(`${dbName}: no journal file`);
}

const faults = [
  'reopen',
  'lose database',
  'lose journal',
  'torn journal tail',
  'journal a batch ahead',
  'database a batch ahead',
] as const;

/** Applies `fault` to the closed copies of `dbName`, updating the model where it adds a batch. */
async function inject(
  fault: (typeof faults)[number],
  dbName: string,
  random: () => number,
  model: Model,
): Promise<void> {
  switch (fault) {
    case 'reopen':
      return;
    case 'lose database':
      await promisifyRequest(indexedDB.deleteDatabase(dbName));
      return;
    case 'lose journal':
      await deleteJournal(dbName);
      return;
    case 'torn journal tail': {
      const file = await journalFile(dbName);
      const size = (await file.getFile()).size;
      const writable = await file.createWritable({ keepExistingData: true });
      const garbage = Uint8Array.from({ length: 1 + Math.floor(random() * 40) }, () =>
        Math.floor(random() * 256),
      );
      await writable.write({ type: 'write', position: size, data: garbage });
      await writable.close();
      return;
    }
    case 'journal a batch ahead': {
      const ops = randomOps(random);
      const { journal, extent } = await Journal.open(dbName, dbName);
      await journal.append(extent!.lastSeq + 1, ops);
      await journal.close();
      applyToModel(model, ops);
      return;
    }
    case 'database a batch ahead': {
      const ops = randomOps(random);
      const db = await promisifyRequest(indexedDB.open(dbName));
      const tx = db.transaction(['records', 'meta'], 'readwrite');
      const seq = (await promisifyRequest(tx.objectStore('meta').get('seq'))) ?? 0;
      const records = tx.objectStore('records');
      const key = (bytes: Uint8Array) => bytes as Uint8Array<ArrayBuffer>;
      for (const op of ops) {
        if (op.type === 'put') records.put(op.value.slice(), key(op.key));
        else if (op.type === 'del') records.delete(key(op.key));
        else if (hex(op.key) < hex(op.end)) {
          records.delete(IDBKeyRange.bound(key(op.key), key(op.end), false, true));
        }
      }
      tx.objectStore('meta').put(seq + 1, 'seq');
      await promisifyRequest(tx);
      db.close();
      applyToModel(model, ops);
      return;
    }
  }
}

describe('storage: IndexedDB + journal under seeded faults', () => {
  for (const seed of seeds) {
    it(`seed ${seed}: ${steps} steps of writes and faults keep exactly the written batches`, async () => {
      const random = prng(seed);
      const nodeId = `faults-${seed}-${run}`;
      const dbName = indexedDbName('test', nodeId);
      // Small, so that the journal is rewritten every few batches too.
      const options = { journalRewriteBytes: 2048 };
      const model: Model = new Map();
      let engine = await openIndexedDbEngine(dbName, options);
      const seen = new Set<string>();
      for (let step = 0; step < steps; step++) {
        for (let n = Math.floor(random() * 4); n > 0; n--) {
          if (random() < 0.2) {
            const [lo, hi] = [Uint8Array.of(16), Uint8Array.of(16 + Math.floor(random() * 6))];
            await engine.clearRange(lo, hi);
            applyToModel(model, [{ type: 'delRange', key: lo, end: hi }]);
          } else {
            const ops = randomOps(random).filter((op): op is EngineOp => op.type !== 'delRange');
            await engine.write(ops);
            applyToModel(model, ops);
          }
        }
        const fault = faults[Math.floor(random() * faults.length)]!;
        seen.add(fault);
        await engine.close();
        await inject(fault, dbName, random, model);
        engine = await openIndexedDbEngine(dbName, options);
        const expected = [...model.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
        expect(
          await contents(engine),
          `seed ${seed}, step ${step}, after "${fault}"`,
        ).to.deep.equal(expected);
      }
      await engine.close();
      await deleteIndexedDbStorage({ clusterId: 'test', nodeId });
      expect(seen.size, `seed ${seed}: faults exercised`).to.equal(faults.length);
    });
  }
});
