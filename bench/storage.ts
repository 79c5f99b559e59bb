// `pnpm bench storage [disk|indexeddb|memory]…`: durable batches/s and entries/s of the
// storage backends, for batches of 1, 100 and 1000 entries of 100 B and 64 KiB, one group;
// and (memory) the MeshNode's batch (30 groups × 2 entries, hard and applied state, 2 KV
// writes) per group write, and how a group-commit batch's cost evolves over 2400 batches
// of 64 groups.
// Disk = LevelDB (classic-level, sync writes) in os.tmpdir(); IndexedDB = Debian's headless
// Chromium ({durability: 'strict'}), which needs the network namespace:
// `scripts/netns-run.sh pnpm bench storage`. Each configuration runs `repeats` times on a
// fresh database; one JSON line gives the median run and the range (the machine is shared).
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDiskStorage } from '../packages/storage/src/disk.node.ts';
import { MemoryDisk, type NodeStorage } from '../packages/storage/src/index.ts';
import { SegmentLog } from '../packages/storage/src/segment-log.ts';
import { benchBatch } from '../packages/storage/test/bench-workload.ts';
import { killChromium, launchChromium, servePage } from '../packages/storage/test/chromium.ts';

const here = dirname(fileURLToPath(import.meta.url));
const batchSizes = [1, 100, 1000];
const entrySizes = [100, 64 * 1024];
/** Each run writes about this much (at least 5 batches, at most 2000). */
const budgetBytes = 128 * 1024 * 1024;
const repeats = 3;
const backends =
  process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['memory', 'disk', 'indexeddb'];

function batchesFor(batchSize: number, entryBytes: number): number {
  return Math.min(2000, Math.max(5, Math.ceil(budgetBytes / (batchSize * entryBytes))));
}

function report(
  backend: string,
  batchSize: number,
  entryBytes: number,
  batches: number,
  elapsedMs: number[],
) {
  const sorted = [...elapsedMs].sort((x, y) => x - y);
  const perSec = (count: number, ms: number) => Math.round(count / (ms / 1000));
  const medianMs = sorted[Math.floor(sorted.length / 2)]!;
  console.log(
    JSON.stringify({
      bench: 'storage',
      backend,
      batchSize,
      entryBytes,
      batches,
      runs: sorted.length,
      medianSeconds: Number((medianMs / 1000).toFixed(3)),
      batchesPerSec: perSec(batches, medianMs),
      entriesPerSec: perSec(batches * batchSize, medianMs),
      entriesPerSecRange: [
        perSec(batches * batchSize, sorted.at(-1)!),
        perSec(batches * batchSize, sorted[0]!),
      ],
      mibPerSec: Number(
        ((batches * batchSize * entryBytes) / 2 ** 20 / (medianMs / 1000)).toFixed(1),
      ),
    }),
  );
}

/**
 * A node's group commit over a long history: every batch appends one 100 B entry (and the
 * hard state) to each of 64 groups. Per batch: wall and CPU ms, and segments visited in the
 * log index; the first `window` batches against the last (flat = independent of history).
 */
export async function groupCommitHistory(storage: NodeStorage) {
  const groups = 64;
  const batches = 2400;
  const window = 300;
  const data = new Uint8Array(100).fill(7);
  await storage.write({
    groups: Array.from({ length: groups }, (_, group) => ({ group, create: true as const })),
  });
  const wallMs: number[] = [];
  const cpuMs: number[] = [];
  const visited: number[] = [];
  for (let batch = 1; batch <= batches; batch++) {
    const write = {
      groups: Array.from({ length: groups }, (_, group) => ({
        group,
        entries: [{ index: batch, term: 1, type: 0 as const, data }],
        hardState: { term: 1, vote: 'n1', commit: batch - 1 },
      })),
    };
    const visitedBefore = SegmentLog.visited;
    const cpuBefore = process.cpuUsage();
    const startedMs = performance.now();
    await storage.write(write);
    wallMs.push(performance.now() - startedMs);
    const cpu = process.cpuUsage(cpuBefore);
    cpuMs.push((cpu.user + cpu.system) / 1000);
    visited.push(SegmentLog.visited - visitedBefore);
  }
  const mean = (values: number[]) =>
    Number((values.reduce((sum, v) => sum + v, 0) / values.length).toFixed(3));
  const span = (values: number[]) => ({
    first: mean(values.slice(0, window)),
    last: mean(values.slice(-window)),
  });
  return {
    groups,
    batches,
    window,
    wallMsPerBatch: span(wallMs),
    cpuMsPerBatch: span(cpuMs),
    segmentsVisitedPerBatch: span(visited),
  };
}

