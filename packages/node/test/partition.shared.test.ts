import { type Entry, EntryType, emptyConfState, mulberry32 } from '@meshkv/raft';
import { MemoryDisk, type NodeStorage } from '@meshkv/storage';
import { expect } from 'chai';
import {
  type Command,
  decodeSessionRecord,
  encodeCommand,
  type SessionRecord,
} from '../src/command.ts';
import { type ApplyOutput, PartitionMachine, type PartitionOptions } from '../src/partition.ts';

const GROUP = 7;
const text = new TextEncoder();
const decoder = new TextDecoder();

function command(change: Partial<Command>): Command {
  const kind = change.kind ?? 'put';
  return {
    kind,
    clientId: 'a',
    seq: 1,
    lowestUnanswered: 0,
    proposedAtMs: 1000,
    key: 'k',
    value: kind === 'put' ? text.encode('v') : null,
    ...change,
  };
}

/** A log builder: entries get consecutive indexes from `first`. */
class Log {
  next: number;
  constructor(first = 1) {
    this.next = first;
  }
  entry(data: Uint8Array, type: EntryType = EntryType.Normal): Entry {
    return { term: 1, index: this.next++, type, data };
  }
  commands(...commands: Partial<Command>[]): Entry[] {
    return commands.map((change) => this.entry(encodeCommand(command(change))));
  }
}

/** A partition over a MemoryDisk-backed NodeStorage, with the loop's duties done by hand. */
class Replica {
  machine!: PartitionMachine;
  private constructor(
    readonly disk: MemoryDisk,
    public storage: NodeStorage,
    readonly options: PartitionOptions,
  ) {}

  static async create(options: PartitionOptions = {}, stored: [string, string][] = []) {
    const disk = new MemoryDisk();
    const storage = await disk.open();
    await storage.write({
      groups: [
        {
          group: GROUP,
          create: true,
          kv: stored.map(([key, value]) => ({ key, value: text.encode(value) })),
        },
      ],
    });
    const replica = new Replica(disk, storage, options);
    await replica.restart();
    return replica;
  }

  /** Rebuilds the machine from durable state, as a restarted node does. */
  async restart(): Promise<void> {
    const state = (await this.storage.load()).groups.get(GROUP)!;
    const storage = this.storage;
    this.machine = new PartitionMachine({
      appliedIndex: state.appliedState.index,
      sessions: state.sessions,
      readStored: (key) => storage.get(GROUP, key),
      options: this.options,
    });
  }

  /** What the loop does with an apply's output: one batch, then `persisted`. */
  async persist(output: ApplyOutput): Promise<void> {
    await this.storage.write({
      groups: [
        {
          group: GROUP,
          appliedState: { index: output.appliedIndex, term: 1, confState: emptyConfState },
          kv: output.kv,
          sessions: output.sessions,
        },
      ],
    });
    this.machine.persisted(output.appliedIndex);
  }

  async applyAndPersist(entries: Entry[]): Promise<ApplyOutput> {
    const output = await this.machine.apply(entries);
    await this.persist(output);
    return output;
  }

  async value(key: string): Promise<string | null> {
    const bytes = await this.machine.read(key);
    return bytes === null ? null : decoder.decode(bytes);
  }
}

function record(output: ApplyOutput, clientId: string): SessionRecord | null {
  const writes = output.sessions.filter((write) => write.clientId === clientId);
  expect(writes, `one session write for ${clientId}`).to.have.length(1);
  const bytes = writes[0]!.record;
  return bytes === null ? null : (decodeSessionRecord(bytes) as SessionRecord);
}

function resultsOf(output: ApplyOutput): unknown[] {
  return output.results.map((r) => r.result);
}

