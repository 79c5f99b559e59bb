/**
 * Linearizability of a meshkv client history: put(key, value) → ok, get(key) → value or
 * null, delete(key) → removed. Checked one key at a time (each key is an independent
 * register, so the history is linearizable iff every key's sub-history is), with a budget
 * shared by all keys; a violation comes with the failing key's minimal sub-history.
 *
 * Isomorphic: no Node built-ins, so it runs in Chromium too.
 */
import type { Prng } from '@meshkv/raft';
import { type Model, type Operation, type SearchResult, searchLinearization } from './wgl.ts';

/** An operation as issued; `V` is the value type (the checker substitutes some values). */
export type KvCallOf<V> =
  | { readonly kind: 'put'; readonly key: string; readonly value: V }
  | { readonly kind: 'get'; readonly key: string }
  | { readonly kind: 'delete'; readonly key: string };
export type KvCall = KvCallOf<string>;

export type KvResultOf<V> =
  | { readonly kind: 'put' }
  | { readonly kind: 'get'; readonly value: V | null }
  | { readonly kind: 'delete'; readonly removed: boolean };
export type KvResult = KvResultOf<string>;

/** One client operation as a client saw it. Times are on one clock shared by all clients. */
export interface KvHistoryOp {
  /** Who issued it (only for the report). */
  readonly client: string;
  readonly callMs: number;
  /** When the client got its answer or gave up waiting. */
  readonly returnMs: number;
  readonly call: KvCall;
  /**
   * What the client got, or null when the outcome is unknown (timed out, connection lost):
   * the operation may take effect at any time after `callMs` — even after `returnMs` — or
   * never.
   */
  readonly result: KvResult | null;
}

/**
 * The sequential specification of one key whose value is `state` (null: absent). Exported
 * for generators of valid histories.
 */
export function applyKv<V>(
  state: V | null,
  call: KvCallOf<V>,
): { state: V | null; result: KvResultOf<V> } {
  switch (call.kind) {
    case 'put':
      return { state: call.value, result: { kind: 'put' } };
    case 'get':
      return { state, result: { kind: 'get', value: state } };
    case 'delete':
      return { state: null, result: { kind: 'delete', removed: state !== null } };
  }
}

/** A random operation on `key` for workload generators: 40% put(key, value), 40% get, 20% delete. */
export function randomKvCall(prng: Prng, key: string, value: string): KvCall {
  const roll = prng.nextInt(10);
  if (roll < 4) return { kind: 'put', key, value };
  return roll < 8 ? { kind: 'get', key } : { kind: 'delete', key };
}

/**
 * Stands for every value that no get of the key returned. Such values are interchangeable
 * (only a delete's `removed` sees them, and only as "present"), so writing them all as one
 * lets memoization merge configurations that differ only in which unread value is stored.
 */
const UNREAD: unique symbol = Symbol('unread');
type ModelValue = string | typeof UNREAD;

const keyModel: Model<ModelValue | null, KvCallOf<ModelValue>, KvResult> = {
  init: null,
  step(state, call, observed) {
    const expected = applyKv(state, call);
    if (observed === undefined || sameResult(observed, expected.result)) {
      return { state: expected.state };
    }
    return undefined;
  },
  // The leading character keeps the absent key and the unread value apart from any string.
  stateKey: (state) => (state === null ? '-' : state === UNREAD ? '*' : `+${state}`),
  inputKey: (call) =>
    call.kind === 'put' ? (call.value === UNREAD ? 'put*' : `put+${call.value}`) : call.kind,
};

function sameResult(a: KvResult, b: KvResultOf<ModelValue>): boolean {
  switch (a.kind) {
    case 'put':
      return b.kind === 'put';
    case 'get':
      return b.kind === 'get' && a.value === b.value;
    case 'delete':
      return b.kind === 'delete' && a.removed === b.removed;
  }
}

export interface CheckOptions {
  /** Search steps for the whole history, all keys together. Default 20 million. */
  readonly maxSteps?: number;
  /** Wall-clock budget for the whole check, minimization included. Default: none. */
  readonly timeBudgetMs?: number;
  /** Clock for `timeBudgetMs`; defaults to Date.now. */
  readonly nowMs?: () => number;
  /** Linearizability checks spent shrinking a violation to a minimal one. Default 2000. */
  readonly maxMinimizeChecks?: number;
}

export type CheckResult =
  | {
      readonly kind: 'ok';
      readonly keys: number;
      readonly operations: number;
      readonly steps: number;
    }
  | {
      readonly kind: 'violation';
      readonly key: string;
      /**
       * The first operation of `key` whose result no linearization explains: the history
       * as observed when it returned (operations still running then count as unknown
       * outcomes) is not linearizable, while the history observed just before is.
       */
      readonly culprit: KvHistoryOp;
      /**
       * A failing sub-history of that observed history that needs `culprit` and keeps the
       * writes its reads saw, and loses one of these if any operation is removed (when
       * `minimalComplete`). Operations still running when `culprit` returned have a null
       * result here.
       */
      readonly minimal: readonly KvHistoryOp[];
      /** Whether minimization ran to the end (else `minimal` is failing but maybe not minimal). */
      readonly minimalComplete: boolean;
      readonly report: string;
    }
  | { readonly kind: 'unknown'; readonly key: string; readonly reason: string };