/**
 * The MeshNode's batch (bench/node.ts, c128 puts): one batch per loop round carrying 30
 * groups, each with 2 entries of 100 B, its hard state (commit moved), its applied state
 * (a ConfState of 3 replica ids, unchanged, as the node passes it) and 2 KV writes of
 * 100 B. CPU and wall µs per batch and per group write, over the last `measured` batches
 * (the first `warmup` warm up the JIT).
 */
export async function nodeBatch(storage: NodeStorage) {
  const groups = 30;
  const warmup = 1000;
  const measured = 4000;
  const data = new Uint8Array(100).fill(7);
  const replicaIds = ['n0123456789ab@1f', 'n1123456789ab@2a', 'n2123456789ab@33'];
  const confState = {
    voters: replicaIds,
    learners: [],
    votersOutgoing: [],
    learnersNext: [],
    autoLeave: false,
  };
  await storage.write({
    groups: Array.from({ length: groups }, (_, group) => ({ group, create: true as const })),
  });
  let cpuUs = 0;
  let wallUs = 0;
  for (let batch = 0; batch < warmup + measured; batch++) {
    const first = 2 * batch + 1;
    const write = {
      groups: Array.from({ length: groups }, (_, group) => ({
        group,
        entries: [
          { index: first, term: 1, type: 0 as const, data },
          { index: first + 1, term: 1, type: 0 as const, data },
        ],
        hardState: { term: 1, vote: replicaIds[0]!, commit: first - 1 },
        appliedState: { index: first - 1, term: batch === 0 ? 0 : 1, confState },
        kv: [
          { key: `key-${(batch * 61 + group) % 4096}`, value: data },
          { key: `key-${(batch * 61 + group + 2048) % 4096}`, value: data },
        ],
      })),
    };
    const cpuBefore = process.cpuUsage();
    const startedMs = performance.now();
    await storage.write(write);
    if (batch >= warmup) {
      wallUs += (performance.now() - startedMs) * 1000;
      const cpu = process.cpuUsage(cpuBefore);
      cpuUs += cpu.user + cpu.system;
    }
  }
  const per = (us: number, count: number) => Number((us / count).toFixed(2));
  return {
    groups,
    entriesPerGroup: 2,
    kvPerGroup: 2,
    batches: measured,
    cpuUsPerBatch: per(cpuUs, measured),
    cpuUsPerGroupWrite: per(cpuUs, measured * groups),
    wallUsPerBatch: per(wallUs, measured),
    loadAverage: loadavg().map((load) => Number(load.toFixed(2))),
  };
}

if (backends.includes('memory')) {
  for (const [name, run] of [
    ['nodeBatch', nodeBatch],
    ['groupCommit', groupCommitHistory],
  ] as const) {
    const storage = await new MemoryDisk().open();
    console.log(
      JSON.stringify({ bench: 'storage', backend: 'memory', [name]: await run(storage) }),
    );
    await storage.close();
  }
}