describe('partition: sessions (Raft thesis §6.3)', () => {
  it('a retried command applies once and returns its first result', async () => {
    const replica = await Replica.create();
    const log = new Log();
    const output = await replica.machine.apply(
      log.commands(
        { seq: 1 },
        { kind: 'delete', seq: 2 },
        { kind: 'delete', seq: 2 }, // the retry, committed again
        { seq: 1, value: text.encode('other') }, // a retry carries the same command
      ),
    );
    // A fresh delete of the now absent key would answer false; the retry gets true.
    expect(resultsOf(output)).to.deep.equal([true, true, true, true]);
    expect(output.kv.map((w) => w.value && decoder.decode(w.value))).to.deep.equal(['v', null]);
    expect(await replica.value('k')).to.equal(null);
    expect([...record(output, 'a')!.results]).to.deep.equal([
      [1, true],
      [2, true],
    ]);
  });

  it('applies one client’s seqs in any order, each once', async () => {
    const replica = await Replica.create();
    const log = new Log();
    const output = await replica.machine.apply(
      log.commands(
        { seq: 3, key: 'c' },
        { seq: 1, key: 'a' },
        { seq: 3, key: 'c' },
        { seq: 2, kind: 'delete', key: 'a' },
        { seq: 1, key: 'a' },
      ),
    );
    expect(resultsOf(output)).to.deep.equal([true, true, true, true, true]);
    expect(output.kv.map((w) => w.key)).to.deep.equal(['c', 'a', 'a']);
    expect(await replica.value('a')).to.equal(null);
  });

  it('drops results below lowestUnanswered; a command below it does not apply', async () => {
    const replica = await Replica.create();
    const log = new Log();
    await replica.applyAndPersist(log.commands({ seq: 1 }, { seq: 2, key: 'x' }, { seq: 3 }));
    const output = await replica.machine.apply(
      log.commands(
        { seq: 4, lowestUnanswered: 3, key: 'y' },
        { seq: 2, lowestUnanswered: 1, key: 'x', kind: 'delete' }, // stale: answered already
      ),
    );
    expect(resultsOf(output)).to.deep.equal([true, 'result_dropped']);
    expect(output.kv.map((w) => w.key)).to.deep.equal(['y']);
    const kept = record(output, 'a')!;
    expect(kept.lowestUnanswered).to.equal(3);
    expect([...kept.results.keys()]).to.deep.equal([3, 4]);
    expect(await replica.value('x')).to.equal('v');
  });

  it('keeps at most maxResultsPerSession results; the dropped ones never apply again', async () => {
    const replica = await Replica.create({ maxResultsPerSession: 3 });
    const log = new Log();
    const first = await replica.machine.apply(
      log.commands({ seq: 1 }, { seq: 2 }, { seq: 3 }, { seq: 4 }, { seq: 5 }),
    );
    const kept = record(first, 'a')!;
    expect([...kept.results.keys()]).to.deep.equal([3, 4, 5]);
    expect(kept.lowestUnanswered).to.equal(3);
    const retry = await replica.machine.apply(log.commands({ seq: 1, key: 'z' }));
    expect(resultsOf(retry)).to.deep.equal(['result_dropped']);
    expect(retry.kv).to.deep.equal([]);
  });

  it('expires sessions at the same index on two replicas fed the same log, one restarted (seeded)', async () => {
    const seed = 0x7e57;
    try {
      const rng = mulberry32(seed);
      const options = { sessionTtlMs: 5000, maxSessions: 4 };
      const steady = await Replica.create(options, [['k0', 'stored']]);
      const restarted = await Replica.create(options, [['k0', 'stored']]);
      const log = new Log();
      const seqs = new Map<string, number>();
      let clockMs = 10_000;
      const lastTouchedMs = new Map<string, number>();
      let expiries = 0;
      let evictions = 0;
      for (let step = 0; step < 400; step++) {
        // The proposers' clocks: mostly forward, sometimes behind (another node's clock).
        clockMs += rng.nextInt(4) === 0 ? -rng.nextInt(3000) : rng.nextInt(1500);
        const clientId = `c${rng.nextInt(7)}`;
        const seq = (seqs.get(clientId) ?? 0) + (rng.nextInt(5) === 0 ? 0 : 1);
        seqs.set(clientId, seq);
        const kind = rng.nextInt(3) === 0 ? 'delete' : 'put';
        const entries =
          rng.nextInt(10) === 0
            ? [log.entry(new Uint8Array([1, 9, 9]))]
            : log.commands({
                kind,
                clientId,
                seq,
                lowestUnanswered: Math.max(0, seq - rng.nextInt(3)),
                proposedAtMs: Math.max(0, clockMs),
                key: `k${rng.nextInt(5)}`,
                value: kind === 'put' ? text.encode(`v${step}`) : null,
              });
        const a = await steady.applyAndPersist(entries);
        const b = await restarted.applyAndPersist(entries);
        expect(b, `step ${step}`).to.deep.equal(a);
        expect(restarted.machine.clockMs, `clock at step ${step}`).to.equal(steady.machine.clockMs);
        for (const write of a.sessions) {
          if (write.record !== null) {
            const stored = decodeSessionRecord(write.record) as SessionRecord;
            lastTouchedMs.set(write.clientId, stored.lastTouchedMs);
          } else if (
            lastTouchedMs.get(write.clientId)! + options.sessionTtlMs <=
            steady.machine.clockMs
          ) {
            expiries++;
          } else {
            evictions++;
          }
        }
        expect(steady.machine.sessionCount).to.be.at.most(options.maxSessions);
        if (rng.nextInt(8) === 0) await restarted.restart();
      }
      expect(expiries, 'sessions expired').to.be.greaterThan(0);
      expect(evictions, 'sessions evicted').to.be.greaterThan(0);
    } catch (error) {
      throw new Error(`seed ${seed}: ${(error as Error).message}`);
    }
  });

  it('expires a session untouched for sessionTtlMs by the log’s clock, which never goes back', async () => {
    const replica = await Replica.create({ sessionTtlMs: 1000 });
    const log = new Log();
    await replica.applyAndPersist(log.commands({ clientId: 'old', proposedAtMs: 5000 }));
    // A proposer with a clock behind: the partition's clock stays at 5000.
    const behind = await replica.machine.apply(log.commands({ clientId: 'b', proposedAtMs: 100 }));
    expect(replica.machine.clockMs).to.equal(5000);
    expect(behind.sessions.map((w) => w.clientId)).to.deep.equal(['b']);
    const justBefore = await replica.machine.apply(
      log.commands({ clientId: 'c', proposedAtMs: 5999 }),
    );
    expect(justBefore.sessions.map((w) => w.clientId)).to.deep.equal(['c']);
    const at = await replica.machine.apply(
      log.commands({ clientId: 'c', seq: 2, proposedAtMs: 6000 }),
    );
    expect(at.sessions).to.deep.equal([
      { clientId: 'old', record: null },
      { clientId: 'b', record: null },
      { clientId: 'c', record: at.sessions[2]!.record },
    ]);
    expect(replica.machine.sessionCount).to.equal(1);
  });

  it('holds at most maxSessions clients, dropping the least recently touched, also after a restart', async () => {
    const replica = await Replica.create({ maxSessions: 3 });
    const log = new Log();
    await replica.applyAndPersist(
      log.commands(
        { clientId: 'z' },
        { clientId: 'a' },
        { clientId: 'm' },
        { clientId: 'z', seq: 2 },
      ),
    );
    // Stored order (by client id) is not the LRU order (a, m, z): the records carry it.
    await replica.restart();
    const output = await replica.machine.apply(log.commands({ clientId: 'n' }));
    expect(output.sessions).to.deep.equal([
      { clientId: 'n', record: output.sessions[0]!.record },
      { clientId: 'a', record: null },
    ]);
    expect(replica.machine.sessionCount).to.equal(3);
  });
});