const DEFAULT_MAX_STEPS = 20_000_000;
const DEFAULT_MAX_MINIMIZE_CHECKS = 2000;

/** Checks a whole client history. Throws on a malformed history (a result of the wrong kind). */
export function checkKvHistory(
  history: readonly KvHistoryOp[],
  options: CheckOptions = {},
): CheckResult {
  const byKey = new Map<string, KvHistoryOp[]>();
  history.forEach((op, i) => {
    if (op.result !== null && op.result.kind !== op.call.kind) {
      throw new Error(`history[${i}]: a ${op.call.kind} call has a ${op.result.kind} result`);
    }
    const ops = byKey.get(op.call.key);
    if (ops === undefined) byKey.set(op.call.key, [op]);
    else ops.push(op);
  });

  const nowMs = options.nowMs ?? Date.now;
  const deadlineMs =
    options.timeBudgetMs === undefined ? undefined : nowMs() + options.timeBudgetMs;
  let stepsLeft = options.maxSteps ?? DEFAULT_MAX_STEPS;
  let steps = 0;
  let firstUnknown: { key: string; reason: string } | undefined;
  for (const [key, ops] of byKey) {
    const result = searchKey(ops, stepsLeft, deadlineMs, nowMs);
    steps += result.steps;
    stepsLeft = Math.max(0, stepsLeft - result.steps);
    if (result.kind === 'violation') {
      return explainViolation(key, ops, {
        maxChecks: options.maxMinimizeChecks ?? DEFAULT_MAX_MINIMIZE_CHECKS,
        deadlineMs,
        nowMs,
      });
    }
    // Keep looking: a violation on a later key is a definite answer.
    if (result.kind === 'unknown' && firstUnknown === undefined) {
      firstUnknown = { key, reason: result.reason };
    }
  }
  if (firstUnknown !== undefined) return { kind: 'unknown', ...firstUnknown };
  return { kind: 'ok', keys: byKey.size, operations: history.length, steps };
}

function searchKey(
  ops: readonly KvHistoryOp[],
  maxSteps: number,
  deadlineMs: number | undefined,
  nowMs: () => number,
): SearchResult {
  const readValues = new Set<string | null>();
  for (const { result } of ops) if (result?.kind === 'get') readValues.add(result.value);
  const operations: Operation<KvCallOf<ModelValue>, KvResult>[] = [];
  for (const op of ops) {
    // A get with an unknown outcome constrains nothing and changes nothing.
    if (op.result === null && op.call.kind === 'get') continue;
    const input: KvCallOf<ModelValue> =
      op.call.kind === 'put' && !readValues.has(op.call.value)
        ? { kind: 'put', key: op.call.key, value: UNREAD }
        : op.call;
    operations.push({
      callMs: op.callMs,
      returnMs: op.returnMs,
      input,
      output: op.result ?? undefined,
    });
  }
  const timeBudgetMs = deadlineMs === undefined ? undefined : Math.max(0, deadlineMs - nowMs());
  return searchLinearization(keyModel, operations, { maxSteps, timeBudgetMs, nowMs });
}

/** Steps for one check while explaining a violation (small histories need few). */
const EXPLAIN_CHECK_MAX_STEPS = 200_000;

interface ExplainBudget {
  readonly maxChecks: number;
  readonly deadlineMs: number | undefined;
  readonly nowMs: () => number;
}

/**
 * Turns "key K is not linearizable" into something a person can read:
 *
 * 1. The culprit. The history observed at time T keeps the operations called by T, with
 *    the results of those still running at T unknown. Linearizability is prefix-closed, so
 *    failing is monotone in T; a binary search over return times finds the first T that
 *    fails and the operation that returned then.
 * 2. A minimal sub-history of that observed history (Zeller's ddmin, complement-only):
 *    drop chunks while the rest still fails, halving the chunk down to one operation. A
 *    candidate must keep the culprit and fail only because of it (without the culprit it
 *    passes), and keep the writes its reads saw; otherwise dropping, say, the delete
 *    between a put and a read of null would "fail" for a reason that is not the bug.
 *
 * A check that runs out of budget counts as "passes", so `minimal` always fails.
 */