if (backends.includes('disk')) {
  for (const entryBytes of entrySizes) {
    for (const batchSize of batchSizes) {
      const batches = batchesFor(batchSize, entryBytes);
      const elapsedMs: number[] = [];
      for (let run = 0; run < repeats; run++) {
        const dir = await mkdtemp(join(tmpdir(), 'meshkv-bench-'));
        const storage = await openDiskStorage(join(dir, 'db'));
        await storage.write({ groups: [{ group: 0, create: true }] });
        const startedMs = performance.now();
        for (let b = 0; b < batches; b++) await storage.write(benchBatch(b, batchSize, entryBytes));
        elapsedMs.push(performance.now() - startedMs);
        await storage.close();
        await rm(dir, { recursive: true, force: true });
      }
      report('disk (LevelDB)', batchSize, entryBytes, batches, elapsedMs);
    }
  }
}

if (backends.includes('disk')) {
  // Restart cost: open + load() of 64 groups, each with 1000 entries of 100 B in 10 batches,
  // a saved snapshot, 1000 KV pairs and 100 sessions.
  const groups = 64;
  const dir = await mkdtemp(join(tmpdir(), 'meshkv-bench-'));
  const path = join(dir, 'db');
  let storage = await openDiskStorage(path);
  const data = new Uint8Array(100);
  for (let batch = 0; batch < 10; batch++) {
    await storage.write({
      groups: Array.from({ length: groups }, (_, group) => ({
        group,
        ...(batch === 0 ? { create: true as const } : {}),
        entries: Array.from({ length: 100 }, (_, i) => ({
          index: batch * 100 + i + 1,
          term: 1,
          type: 0 as const,
          data,
        })),
        kv: Array.from({ length: 100 }, (_, i) => ({ key: `key-${batch}-${i}`, value: data })),
        sessions: Array.from({ length: 10 }, (_, i) => ({
          clientId: `client-${batch}-${i}`,
          record: data,
        })),
        ...(batch === 9
          ? {
              savedSnapshot: {
                metadata: {
                  index: 900,
                  term: 1,
                  confState: {
                    voters: ['n1'],
                    learners: [],
                    votersOutgoing: [],
                    learnersNext: [],
                    autoLeave: false,
                  },
                },
                data,
              },
            }
          : {}),
      })),
    });
  }
  await storage.close();
  const elapsedMs: number[] = [];
  for (let run = 0; run < repeats; run++) {
    const startedMs = performance.now();
    storage = await openDiskStorage(path);
    const { groups: loaded } = await storage.load();
    elapsedMs.push(performance.now() - startedMs);
    if (loaded.size !== groups) throw new Error(`loaded ${loaded.size} groups`);
    await storage.close();
  }
  elapsedMs.sort((x, y) => x - y);
  console.log(
    JSON.stringify({
      bench: 'storage',
      backend: 'disk (LevelDB)',
      load: { groups, entriesPerGroup: 1000, kvPerGroup: 1000, sessionsPerGroup: 100 },
      runs: repeats,
      medianMs: Number(elapsedMs[Math.floor(repeats / 2)]!.toFixed(1)),
    }),
  );
  await rm(dir, { recursive: true, force: true });
}

if (backends.includes('indexeddb')) {
  const profile = await mkdtemp(join(tmpdir(), 'meshkv-bench-chromium-'));
  const server = await servePage(join(here, '../packages/storage/test/bench-page.ts'));
  const browser = await launchChromium(profile);
  try {
    const page = await browser.newPage();
    await page.goto(server.url);
    await page.waitForFunction(() => 'runBench' in globalThis);
    for (const entryBytes of entrySizes) {
      for (const batchSize of batchSizes) {
        const batches = batchesFor(batchSize, entryBytes);
        const elapsedMs: number[] = [];
        for (let run = 0; run < repeats; run++) {
          elapsedMs.push(
            await page.evaluate(
              (size, bytes, count) =>
                (
                  globalThis as unknown as {
                    runBench: (size: number, bytes: number, count: number) => Promise<number>;
                  }
                ).runBench(size, bytes, count),
              batchSize,
              entryBytes,
              batches,
            ),
          );
        }
        report('IndexedDB (Chromium)', batchSize, entryBytes, batches, elapsedMs);
      }
    }
  } finally {
    await killChromium(browser);
    await server.close();
    await rm(profile, { recursive: true, force: true });
  }
}
