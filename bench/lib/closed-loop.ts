// The benchmarks' closed loop, the same in Node and in a page (no Node or DOM API):
// N requests in flight, each worker issuing the next as soon as its last one answered,
// spread over the endpoints in turn, keys cycling. After a warm-up it measures: ops/s and
// wall-clock latency quantiles of the requests started inside the measured window.

/** The value every benchmark writes: the same bytes in every process and page. */
export function patternValue(bytes: number): Uint8Array {
  const value = new Uint8Array(bytes);
  for (let i = 0; i < value.length; i++) value[i] = (i * 131 + 7) & 0xff;
  return value;
}

/** The key names: `keys` of them, the workload's key numbers index into them. */
export function keyNames(keys: number): string[] {
  return Array.from({ length: keys }, (_, i) => `bench-${i}`);
}

/** One request: resolves with an error message, or null when it succeeded. */
export type Call = (endpoint: number, key: number) => Promise<string | null>;

export interface LoopSpec {
  readonly endpoints: number;
  readonly keys: number;
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly measureMs: number;
}

export interface LoopResult {
  /** Requests started in the measured window that succeeded. */
  readonly ops: number;
  readonly errors: number;
  readonly firstError: string | null;
  readonly wallSeconds: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

/** Told when the measured window opens and when the last measured request answered. */
export interface LoopMarks {
  measure(): void;
  done(): void;
}

interface Errors {
  count: number;
  first: string | null;
}

async function loop(
  call: Call,
  spec: LoopSpec,
  concurrency: number,
  keys: { next: number; readonly stop: number },
  untilMs: number,
  measureFromMs: number,
  latencies: number[],
  errors: Errors,
): Promise<void> {
  let endpoint = 0;
  const worker = async () => {
    for (;;) {
      const startMs = performance.now();
      if (startMs >= untilMs || keys.next >= keys.stop) return;
      const key = keys.next++ % spec.keys;
      const error = await call(endpoint++ % spec.endpoints, key);
      if (startMs < measureFromMs) continue;
      if (error === null) latencies.push(performance.now() - startMs);
      else {
        errors.count++;
        errors.first ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/** Writes every key once, `concurrency` at a time (untimed); throws on the first failure. */
export async function fillKeys(call: Call, spec: LoopSpec, concurrency: number): Promise<void> {
  const errors: Errors = { count: 0, first: null };
  await loop(call, spec, concurrency, { next: 0, stop: spec.keys }, Infinity, 0, [], errors);
  if (errors.count > 0) throw new Error(`filling failed (${errors.count}): ${errors.first}`);
}

/** Warms up, then measures `call` at `spec.concurrency` in flight. */
export async function measureLoop(
  call: Call,
  spec: LoopSpec,
  marks: LoopMarks,
): Promise<LoopResult> {
  const errors: Errors = { count: 0, first: null };
  const latencies: number[] = [];
  const measureFromMs = performance.now() + spec.warmupMs;
  const untilMs = measureFromMs + spec.measureMs;
  const measuring = setTimeout(marks.measure, Math.max(0, measureFromMs - performance.now()));
  const keys = { next: 0, stop: Infinity };
  await loop(call, spec, spec.concurrency, keys, untilMs, measureFromMs, latencies, errors);
  clearTimeout(measuring);
  const wallSeconds = (performance.now() - measureFromMs) / 1000;
  marks.done();
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return {
    ops: latencies.length,
    errors: errors.count,
    firstError: errors.first,
    wallSeconds,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    maxMs: latencies[latencies.length - 1] ?? NaN,
  };
}