describe('partition: KV and the overlay', () => {
  it('delete answers whether the key existed: overlay, storage only, absent', async () => {
    const replica = await Replica.create({}, [['stored', 'x']]);
    const log = new Log();
    const output = await replica.machine.apply(
      log.commands(
        { seq: 1, kind: 'delete', key: 'stored' }, // only in storage
        { seq: 2, kind: 'delete', key: 'stored' }, // deleted in the overlay
        { seq: 3, kind: 'delete', key: 'absent' },
        { seq: 4, key: 'fresh' },
        { seq: 5, kind: 'delete', key: 'fresh' }, // only in the overlay
      ),
    );
    expect(resultsOf(output)).to.deep.equal([true, false, false, true, true]);
    expect(output.kv.map((w) => [w.key, w.value === null])).to.deep.equal([
      ['stored', true],
      ['fresh', false],
      ['fresh', true],
    ]);
  });

  it('reads see every applied write; the overlay is dropped only once persisted', async () => {
    const replica = await Replica.create({}, [['k', 'old']]);
    const log = new Log();
    const first = await replica.machine.apply(log.commands({ seq: 1, value: text.encode('new') }));
    expect(await replica.storage.get(GROUP, 'k').then((v) => decoder.decode(v!))).to.equal('old');
    expect(await replica.value('k')).to.equal('new');
    await replica.persist(first);
    expect(replica.machine.overlaySize).to.equal(0);
    const second = await replica.machine.apply(log.commands({ seq: 2, value: text.encode('2') }));
    const third = await replica.machine.apply(log.commands({ seq: 3, kind: 'delete' }));
    // The batch of the second apply becomes durable; the third's delete is not yet.
    await replica.storage.write({ groups: [{ group: GROUP, kv: second.kv }] });
    replica.machine.persisted(second.appliedIndex);
    expect(replica.machine.overlaySize).to.equal(1);
    expect(await replica.value('k')).to.equal(null);
    await replica.persist(third);
    expect(replica.machine.overlaySize).to.equal(0);
    expect(await replica.value('k')).to.equal(null);
    expect(() => replica.machine.persisted(1)).to.throw(/persisted\(1\) outside/);
  });
});

