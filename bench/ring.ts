// `pnpm bench ring [speed|balance|tokens|movement|plan] [--sets N]`: consistent-hashing figures,
// one JSON line per measurement (bench/README.md "## ring").
//   speed     (default) lookup ns/op and placement build/rebuild ms, M = 10, 100, 1000,
//             default V, Q = 64..4096;
//   balance   most-loaded node's replicas over the mean, M = 5..100, Q = 64..4096, default V;
//   tokens    the same ratio at M = 100 for V = 16..512 and Q = 1024..16384 (how V was chosen);
//   movement  replicas moved by one join and one leave, over random member sets;
//   plan      the balance ratio for the 1000-node plan (M = 1000; 5 sets unless --sets).
// Member sets are node ids `s<set>-n<index>`: sha256 makes their tokens random, and the
// figures are reproducible.

import { availableParallelism, loadavg } from 'node:os';
import {
  DEFAULT_TOKENS_PER_NODE,
  diff,
  Ring,
  type RingSettings,
} from '../packages/ring/src/index.ts';
import { memberSet } from '../packages/ring/test/reference.ts';

const mode = process.argv[2] ?? 'speed';
const setsArg = process.argv.indexOf('--sets');
const sets = setsArg > 0 ? Number(process.argv[setsArg + 1]) : mode === 'plan' ? 5 : 100;
const N = 3;
const partitionCounts = [64, 128, 256, 512, 1024, 2048, 4096];

function settings(partitions: number, tokensPerNode = DEFAULT_TOKENS_PER_NODE): RingSettings {
  return { partitions, replicationFactor: N, tokensPerNode };
}

function print(record: Record<string, unknown>): void {
  console.log(JSON.stringify({ bench: `ring.${mode}`, ...record }));
}

function round(value: number, digits = 3): number {
  return Number(value.toFixed(digits));
}

function summarize(values: number[]): { mean: number; p90: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    mean: round(sorted.reduce((sum, v) => sum + v, 0) / sorted.length),
    p90: round(sorted[Math.ceil(0.9 * sorted.length) - 1]!),
    max: round(sorted.at(-1)!),
  };
}

/** The most-loaded member's replica count over the mean min(N, M)·Q/M. */
function maxOverMean(ring: Ring, members: string[]): number {
  const placement = ring.placement(members);
  let max = 0;
  for (const id of members) max = Math.max(max, placement.partitionsOf(id).length);
  const { partitions, replicationFactor } = ring.settings;
  return max / ((Math.min(replicationFactor, members.length) * partitions) / members.length);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

interface Timing {
  wallMs: number;
  /** Process CPU time: steadier than wall time when other work shares the cores. */
  cpuMs: number;
}

/** Median wall and CPU time of `run` over `repeats` calls (each median on its own). */
function measure(repeats: number, run: (repeat: number) => void): Timing {
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const cpuStart = process.cpuUsage();
    const start = performance.now();
    run(r);
    wall.push(performance.now() - start);
    const used = process.cpuUsage(cpuStart);
    cpu.push((used.user + used.system) / 1000);
  }
  return { wallMs: median(wall), cpuMs: median(cpu) };
}

/** `timing` divided by `count`, in the unit `scale` (1e6: ns from ms), as {name, nameCpu}. */
function fields(name: string, timing: Timing, count: number, scale: number, digits: number) {
  return {
    [name]: round((timing.wallMs * scale) / count, digits),
    [`${name}Cpu`]: round((timing.cpuMs * scale) / count, digits),
  };
}

