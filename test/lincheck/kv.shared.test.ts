import { mulberry32 } from '@meshkv/raft';
import { expect } from 'chai';
import { applyKv, type CheckResult, checkKvHistory, type KvHistoryOp, randomKvCall } from './kv.ts';

/** Shorthands: [client, callMs, returnMs]; `null` result = unknown outcome. */
function put(
  client: string,
  callMs: number,
  returnMs: number,
  key: string,
  value: string,
  known = true,
): KvHistoryOp {
  return {
    client,
    callMs,
    returnMs,
    call: { kind: 'put', key, value },
    result: known ? { kind: 'put' } : null,
  };
}
function get(
  client: string,
  callMs: number,
  returnMs: number,
  key: string,
  value: string | null,
): KvHistoryOp {
  return { client, callMs, returnMs, call: { kind: 'get', key }, result: { kind: 'get', value } };
}
function del(
  client: string,
  callMs: number,
  returnMs: number,
  key: string,
  removed: boolean | null,
): KvHistoryOp {
  return {
    client,
    callMs,
    returnMs,
    call: { kind: 'delete', key },
    result: removed === null ? null : { kind: 'delete', removed },
  };
}

function expectViolation(result: CheckResult): Extract<CheckResult, { kind: 'violation' }> {
  if (result.kind !== 'violation')
    expect.fail(`expected a violation, got ${JSON.stringify(result)}`);
  return result;
}