describe('partition: entries', () => {
  it('applies a malformed committed entry as a no-op, the same on every replica', async () => {
    const outputs: ApplyOutput[] = [];
    for (let i = 0; i < 2; i++) {
      const replica = await Replica.create();
      const log = new Log();
      const good = encodeCommand(command({ seq: 1, proposedAtMs: 9000 }));
      const noVersion = good.slice();
      noVersion[0] = 0;
      const output = await replica.machine.apply([
        log.entry(noVersion),
        log.entry(new Uint8Array([0xff])),
        ...log.commands({ kind: 'delete', seq: 1 }),
      ]);
      expect(replica.machine.clockMs, 'an invalid entry does not move the clock').to.equal(1000);
      outputs.push(output);
    }
    const [a, b] = outputs;
    expect(b).to.deep.equal(a);
    expect(a!.results.map((r) => [r.index, r.result])).to.deep.equal([
      [1, 'command_invalid'],
      [2, 'command_invalid'],
      [3, false],
    ]);
    expect(a!.kv).to.deep.equal([]);
    expect(a!.appliedIndex).to.equal(3);
  });

  it('skips empty (leader no-op) and ConfChange entries but counts their indexes', async () => {
    const replica = await Replica.create();
    const log = new Log();
    const output = await replica.machine.apply([
      log.entry(new Uint8Array(0)),
      log.entry(new Uint8Array([8, 1, 2]), EntryType.ConfChange),
      ...log.commands({ seq: 1 }),
    ]);
    expect(output.appliedIndex).to.equal(3);
    expect(output.results.map((r) => r.index)).to.deep.equal([3]);
    expect(replica.machine.appliedIndex).to.equal(3);
  });

  it('refuses entries that do not follow the applied index, and overlapping applies', async () => {
    const replica = await Replica.create();
    await replica.machine.apply(new Log(1).commands({ seq: 1 }));
    let error: unknown = null;
    await replica.machine.apply(new Log(3).commands({ seq: 2 })).catch((e) => {
      error = e;
    });
    expect(String(error)).to.match(/entry 3 applied after 1/);
    expect(() => replica.machine.read('k')).to.throw(/rebuild/);

    const fresh = await Replica.create({}, [['k', 'v']]);
    const log = new Log();
    const pending = fresh.machine.apply(log.commands({ kind: 'delete', seq: 1 }));
    let overlap: unknown = null;
    await fresh.machine.apply(log.commands({ seq: 2 })).catch((e) => {
      overlap = e;
    });
    expect(String(overlap)).to.match(/while another apply/);
    await pending;
  });

  it('applyNow answers at once unless a delete must read storage, with what apply answers', async () => {
    const now = await Replica.create({}, [['stored', 'v']]);
    const later = await Replica.create({}, [['stored', 'v']]);
    const log = () => new Log();
    const batches = (l: Log) => [
      l.commands({ seq: 1, key: 'a' }, { kind: 'delete', seq: 2, key: 'a' }),
      l.commands({ kind: 'delete', seq: 3, key: 'stored' }, { seq: 4, key: 'b' }),
      l.commands({ kind: 'delete', seq: 5, key: 'never' }),
    ];
    const viaApply = [];
    for (const entries of batches(log())) viaApply.push(await later.machine.apply(entries));
    const [first, second, third] = batches(log());
    const sync = now.machine.applyNow(first!);
    expect(sync, 'a put and a delete the overlay answers').not.to.be.instanceOf(Promise);
    const waits = now.machine.applyNow(second!);
    expect(waits, 'a delete of a stored key reads storage').to.be.instanceOf(Promise);
    const rest = [sync, await waits, await now.machine.applyNow(third!)];
    expect(rest).to.deep.equal(viaApply);
    expect(resultsOf(rest[1] as ApplyOutput)).to.deep.equal([true, true]);
    expect(resultsOf(rest[2] as ApplyOutput)).to.deep.equal([false]);
  });

  it('a storage read that fails leaves the machine unusable (the loop rebuilds it)', async () => {
    const machine = new PartitionMachine({
      appliedIndex: 0,
      sessions: new Map(),
      readStored: () => Promise.reject(new Error('disk gone')),
    });
    const log = new Log();
    let error: unknown = null;
    await machine.apply(log.commands({ kind: 'delete', seq: 1 })).catch((e) => {
      error = e;
    });
    expect(String(error)).to.match(/disk gone/);
    expect(() => machine.read('k')).to.throw(/rebuild/);
    expect(() => machine.applyNow(log.commands({ seq: 2 }))).to.throw(/rebuild/);
  });

  it('checks its options', () => {
    const base = { appliedIndex: 0, sessions: new Map(), readStored: async () => null };
    for (const options of [
      { maxSessions: 0 },
      { sessionTtlMs: 1.5 },
      { maxResultsPerSession: 1e6 },
    ]) {
      expect(() => new PartitionMachine({ ...base, options })).to.throw(RangeError);
    }
    const corrupt = new Map([['a', new Uint8Array([1])]]);
    expect(() => new PartitionMachine({ ...base, sessions: corrupt })).to.throw(/corrupt/);
  });
});

