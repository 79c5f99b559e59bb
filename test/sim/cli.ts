/**
 * `pnpm sim --seeds N [--from S]`: runs seeds S … S+N−1 of the cluster simulation (real
 * MeshNodes, mesh-simulation.ts) and ends with `sim: N seeds, F failed`; each failure
 * prints its invariant, the end of its trace and the command that replays it.
 * `pnpm sim --seed S [--messages]`: replays one seed, prints its whole event trace (with
 * every frame sent and delivered if `--messages`), then its JSON stats line.
 * Exit status: 0 if every seed passed, 1 if any failed, 2 for bad arguments.
 */
import { type MeshSimResult, runMeshSeed } from './mesh-simulation.ts';

const USAGE = 'usage: pnpm sim --seeds N [--from S] | pnpm sim --seed S [--messages]';

function parseArgs(argv: readonly string[]): {
  seeds: number;
  from: number;
  replay: boolean;
  messages: boolean;
} {
  const options = { seeds: 0, from: 1, replay: false, messages: false };
  let sawSeeds = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): number => {
      const text = argv[++i];
      const n = Number(text);
      if (text === undefined || !Number.isSafeInteger(n) || n < 0)
        fail(`${arg} needs a non-negative integer, got ${text}`);
      return n;
    };
    if (arg === '--seeds') {
      options.seeds = value();
      sawSeeds = true;
    } else if (arg === '--from') options.from = value();
    else if (arg === '--seed') {
      options.from = value();
      options.seeds = 1;
      options.replay = true;
    } else if (arg === '--messages') options.messages = true;
    else if (arg === '--') continue;
    else fail(`unknown argument ${arg}`);
  }
  if (!options.replay && !sawSeeds) fail('give --seeds N or --seed S');
  if (options.seeds < 1) fail('--seeds must be at least 1');
  if (options.from + options.seeds - 1 > 0xffff_ffff) fail('seeds must stay below 2^32');
  return options;
}

function fail(message: string): never {
  console.error(`sim: ${message}\n${USAGE}`);
  process.exit(2);
}

export function replayCommand(seed: number): string {
  return `pnpm sim --seed ${seed}`;
}

export function describeFailure(result: MeshSimResult): string {
  const { failure } = result;
  if (failure === null) return `seed ${result.seed}: ok`;
  return [
    `seed ${result.seed} FAILED — ${failure.invariant}`,
    `  ${failure.message.split('\n').join('\n  ')}`,
    '  trace (last lines):',
    ...result.trace.map((line) => `    ${line}`),
    `  replay: ${replayCommand(result.seed)}`,
  ].join('\n');
}

const isMain = process.argv[1]?.endsWith('cli.ts') ?? false;
if (isMain) {
  const options = parseArgs(process.argv.slice(2));
  const run = (seed: number, replay: boolean): Promise<MeshSimResult> =>
    runMeshSeed(seed, { fullTrace: replay, traceMessages: replay && options.messages });
  if (options.replay) {
    const result = await run(options.from, true);
    for (const line of result.trace) console.log(line);
    console.log(
      result.failure === null
        ? `seed ${result.seed}: ok`
        : describeFailure({ ...result, trace: [] }),
    );
    console.log(`sim: 1 seeds, ${result.failure === null ? 0 : 1} failed`);
    // Last, so scripts take the stats from the final line.
    console.log(JSON.stringify(result.stats));
    process.exit(result.failure === null ? 0 : 1);
  }
  let failed = 0;
  const failedSeeds: number[] = [];
  const startedMs = Date.now();
  let lastProgressMs = startedMs;
  for (let i = 0; i < options.seeds; i++) {
    const seed = options.from + i;
    const result = await run(seed, false);
    if (result.failure !== null) {
      failed++;
      failedSeeds.push(seed);
      console.log(describeFailure(result));
    }
    const nowMs = Date.now();
    if (nowMs - lastProgressMs >= 5_000 || i === options.seeds - 1) {
      lastProgressMs = nowMs;
      console.log(
        `sim: ${i + 1}/${options.seeds} seeds run, ${failed} failed, ${((nowMs - startedMs) / 1000).toFixed(0)} s`,
      );
    }
  }
  if (failedSeeds.length > 0) console.log(`sim: failed seeds: ${failedSeeds.join(' ')}`);
  console.log(`sim: ${options.seeds} seeds, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}