describe('lincheck: KV histories (WGL per key)', () => {
  it('accepts the empty history and a sequential one', () => {
    expect(checkKvHistory([]).kind).to.equal('ok');
    const result = checkKvHistory([
      get('a', 0, 1, 'k', null),
      put('a', 2, 3, 'k', 'x'),
      get('b', 4, 5, 'k', 'x'),
      del('a', 6, 7, 'k', true),
      del('b', 8, 9, 'k', false),
      get('a', 10, 11, 'k', null),
    ]);
    expect(result).to.deep.include({ kind: 'ok', keys: 1, operations: 6 });
  });

  it('rejects a stale read: a get after an acknowledged put sees the old value', () => {
    const result = expectViolation(
      checkKvHistory([
        put('a', 0, 10, 'k', 'old'),
        put('a', 20, 30, 'k', 'new'),
        get('b', 40, 50, 'k', 'old'),
      ]),
    );
    expect(result.key).to.equal('k');
    // Dropping the first put leaves "old" unexplained too; dropping either other op fixes it.
    expect(result.minimal.map((op) => op.call.kind)).to.deep.equal(['put', 'put', 'get']);
    expect(result.minimalComplete).to.equal(true);
    expect(result.culprit.call.kind).to.equal('get');
    expect(result.report).to.contain('key "k" is not linearizable');
    expect(result.report).to.contain('get("k") -> "old"  <-');
    expect(result.report).to.contain('put("k", "new") -> ok');
    expect(result.report).to.contain('get("k") -> "old"');
  });

  it('rejects a lost write: an acknowledged put is never seen', () => {
    const result = expectViolation(
      checkKvHistory([put('a', 0, 10, 'k', 'v'), get('b', 20, 30, 'k', null)]),
    );
    expect(result.minimal).to.have.length(2);
  });

  it('accepts either order of overlapping operations', () => {
    // put x ‖ put y, then two reads that agree on the later one: y was linearized last.
    const history = [put('a', 0, 10, 'k', 'x'), put('b', 5, 15, 'k', 'y')];
    expect(checkKvHistory([...history, get('c', 20, 25, 'k', 'y')]).kind).to.equal('ok');
    expect(checkKvHistory([...history, get('c', 20, 25, 'k', 'x')]).kind).to.equal('ok');
    // A read overlapping a put may see either the old or the new value.
    expect(checkKvHistory([put('a', 0, 10, 'k', 'x'), get('b', 5, 6, 'k', null)]).kind).to.equal(
      'ok',
    );
    expect(checkKvHistory([put('a', 0, 10, 'k', 'x'), get('b', 5, 6, 'k', 'x')]).kind).to.equal(
      'ok',
    );
  });

  it('rejects reads that see two overlapping puts in both orders', () => {
    const result = expectViolation(
      checkKvHistory([
        put('a', 0, 10, 'k', 'x'),
        put('b', 0, 10, 'k', 'y'),
        get('c', 20, 25, 'k', 'x'),
        get('d', 30, 35, 'k', 'y'),
      ]),
    );
    expect(result.minimal).to.have.length(4);
  });

  it('rejects a new-old inversion between two readers concurrent with a write', () => {
    // Reader c sees the new value and finishes; reader d starts later and sees the old one.
    const result = expectViolation(
      checkKvHistory([
        put('a', 0, 5, 'k', 'old'),
        put('b', 10, 100, 'k', 'new'),
        get('c', 20, 30, 'k', 'new'),
        get('d', 40, 50, 'k', 'old'),
      ]),
    );
    expect(result.minimal).to.have.length(4);
  });

  it('treats touching intervals as concurrent', () => {
    // The put returns at 10 and the get is called at 10: either order is allowed.
    expect(checkKvHistory([put('a', 0, 10, 'k', 'x'), get('b', 10, 12, 'k', null)]).kind).to.equal(
      'ok',
    );
    expect(checkKvHistory([put('a', 0, 10, 'k', 'x'), get('b', 11, 12, 'k', null)]).kind).to.equal(
      'violation',
    );
  });

  it('lets an unknown-outcome put take effect after it timed out, or never', () => {
    const timedOut = put('a', 0, 10, 'k', 'x', false);
    expect(
      checkKvHistory([timedOut, get('b', 20, 25, 'k', null), get('b', 30, 35, 'k', 'x')]).kind,
    ).to.equal('ok');
    expect(checkKvHistory([timedOut, get('b', 20, 25, 'k', null)]).kind).to.equal('ok');
    // But once seen it cannot be un-seen (it takes effect at most once).
    const result = expectViolation(
      checkKvHistory([timedOut, get('b', 20, 25, 'k', 'x'), get('b', 30, 35, 'k', null)]),
    );
    expect(result.report).to.contain('unknown (gave up at 10 ms)');
    // Nor can it take effect before its call.
    expect(
      checkKvHistory([get('b', 0, 5, 'k', 'x'), put('a', 6, 10, 'k', 'x', false)]).kind,
    ).to.equal('violation');
  });

  it('lets an unknown-outcome delete explain a vanished value, but only after its call', () => {
    const history = [put('a', 0, 5, 'k', 'x'), del('a', 10, 20, 'k', null)];
    expect(checkKvHistory([...history, get('b', 30, 35, 'k', null)]).kind).to.equal('ok');
    expect(checkKvHistory([...history, get('b', 30, 35, 'k', 'x')]).kind).to.equal('ok');
    expect(
      checkKvHistory([
        put('a', 0, 5, 'k', 'x'),
        get('b', 6, 8, 'k', null),
        del('a', 10, 20, 'k', null),
      ]).kind,
    ).to.equal('violation');
  });

  it('checks delete results against presence', () => {
    expect(checkKvHistory([del('a', 0, 1, 'k', true)]).kind).to.equal('violation');
    expect(checkKvHistory([put('a', 0, 1, 'k', 'x'), del('a', 2, 3, 'k', false)]).kind).to.equal(
      'violation',
    );
    // Two concurrent deletes of a present key: exactly one removes it.
    const history = [put('a', 0, 1, 'k', 'x')];
    expect(
      checkKvHistory([...history, del('a', 2, 10, 'k', true), del('b', 2, 10, 'k', false)]).kind,
    ).to.equal('ok');
    expect(
      checkKvHistory([...history, del('a', 2, 10, 'k', true), del('b', 2, 10, 'k', true)]).kind,
    ).to.equal('violation');
  });

  it('checks keys independently and names the failing one', () => {
    const result = expectViolation(
      checkKvHistory([
        put('a', 0, 10, 'good', 'x'),
        put('a', 0, 10, 'bad', 'x'),
        get('b', 20, 30, 'good', 'x'),
        get('b', 20, 30, 'bad', 'y'),
      ]),
    );
    expect(result.key).to.equal('bad');
    expect(result.minimal.every((op) => op.call.key === 'bad')).to.equal(true);
  });

  it('does not blame a read of null on a delete it left out', () => {
    // The stale read is the bug; dropping the delete would make the first get fail instead.
    const result = expectViolation(
      checkKvHistory([
        put('a', 0, 10, 'k', 'x'),
        del('a', 20, 30, 'k', true),
        get('b', 40, 50, 'k', null),
        put('a', 60, 70, 'k', 'y'),
        put('a', 80, 90, 'k', 'z'),
        get('b', 100, 110, 'k', 'y'),
      ]),
    );
    expect(result.culprit.returnMs).to.equal(110);
    expect(result.minimal.map((op) => op.callMs)).to.deep.equal([60, 80, 100]);
  });

  it('marks operations still running when the culprit returned', () => {
    const result = expectViolation(
      checkKvHistory([
        put('a', 0, 5, 'k', 'y'),
        put('c', 1, 500, 'k', 'v'), // returns long after the failing read
        get('b', 10, 20, 'k', 'v'),
        get('b', 30, 40, 'k', 'y'),
      ]),
    );
    expect(result.culprit.callMs).to.equal(30);
    expect(result.minimal).to.have.length(4);
    expect(result.report).to.contain('put("k", "v") -> still running at 40 ms');
  });

  it('shrinks a long failing history to the few operations that conflict', () => {
    const history: KvHistoryOp[] = [];
    for (let i = 0; i < 200; i++) history.push(put('a', i * 10, i * 10 + 5, 'k', `v${i}`));
    history.push(get('b', 3000, 3005, 'k', 'v17')); // stale: v199 was acknowledged last
    const result = expectViolation(checkKvHistory(history));
    expect(result.minimalComplete).to.equal(true);
    expect(result.minimal.map((op) => op.call.kind)).to.deep.equal(['put', 'put', 'get']);
    expect(result.minimal[0]!.call).to.deep.include({ value: 'v17' });
  });

  it('rejects malformed histories and reports an exhausted budget as unknown', () => {
    const bad: KvHistoryOp = { ...put('a', 0, 1, 'k', 'x'), result: { kind: 'get', value: null } };
    expect(() => checkKvHistory([bad])).to.throw('a put call has a get result');
    expect(() => checkKvHistory([put('a', 5, 1, 'k', 'x')])).to.throw(
      'returnMs 1 is before callMs 5',
    );
    // 12 mutually concurrent puts and a read at the end: the search needs more than 10 steps.
    const history = Array.from({ length: 12 }, (_, i) => put(`c${i}`, 0, 100, 'k', `v${i}`));
    history.push(get('r', 200, 201, 'k', 'v3'));
    expect(checkKvHistory(history, { maxSteps: 10 })).to.deep.include({
      kind: 'unknown',
      key: 'k',
    });
    expect(checkKvHistory(history).kind).to.equal('ok');
    let fakeNowMs = 0;
    const slowClock = () => (fakeNowMs += 1000);
    const many = Array.from({ length: 18 }, (_, i) => put(`c${i}`, 0, 100, 'k', `v${i}`));
    many.push(get('r', 200, 201, 'k', 'nobody wrote this'));
    expect(checkKvHistory(many, { timeBudgetMs: 1, nowMs: slowClock }).kind).to.equal('unknown');
  });

  it('checks a large random linearizable history within a step bound', () => {
    const seed = 20261122;
    const history = randomLinearizableHistory(seed, { clients: 8, keys: 4, operations: 20_000 });
    const result = checkKvHistory(history);
    if (result.kind !== 'ok') expect.fail(`seed ${seed}: ${JSON.stringify(result).slice(0, 2000)}`);
    // Memoization keeps the search near-linear; an exponential blow-up would need far more.
    expect(result.steps, `seed ${seed}`).to.be.below(20 * history.length);
    expect(history.some((op) => op.result === null)).to.equal(true);
  });

  it('finds a read of a never-written value planted in a large random history', () => {
    const seed = 7;
    const history = randomLinearizableHistory(seed, { clients: 6, keys: 3, operations: 2_000 });
    // The last read in the history (ES2022 has no findLastIndex).
    const victim = history.map((op) => op.result?.kind).lastIndexOf('get');
    const op = history[victim]!;
    history[victim] = { ...op, result: { kind: 'get', value: 'never written' } };
    const result = expectViolation(checkKvHistory(history));
    expect(result.key, `seed ${seed}`).to.equal(op.call.key);
    expect(result.culprit, `seed ${seed}`).to.equal(history[victim]);
    expect(result.minimal, `seed ${seed}`).to.deep.equal([history[victim]]);
  });
});