function explainViolation(
  key: string,
  ops: readonly KvHistoryOp[],
  budget: ExplainBudget,
): Extract<CheckResult, { kind: 'violation' }> {
  let checks = 0;
  const fails = (candidate: readonly KvHistoryOp[]): boolean => {
    checks++;
    return (
      searchKey(candidate, EXPLAIN_CHECK_MAX_STEPS, budget.deadlineMs, budget.nowMs).kind ===
      'violation'
    );
  };
  const outOfBudget = (): boolean =>
    checks >= budget.maxChecks ||
    (budget.deadlineMs !== undefined && budget.nowMs() > budget.deadlineMs);

  // 1. The first return time at which the observed history fails.
  const returnTimes = [
    ...new Set(ops.flatMap((op) => (op.result === null ? [] : [op.returnMs]))),
  ].sort((a, b) => a - b);
  let low = 0;
  let high = returnTimes.length - 1; // the whole history fails
  while (low < high && !outOfBudget()) {
    const middle = (low + high) >> 1;
    if (fails(observedAt(ops, returnTimes[middle]!))) high = middle;
    else low = middle + 1;
  }
  const cutMs = returnTimes[high]!;
  const observed = observedAt(ops, cutMs);
  // Among operations returning at cutMs, the culprit is one without which it passes.
  const returning = observed.filter((op) => op.result !== null && op.returnMs === cutMs);
  const culprit =
    returning.find((op) => !outOfBudget() && !fails(observed.filter((o) => o !== op))) ??
    returning[0]!;

  // 2. ddmin over the other operations.
  const writtenValues = new Set(
    ops.flatMap((op) => (op.call.kind === 'put' ? [op.call.value] : [])),
  );
  const keepsObservedWrites = (candidate: readonly KvHistoryOp[]): boolean => {
    const written = new Set(
      candidate.flatMap((op) => (op.call.kind === 'put' ? [op.call.value] : [])),
    );
    return candidate.every(
      ({ result }) =>
        result?.kind !== 'get' ||
        result.value === null ||
        written.has(result.value) ||
        !writtenValues.has(result.value),
    );
  };
  const acceptable = (others: readonly KvHistoryOp[]): boolean =>
    keepsObservedWrites([...others, culprit]) && fails([...others, culprit]) && !fails(others);
  let others = observed.filter((op) => op !== culprit);
  let chunk = Math.max(1, others.length >> 1);
  let complete = false;
  for (;;) {
    let removedAny = false;
    for (let start = 0; start < others.length && !outOfBudget(); ) {
      const candidate = [...others.slice(0, start), ...others.slice(start + chunk)];
      if (acceptable(candidate)) {
        others = candidate;
        removedAny = true;
      } else {
        start += chunk;
      }
    }
    if (outOfBudget()) break;
    if (chunk > 1) chunk = Math.max(1, chunk >> 1);
    else if (!removedAny) {
      complete = true;
      break;
    }
  }
  const minimal = [...others, culprit].sort(
    (a, b) => a.callMs - b.callMs || a.returnMs - b.returnMs,
  );
  const lines = [
    `key ${quote(key)} is not linearizable (${ops.length} operations on it). The first result ` +
      `no order explains is marked "<-"; ${complete ? 'a minimal' : 'a partly minimized'} ` +
      `set of operations that shows it, as observed at ${cutMs} ms:`,
    ...minimal.map((op) => `  ${describeOp(op, cutMs)}${op === culprit ? '  <-' : ''}`),
    'The key starts absent. Each operation takes effect once between its call and its ' +
      'return; one with an unknown outcome any time after its call, or never.',
  ];
  return {
    kind: 'violation',
    key,
    culprit,
    minimal,
    minimalComplete: complete,
    report: lines.join('\n'),
  };
}

/**
 * What an observer knew at `cutMs`: the operations called by then, with an unknown outcome
 * for those that had not returned.
 */
function observedAt(ops: readonly KvHistoryOp[], cutMs: number): KvHistoryOp[] {
  return ops
    .filter((op) => op.callMs <= cutMs)
    .map((op) => (op.result !== null && op.returnMs > cutMs ? { ...op, result: null } : op));
}

/** One line per operation; `observedAtMs`: results after it show as "still running". */
export function describeOp(op: KvHistoryOp, observedAtMs = Number.POSITIVE_INFINITY): string {
  const stillRunning = op.result === null && op.returnMs > observedAtMs;
  const span =
    op.result === null ? `[${op.callMs} ms .. ∞)` : `[${op.callMs} ms .. ${op.returnMs} ms]`;
  const call =
    op.call.kind === 'put'
      ? `put(${quote(op.call.key)}, ${quote(op.call.value)})`
      : `${op.call.kind}(${quote(op.call.key)})`;
  const result = stillRunning ? `still running at ${observedAtMs} ms` : describeResult(op);
  return `${op.client.padEnd(8)} ${span.padEnd(24)} ${call} -> ${result}`;
}

function describeResult(op: KvHistoryOp): string {
  const { result } = op;
  if (result === null) return `unknown (gave up at ${op.returnMs} ms)`;
  switch (result.kind) {
    case 'put':
      return 'ok';
    case 'get':
      return result.value === null ? 'null' : quote(result.value);
    case 'delete':
      return result.removed ? 'removed' : 'not found';
  }
}

const MAX_QUOTED_CHARS = 40;
function quote(text: string): string {
  const json = JSON.stringify(text);
  return json.length <= MAX_QUOTED_CHARS ? json : `${json.slice(0, MAX_QUOTED_CHARS - 4)}…"`;
}
