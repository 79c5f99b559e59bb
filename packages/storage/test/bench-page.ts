// Page script of bench/storage.ts (bundled by esbuild): times durable IndexedDB batches.
import { deleteIndexedDbStorage, openIndexedDbStorage } from '../src/indexeddb.browser.ts';
import { benchBatch } from './bench-workload.ts';

async function runBench(batchSize: number, entryBytes: number, batches: number): Promise<number> {
  const nodeId = `bench-${batchSize}-${entryBytes}-${performance.now()}`;
  const storage = await openIndexedDbStorage({ clusterId: 'bench', nodeId });
  await storage.write({ groups: [{ group: 0, create: true }] });
  const startedMs = performance.now();
  for (let b = 0; b < batches; b++) await storage.write(benchBatch(b, batchSize, entryBytes));
  const elapsedMs = performance.now() - startedMs;
  await storage.close();
  await deleteIndexedDbStorage({ clusterId: 'bench', nodeId });
  return elapsedMs;
}

(globalThis as { runBench?: typeof runBench }).runBench = runBench;
