// Child process of crash.test.ts: reopens the store, checks it, then writes numbered
// batches forever, printing `acked N` after each write resolved, until it is SIGKILLed.
// Usage: node --import tsx crash-writer.ts <path> <groups>
import { openDiskStorage } from '../src/disk.node.ts';
import { batchFor, checkStore } from './crash-workload.ts';

const [path, groupsArg] = process.argv.slice(2);
if (path === undefined || groupsArg === undefined) {
  console.error('usage: crash-writer.ts <path> <groups>');
  process.exit(2);
}
const groups = Number(groupsArg);
const storage = await openDiskStorage(path);
let batch = await checkStore(storage, groups);
process.stdout.write(`ready ${batch}\n`);
for (;;) {
  batch++;
  await storage.write(batchFor(batch, groups));
  process.stdout.write(`acked ${batch}\n`);
}