describe('partition: the value cache', () => {
  /** A machine over a map as its storage, counting the storage reads. */
  function machineOver(stored: Map<string, string>, options: PartitionOptions = {}) {
    const counter = { reads: 0 };
    const machine = new PartitionMachine({
      appliedIndex: 0,
      sessions: new Map(),
      readStored: async (key) => {
        counter.reads++;
        const value = stored.get(key);
        return value === undefined ? null : text.encode(value);
      },
      options,
    });
    return { machine, counter };
  }

  it('answers a key from memory once read, deletes it without a read, and drops it on a put', async () => {
    const { machine, counter } = machineOver(new Map([['k', 'stored']]));
    expect(decoder.decode((await machine.read('k'))!)).to.equal('stored');
    expect(decoder.decode((await machine.read('k'))!)).to.equal('stored');
    expect(counter.reads).to.equal(1);
    const log = new Log();
    const deleted = await machine.apply(log.commands({ kind: 'delete', seq: 1 }));
    expect(resultsOf(deleted)).to.deep.equal([true]);
    machine.persisted(deleted.appliedIndex); // The overlay is gone; the cache answers.
    expect(await machine.read('k')).to.equal(null);
    expect(counter.reads).to.equal(1);
    const put = await machine.apply(log.commands({ seq: 2 }));
    machine.persisted(put.appliedIndex);
    await machine.read('k'); // From storage again (here a map the applies do not change).
    expect(counter.reads).to.equal(2);
  });

  it('with valueCacheBytes 0 every read goes to storage', async () => {
    const { machine, counter } = machineOver(new Map([['k', 'stored']]), { valueCacheBytes: 0 });
    await machine.read('k');
    await machine.read('k');
    expect(counter.reads).to.equal(2);
  });
});
