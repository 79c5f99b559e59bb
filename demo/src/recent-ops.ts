/**
 * The operations this page ran (console and load button), kept for the last WINDOW_MS:
 * throughput and latency percentiles for the "Recent operations" panel.
 */
export type OpKind = 'put' | 'get' | 'delete';

export interface OpRecord {
  readonly kind: OpKind;
  /** performance.now() when it ended. */
  readonly endedAtMs: number;
  readonly latencyMs: number;
  /** The error code, or null for a success. */
  readonly error: string | null;
}

export interface OpSummary {
  readonly kind: OpKind;
  readonly count: number;
  readonly opsPerSecond: number;
  readonly p50Ms: number | undefined;
  readonly p99Ms: number | undefined;
  readonly maxMs: number | undefined;
  readonly errors: number;
}

/** Operations older than this are forgotten. */
export const WINDOW_MS = 30_000;
/** At most this many are kept (a load burst runs hundreds). */
const MAX_RECORDS = 5_000;

export class RecentOps {
  private records: OpRecord[] = [];

  add(record: OpRecord): void {
    this.records.push(record);
    if (this.records.length > MAX_RECORDS)
      this.records.splice(0, this.records.length - MAX_RECORDS);
  }

  /** Per kind, over the operations that ended in the last WINDOW_MS before `nowMs`. */
  summary(nowMs: number): OpSummary[] {
    const since = nowMs - WINDOW_MS;
    let first = 0;
    while (first < this.records.length && this.records[first]!.endedAtMs < since) first++;
    if (first > 0) this.records = this.records.slice(first);
    return (['put', 'get', 'delete'] as const).map((kind) => {
      const ops = this.records.filter((r) => r.kind === kind);
      const latencies = ops
        .filter((r) => r.error === null)
        .map((r) => r.latencyMs)
        .sort((a, b) => a - b);
      const spanMs = ops.length === 0 ? WINDOW_MS : Math.max(1_000, nowMs - ops[0]!.endedAtMs);
      return {
        kind,
        count: ops.length,
        opsPerSecond: (ops.length * 1000) / spanMs,
        p50Ms: percentile(latencies, 0.5),
        p99Ms: percentile(latencies, 0.99),
        maxMs: latencies[latencies.length - 1],
        errors: ops.length - latencies.length,
      };
    });
  }
}

/** The nearest-rank percentile of ascending `sorted`; undefined when empty. */
export function percentile(sorted: readonly number[], fraction: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)];
}