/**
 * A history produced by a linearizable store: every client runs operations one after
 * another, each taking effect at a random instant between its call and return, applied to
 * the sequential model in that order. About 2% of operations time out: their result is
 * dropped, and they take effect or not at random.
 */
function randomLinearizableHistory(
  seed: number,
  shape: { clients: number; keys: number; operations: number },
): KvHistoryOp[] {
  const prng = mulberry32(seed);
  interface Planned {
    op: Omit<KvHistoryOp, 'result'>;
    effectMs: number;
    takesEffect: boolean;
    timedOut: boolean;
  }
  const planned: Planned[] = [];
  const clientNowMs = new Array<number>(shape.clients).fill(0);
  for (let i = 0; i < shape.operations; i++) {
    const client = i % shape.clients;
    const call = randomKvCall(prng, `k${prng.nextInt(shape.keys)}`, `v${i}`);
    // Distinct fractional effect times give the store a single total order.
    const callMs = clientNowMs[client]! + prng.nextInt(20);
    const effectMs = callMs + prng.nextInt(30) + i / (shape.operations + 1);
    const returnMs = Math.ceil(effectMs) + prng.nextInt(30);
    clientNowMs[client] = returnMs + 1;
    const timedOut = prng.nextInt(50) === 0;
    const takesEffect = !timedOut || prng.nextInt(2) === 0;
    planned.push({
      op: { client: `c${client}`, callMs, returnMs, call },
      effectMs,
      takesEffect,
      timedOut,
    });
  }
  const state = new Map<string, string | null>();
  const results = new Map<Planned, KvHistoryOp['result']>();
  for (const p of [...planned].sort((a, b) => a.effectMs - b.effectMs)) {
    if (!p.takesEffect) continue;
    const applied = applyKv(state.get(p.op.call.key) ?? null, p.op.call);
    state.set(p.op.call.key, applied.state);
    results.set(p, applied.result);
  }
  return planned.map((p) => ({ ...p.op, result: p.timedOut ? null : results.get(p)! }));
}
