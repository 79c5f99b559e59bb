import { expect } from 'chai';
import { binaryKey } from '../src/binary-key.ts';
import type { JournalOp } from '../src/codec.ts';
import type { EngineOp } from '../src/engine.ts';
import { StorageError } from '../src/errors.ts';
import {
  DatabaseBehind,
  MAX_BATCHES_PER_TRANSACTION,
  MAX_BEHIND_BATCHES,
} from '../src/write-behind.ts';

const bytes = (text: string) => new TextEncoder().encode(text);
const put = (key: string, value: string): EngineOp => ({
  type: 'put',
  key: bytes(key),
  value: bytes(value),
});
const del = (key: string): EngineOp => ({ type: 'del', key: bytes(key) });
const show = (value: Uint8Array | null | undefined) =>
  value === undefined ? 'none' : value === null ? 'deleted' : new TextDecoder().decode(value);

/** The database's side: each transaction asked for, committed (or failed) when the test says. */
class Database {
  readonly transactions: { ops: string[]; seq: number; done: (error?: Error) => void }[] = [];
  readonly preserved: number[] = [];

  readonly write = (ops: readonly JournalOp[], seq: number): Promise<void> =>
    new Promise((resolve, reject) => {
      this.transactions.push({
        ops: ops.map((op) =>
          op.type === 'put' ? `${binaryKey(op.key)}=${show(op.value)}` : `-${binaryKey(op.key)}`,
        ),
        seq,
        done: (error) => (error === undefined ? resolve() : reject(error)),
      });
    });

  readonly views = {
    preserve: async (ops: readonly JournalOp[]) => {
      this.preserved.push(ops.length);
    },
  };

  /** Lets the queue's promise chains run. */
  async settle(): Promise<void> {
    for (let i = 0; i < 20; i++) await Promise.resolve();
  }
}

describe('storage: the IndexedDB copy written behind the journal', () => {
  it('reads see a batch at once; a transaction takes the queued batches, each key once, and what it holds stops being pending', async () => {
    const db = new Database();
    const behind = new DatabaseBehind('test db', db.views, db.write);
    behind.add(1, [put('a', '1'), put('b', '1')]);
    await db.settle();
    expect(db.transactions.map((t) => [t.seq, t.ops])).to.deep.equal([[1, ['a=1', 'b=1']]]);
    // While batch 1's transaction runs, three more batches queue behind it.
    behind.add(2, [put('a', '2'), del('b')]);
    behind.add(3, [put('c', '3')]);
    behind.add(4, [put('a', '4')]);
    expect([show(behind.lookup(bytes('a'))), show(behind.lookup(bytes('b')))]).to.deep.equal([
      '4',
      'deleted',
    ]);
    expect([...behind.pendingIn(bytes('b'), bytes('c'))]).to.deep.equal([['b', null]]);
    db.transactions[0]!.done();
    await db.settle();
    // Batch 1 is in the database, but a and b have newer values still pending.
    expect(show(behind.lookup(bytes('a')))).to.equal('4');
    expect(db.transactions.map((t) => [t.seq, t.ops])[1]).to.deep.equal([4, ['a=4', '-b', 'c=3']]);
    const drained = behind.drain();
    db.transactions[1]!.done();
    await drained;
    expect(behind.lookup(bytes('a'))).to.equal(undefined);
    expect(behind.pendingIn(bytes(''), null).size).to.equal(0);
    expect(db.preserved).to.deep.equal([2, 3]);
  });

  it(`is full at ${MAX_BEHIND_BATCHES} batches behind; a transaction takes ${MAX_BATCHES_PER_TRANSACTION} at most`, async () => {
    const db = new Database();
    const behind = new DatabaseBehind('test db', db.views, db.write);
    for (let seq = 1; seq <= MAX_BEHIND_BATCHES + 1; seq++) {
      expect(behind.full, `before batch ${seq}`).to.equal(false);
      behind.add(seq, [put(`k${seq}`, 'v')]);
    }
    // Batch 1 is in flight; the rest wait in the queue.
    expect(behind.full).to.equal(true);
    await db.settle();
    db.transactions[0]!.done();
    await behind.settle();
    await db.settle();
    expect(db.transactions[1]!.ops).to.have.length(MAX_BATCHES_PER_TRANSACTION);
    expect(db.transactions[1]!.seq).to.equal(1 + MAX_BATCHES_PER_TRANSACTION);
    expect(behind.full).to.equal(false);
  });

  it('a failed transaction fails it for good with io, naming the batches the next open replays', async () => {
    const db = new Database();
    const behind = new DatabaseBehind('test db', db.views, db.write);
    behind.add(7, [put('a', '1')]);
    await db.settle();
    behind.add(8, [put('b', '1')]);
    db.transactions[0]!.done(new Error('QuotaExceededError'));
    await db.settle();
    let failure: unknown = null;
    await behind.drain().catch((error: unknown) => {
      failure = error;
    });
    expect(failure).to.be.instanceOf(StorageError).with.property('code', 'io');
    expect(String(failure)).to.match(/batches 7\.\.7, acknowledged from the journal/);
    expect(String(failure)).to.include('QuotaExceededError');
    expect(() => behind.check()).to.throw(StorageError, /replays them from the journal/);
    // Nothing more is written: batch 8 waits for the next open's replay.
    expect(db.transactions).to.have.length(1);
  });
});
