/**
 * Linearizability of one history against a sequential model: the Wing & Gong search with
 * Lowe's memoization of (linearized set, model state), as in porcupine (Athalye). The
 * checker is model-agnostic; kv.ts instantiates it for meshkv's put/get/delete, one key at
 * a time (linearizability is compositional, Herlihy & Wing's P-compositionality).
 *
 * Isomorphic: no Node built-ins, so it runs in Chromium too.
 */

/** A sequential specification. */
export interface Model<State, Input, Output> {
  readonly init: State;
  /**
   * Applies `input` to `state` and returns the next state if the operation could have
   * produced `output` there, or `undefined` if it could not. `output === undefined` means
   * the outcome is unknown: any output is acceptable.
   */
  step(state: State, input: Input, output: Output | undefined): { state: State } | undefined;
  /** Equal states give equal keys: the memoization key of a state. */
  stateKey(state: State): string;
  /**
   * Optional: equal keys for inputs with the same effect on every state. Unknown-outcome
   * operations with equal input keys are interchangeable, so the search linearizes them
   * only in call order (symmetry reduction).
   */
  inputKey?(input: Input): string;
}

/**
 * One operation of a history.
 *
 * Operation a precedes b in real time iff `a.returnMs < b.callMs`; equal times count as
 * concurrent (the permissive reading, sound when a clock cannot order two events).
 */
export interface Operation<Input, Output> {
  readonly callMs: number;
  /** When the caller got its answer; ignored when the outcome is unknown. */
  readonly returnMs: number;
  readonly input: Input;
  /**
   * The observed result, or `undefined` when the outcome is unknown (the caller timed out):
   * the operation may then take effect at any point after its call, or never.
   */
  readonly output: Output | undefined;
}

export interface Budget {
  /** Search steps (one per candidate operation tried or backtrack) before giving up. */
  readonly maxSteps: number;
  /** Wall-clock milliseconds before giving up; checked every few thousand steps. */
  readonly timeBudgetMs?: number;
  /** Clock for `timeBudgetMs`, injectable for tests; defaults to Date.now. */
  readonly nowMs?: () => number;
}

export type SearchResult =
  | { readonly kind: 'ok'; readonly steps: number }
  | { readonly kind: 'violation'; readonly steps: number }
  | { readonly kind: 'unknown'; readonly steps: number; readonly reason: string };

const NONE = -1;
/** How often (in steps) the wall clock is consulted. */
const CLOCK_CHECK_INTERVAL_STEPS = 4096;

/**
 * Decides whether `ops` is linearizable with respect to `model`.
 *
 * Events live in a doubly linked list sorted by time (calls before returns at equal
 * times); an operation is "lifted" out of the list when it is linearized and put back on
 * backtrack. An unknown-outcome operation's return sits at +∞, after every known return,
 * so it can be linearized anywhere after its call; reaching such a return means every
 * known operation is linearized, and leaving the rest out is the "never happened" case.
 */
