// Page script of crash-chromium.test.ts (bundled by esbuild): the same numbered-batch
// workload as the Node crash test, against IndexedDB. Reports through console.log, which
// the test reads: `repair ...` while the open rebuilds a copy, `ready N` after the reopened
// store checked out with N batches, then `acked N` after each write resolved, or `error ...`.
import { openIndexedDbStorage } from '../src/indexeddb.browser.ts';
import { batchFor, checkStore } from './crash-workload.ts';

async function writeForever(groups: number): Promise<void> {
  const storage = await openIndexedDbStorage({
    clusterId: 'crash-test',
    nodeId: 'n1',
    // Small, so that kills also land in rewrites of the journal (every few batches).
    journalRewriteBytes: 512 * 1024,
    onRepair: (r) =>
      console.log(
        `repair ${r.rebuilding} ${r.done}/${r.total} ${r.unit} (${r.reason})${r.finished ? ' finished' : ''}`,
      ),
  });
  let batch = await checkStore(storage, groups);
  console.log(`ready ${batch}`);
  for (;;) {
    batch++;
    await storage.write(batchFor(batch, groups));
    console.log(`acked ${batch}`);
  }
}

(globalThis as { startWriter?: (groups: number) => void }).startWriter = (groups) => {
  writeForever(groups).catch((error) => console.log(`error ${String(error)}`));
};
