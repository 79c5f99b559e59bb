/**
 * The command line of the benches that compare meshkv with etcd row by row (`pnpm bench
 * cluster`, `pnpm bench browser`): `--ops a,b`, `--concurrency 1,16`, `--seconds S`,
 * `--warmup S`, `--partitions Q`, `--profile` (a flag, or with a folder), `--no-etcd`, and
 * `--http-floor` where the bench has it.
 * Parsed with node:util's parseArgs; a bad argument prints the usage and exits 2.
 */
import { parseArgs } from 'node:util';

export interface RowBenchSpec<Op extends string> {
  /** The bench's name in the usage line (`pnpm bench <name>`). */
  readonly name: string;
  /** Every op the bench runs, also the default `--ops`. */
  readonly ops: readonly Op[];
  readonly defaultConcurrencies: readonly number[];
  /** `--profile` alone, or `--profile DIR`. */
  readonly profile: 'flag' | 'folder';
  /** Whether the bench takes `--http-floor` (bench/lib/http-floor.ts). */
  readonly httpFloor?: boolean;
}

export interface RowBenchArgs<Op extends string> {
  readonly ops: readonly Op[];
  readonly concurrencies: readonly number[];
  readonly seconds: number;
  readonly warmupSeconds: number;
  readonly partitions: number;
  /** `'flag'` specs: '' when given; `'folder'` specs: the folder; null when absent. */
  readonly profile: string | null;
  readonly etcd: boolean;
  /** `--http-floor`: the same rows against bare node:http servers too. */
  readonly httpFloor: boolean;
}

const DEFAULT_SECONDS = 10;
const DEFAULT_WARMUP_SECONDS = 2;
const DEFAULT_PARTITIONS = 64;

export function parseRowBenchArgs<Op extends string>(
  argv: readonly string[],
  spec: RowBenchSpec<Op>,
): RowBenchArgs<Op> {
  const profileUsage = spec.profile === 'flag' ? '[--profile]' : '[--profile DIR]';
  const floorUsage = spec.httpFloor === true ? ' [--http-floor]' : '';
  const usage = (message: string): never => {
    console.error(
      `${message}\nusage: pnpm bench ${spec.name} [--ops ${spec.ops.join(',')}] [--concurrency ${spec.defaultConcurrencies.join(',')}] [--seconds S] [--warmup S] [--partitions Q] ${profileUsage} [--no-etcd]${floorUsage}`,
    );
    process.exit(2);
  };
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        ops: { type: 'string' },
        concurrency: { type: 'string' },
        seconds: { type: 'string' },
        warmup: { type: 'string' },
        partitions: { type: 'string' },
        profile: { type: spec.profile === 'flag' ? 'boolean' : 'string' },
        'no-etcd': { type: 'boolean' },
        ...(spec.httpFloor === true ? { 'http-floor': { type: 'boolean' as const } } : {}),
      },
    }).values;
  } catch (error) {
    return usage((error as Error).message);
  }
  const numberOption = (name: string, zeroAllowed: boolean): number | undefined => {
    const text = values[name];
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0 || (n === 0 && !zeroAllowed)) {
      usage(`--${name} must be a number ${zeroAllowed ? '≥ 0' : '> 0'}, got ${String(text)}`);
    }
    return n;
  };
  const ops = ((values.ops as string | undefined)?.split(',') ?? [...spec.ops]) as Op[];
  for (const op of ops) if (!spec.ops.includes(op)) usage(`unknown op ${op}`);
  const concurrencies = (values.concurrency as string | undefined)?.split(',').map((c) => {
    const n = Number(c);
    if (!Number.isSafeInteger(n) || n < 1) usage(`--concurrency must be integers ≥ 1, got ${c}`);
    return n;
  }) ?? [...spec.defaultConcurrencies];
  const profile = values.profile;
  return {
    ops,
    concurrencies,
    seconds: numberOption('seconds', false) ?? DEFAULT_SECONDS,
    warmupSeconds: numberOption('warmup', true) ?? DEFAULT_WARMUP_SECONDS,
    partitions: numberOption('partitions', false) ?? DEFAULT_PARTITIONS,
    profile: profile === undefined || profile === false ? null : profile === true ? '' : profile,
    etcd: values['no-etcd'] !== true,
    httpFloor: values['http-floor'] === true,
  };
}