export function searchLinearization<State, Input, Output>(
  model: Model<State, Input, Output>,
  ops: readonly Operation<Input, Output>[],
  budget: Budget,
): SearchResult {
  const n = ops.length;
  if (n === 0) return { kind: 'ok', steps: 0 };
  // Node 2i is op i's call, 2i+1 its return, 2n the list head.
  const head = 2 * n;
  const timeOf = (node: number): number => {
    const op = ops[node >> 1]!;
    if ((node & 1) === 0) return op.callMs;
    return op.output === undefined ? Number.POSITIVE_INFINITY : op.returnMs;
  };
  for (let i = 0; i < n; i++) {
    const op = ops[i]!;
    if (!Number.isFinite(op.callMs)) throw new Error(`operation ${i}: callMs must be finite`);
    if (op.output !== undefined && !(op.returnMs >= op.callMs)) {
      throw new Error(`operation ${i}: returnMs ${op.returnMs} is before callMs ${op.callMs}`);
    }
  }
  const order = Array.from({ length: 2 * n }, (_, node) => node);
  order.sort((a, b) => {
    const dt = timeOf(a) - timeOf(b);
    if (dt !== 0 && !Number.isNaN(dt)) return dt;
    const kind = (a & 1) - (b & 1); // calls (even) first: equal times are concurrent
    return kind !== 0 ? kind : a - b;
  });
  const next = new Int32Array(2 * n + 1).fill(NONE);
  const prev = new Int32Array(2 * n + 1).fill(NONE);
  let last = head;
  for (const node of order) {
    next[last] = node;
    prev[node] = last;
    last = node;
  }

  const unlink = (node: number): void => {
    next[prev[node]!] = next[node]!;
    if (next[node] !== NONE) prev[next[node]!] = prev[node]!;
  };
  const relink = (node: number): void => {
    next[prev[node]!] = node;
    if (next[node] !== NONE) prev[next[node]!] = node;
  };

  // Memoization (Lowe): a configuration is the set of linearized operations plus the model
  // state; one already explored never needs exploring again. Refined for unknown outcomes:
  // (S, state) is also subsumed by an explored (S', state) where S' differs from S only by
  // lacking some unknown-outcome operations, since whatever S can still do, S' can too by
  // leaving those operations out ("never happened"). Without this, k pending timed-out
  // writes make 2^k configurations.
  const words = (n + 31) >>> 5;
  const linearized = new Uint32Array(words);
  const unknownMask = new Uint32Array(words);
  // Zobrist hashing of the known-outcome part of the set: O(1) update per lift/unlift.
  const zobrist = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    if (ops[i]!.output === undefined) unknownMask[i >>> 5]! |= 1 << (i & 31);
    else zobrist[i] = mix32(i + 1);
  }
  // Symmetry reduction: an unknown-outcome operation waits for the previous one (in call
  // order) with the same input key. Exchanging two such operations changes no result, and
  // the earlier-called one can take effect wherever the later one can.
  const previousTwin = new Int32Array(n).fill(NONE);
  if (model.inputKey !== undefined) {
    const lastByInput = new Map<string, number>();
    for (const node of order) {
      const i = node >> 1;
      if ((node & 1) !== 0 || ops[i]!.output !== undefined) continue;
      const key = model.inputKey(ops[i]!.input);
      previousTwin[i] = lastByInput.get(key) ?? NONE;
      lastByInput.set(key, i);
    }
  }
  const isLinearized = (op: number): boolean => (linearized[op >>> 5]! & (1 << (op & 31))) !== 0;
  let setHash = 0;
  const cache = new Map<string, Uint32Array[]>();
  const remember = (stateKey: string): boolean => {
    const key = `${setHash}|${stateKey}`;
    const seen = cache.get(key);
    if (seen === undefined) {
      cache.set(key, [linearized.slice()]);
      return true;
    }
    for (const bits of seen) if (subsumes(bits, linearized, unknownMask)) return false;
    seen.push(linearized.slice());
    return true;
  };
  const toggle = (op: number): void => {
    linearized[op >>> 5]! ^= 1 << (op & 31);
    setHash ^= zobrist[op]!;
  };

  const stackOp: number[] = [];
  const stackState: State[] = [];
  let state = model.init;
  let node = next[head]!;
  let steps = 0;
  const nowMs = budget.nowMs ?? Date.now;
  const deadlineMs =
    budget.timeBudgetMs === undefined ? Number.POSITIVE_INFINITY : nowMs() + budget.timeBudgetMs;

  // Candidates at a configuration are the calls before the first remaining return. Known
  // operations are tried before unknown ones: configurations with fewer unknown operations
  // linearized then come first, and the subsumption above prunes the others.
  let unknownPhase = false;
  while (node !== NONE) {
    steps++;
    if (steps > budget.maxSteps) {
      return { kind: 'unknown', steps, reason: `step budget of ${budget.maxSteps} exceeded` };
    }
    if (steps % CLOCK_CHECK_INTERVAL_STEPS === 0 && nowMs() > deadlineMs) {
      return {
        kind: 'unknown',
        steps,
        reason: `time budget of ${budget.timeBudgetMs} ms exceeded`,
      };
    }
    const opIndex = node >> 1;
    const op = ops[opIndex]!;
    if ((node & 1) === 0) {
      const twin = previousTwin[opIndex]!;
      const stepped =
        (op.output === undefined) !== unknownPhase || (twin !== NONE && !isLinearized(twin))
          ? undefined
          : model.step(state, op.input, op.output);
      if (stepped !== undefined) {
        toggle(opIndex);
        if (remember(model.stateKey(stepped.state))) {
          stackOp.push(opIndex);
          stackState.push(state);
          state = stepped.state;
          unlink(node);
          unlink(node + 1);
          node = next[head]!;
          unknownPhase = false;
          continue;
        }
        toggle(opIndex);
      }
      node = next[node]!;
    } else if (op.output === undefined) {
      // Only unknown-outcome operations remain: leave them out ("never happened").
      return { kind: 'ok', steps };
    } else if (!unknownPhase) {
      unknownPhase = true;
      node = next[head]!;
    } else {
      // A known operation returned before being linearized: undo the last choice.
      const undone = stackOp.pop();
      if (undone === undefined) return { kind: 'violation', steps };
      state = stackState.pop()!;
      toggle(undone);
      relink(2 * undone + 1);
      relink(2 * undone);
      node = next[2 * undone]!;
      unknownPhase = ops[undone]!.output === undefined;
    }
  }
  return { kind: 'ok', steps };
}

/** Whether `explored` ⊆ `candidate` and everything only in `candidate` is in `unknownMask`. */
function subsumes(
  explored: Uint32Array,
  candidate: Uint32Array,
  unknownMask: Uint32Array,
): boolean {
  for (let i = 0; i < explored.length; i++) {
    const e = explored[i]!;
    const c = candidate[i]!;
    if ((e & ~c) !== 0 || ((e ^ c) & ~unknownMask[i]!) !== 0) return false;
  }
  return true;
}

/** A 32-bit integer hash (murmur3's finalizer): spreads consecutive indexes apart. */
function mix32(x: number): number {
  let h = x | 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}