function speed(): void {
  // Timings on a shared machine are noisy: say how busy it was.
  print({ cpus: availableParallelism(), loadAverage1m: round(loadavg()[0]!, 2) });
  const keys = Array.from({ length: 20_000 }, (_, i) => `user:${i}:profile`);
  new Ring(settings(4096)).placement(memberSet(1, 100)); // warm-up (JIT)
  for (const memberCount of [10, 100, 1000]) {
    for (const partitions of partitionCounts) {
      const members = memberSet(0, memberCount);
      // From nothing: every token hashed and sorted (a process's first placement).
      const buildCold = measure(3, () => new Ring(settings(partitions)).placement(members));
      const ring = new Ring(settings(partitions));
      ring.placement(members);
      // What a node does once per membership epoch: one member joins, or one leaves. Each
      // sample is two placements (away and back).
      const rebuildJoin = measure(9, (r) => {
        ring.placement([...members, `joiner-${r}`]);
        ring.placement(members);
      });
      const rebuildLeave = measure(9, (r) => {
        ring.placement(members.filter((_, i) => i !== r));
        ring.placement(members);
      });
      const placement = ring.placement(members);
      let sink = 0;
      const lookup = measure(3, () => {
        for (const key of keys) sink += placement.replicasOf(ring.partitionOf(key)).length;
      });
      const tableReads = 1_000_000;
      const replicasOf = measure(3, () => {
        for (let i = 0; i < tableReads; i++)
          sink += placement.replicasOf(i & (partitions - 1)).length;
      });
      if (sink === 0) throw new Error('unreachable: keeps the loops from being optimized away');
      print({
        M: memberCount,
        Q: partitions,
        V: DEFAULT_TOKENS_PER_NODE,
        N,
        ...fields('lookupNsPerOp', lookup, keys.length, 1e6, 0),
        ...fields('replicasOfNsPerOp', replicasOf, tableReads, 1e6, 1),
        ...fields('buildColdMs', buildCold, 1, 1, 1),
        ...fields('rebuildJoinMs', rebuildJoin, 2, 1, 2),
        ...fields('rebuildLeaveMs', rebuildLeave, 2, 1, 2),
      });
    }
  }
}

function balance(): void {
  for (const memberCount of [5, 10, 50, 100]) {
    for (const partitions of partitionCounts) {
      const ring = new Ring(settings(partitions));
      const ratios = Array.from({ length: sets }, (_, set) =>
        maxOverMean(ring, memberSet(set, memberCount)),
      );
      const mean = (Math.min(N, memberCount) * partitions) / memberCount;
      print({
        M: memberCount,
        Q: partitions,
        V: DEFAULT_TOKENS_PER_NODE,
        N,
        sets,
        replicasPerNode: round(mean, 1),
        ...summarize(ratios),
      });
    }
  }
}

function tokens(): void {
  const memberCount = 100;
  for (const tokensPerNode of [16, 32, 64, 128, 256, 512]) {
    for (const partitions of [1024, 4096, 16384]) {
      const ring = new Ring(settings(partitions, tokensPerNode));
      const ratios = Array.from({ length: sets }, (_, set) =>
        maxOverMean(ring, memberSet(set, memberCount)),
      );
      print({ M: memberCount, Q: partitions, V: tokensPerNode, N, sets, ...summarize(ratios) });
    }
  }
}

function plan(): void {
  const memberCount = 1000;
  for (const tokensPerNode of [128, 256]) {
    for (const partitions of [16384, 32768, 65536]) {
      const ring = new Ring(settings(partitions, tokensPerNode));
      const ratios = Array.from({ length: sets }, (_, set) =>
        maxOverMean(ring, memberSet(set, memberCount)),
      );
      print({ M: memberCount, Q: partitions, V: tokensPerNode, N, sets, ...summarize(ratios) });
    }
  }
}

function movement(): void {
  for (const memberCount of [5, 10, 50, 100]) {
    for (const partitions of [256, 4096]) {
      const ring = new Ring(settings(partitions));
      // A join takes M members to M + 1 and should move N·Q/(M+1) replicas, all to the
      // newcomer; a leave of an old member takes M + 1 back to M and moves the leaver's
      // ≈ N·Q/(M+1) replicas.
      const expected = (N * partitions) / (memberCount + 1);
      const joined: number[] = [];
      const left: number[] = [];
      for (let set = 0; set < sets; set++) {
        const members = memberSet(set, memberCount);
        const before = ring.placement(members);
        const grown = [...members, `s${set}-joiner`];
        const after = ring.placement(grown);
        joined.push(moved(diff(before, after)) / expected);
        const leaver = members[set % memberCount];
        left.push(
          moved(diff(after, ring.placement(grown.filter((id) => id !== leaver)))) / expected,
        );
      }
      print({
        M: memberCount,
        Q: partitions,
        V: DEFAULT_TOKENS_PER_NODE,
        N,
        sets,
        expectedMoves: round(expected, 1),
        joinMovedOverExpected: summarize(joined),
        leaveMovedOverExpected: summarize(left),
      });
    }
  }
}

function moved(changes: ReturnType<typeof diff>): number {
  return changes.reduce((sum, change) => sum + change.added.length, 0);
}

const modes: Record<string, () => void> = { speed, balance, tokens, movement, plan };
const run = modes[mode];
if (run === undefined || !(sets > 0)) {
  console.error(`usage: pnpm bench ring [${Object.keys(modes).join('|')}] [--sets N]`);
  process.exit(2);
}
run();
