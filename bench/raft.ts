// `pnpm bench raft [entries]`: committed entries per second of a 3-node Raft group in one
// process, over an in-memory network (messages delivered in order, at once) with no I/O
// (MemoryStorage; "persist" is an in-memory append). Entries carry 100 B.
//
// Each round proposes `batch` entries on the leader, then runs every node's Ready loop
// (persist → send → apply → advance) and delivers messages until all is quiet. batch = 1
// is one proposal per Ready cycle ("without batching"); larger batches put many
// proposals in one Ready, one MsgApp and one append ("with batching"); batch = 16384 is
// a host that queued many proposals between two Readies (appending must stay linear).
// A round ends only when its entries are committed and applied everywhere, so
// pipelining across rounds is not measured. Prints one JSON line per batch size, with
// wall and process CPU time (the development machine is shared; CPU time is the
// steadier figure).
import { MemoryStorage, type Message, mulberry32, type NodeId, RawNode } from '@meshkv/raft';

const ENTRY_BYTES = 100;
const TARGET_ENTRIES = Number(process.argv[2] ?? 100_000);
const BATCH_SIZES = [1, 8, 64, 512, 16_384];
const COMPACT_EVERY_ENTRIES = 1024;
/** A round that does not settle within this many delivery passes is a bug, not slowness. */
const MAX_PASSES_PER_ROUND = 1_000;

if (!Number.isSafeInteger(TARGET_ENTRIES) || TARGET_ENTRIES < 1) {
  console.error('usage: pnpm bench raft [entries ≥ 1]');
  process.exit(2);
}

function makeGroup(): { nodes: Map<NodeId, RawNode>; storages: Map<NodeId, MemoryStorage> } {
  const ids = ['n1', 'n2', 'n3'];
  const random = mulberry32(1);
  const nodes = new Map<NodeId, RawNode>();
  const storages = new Map<NodeId, MemoryStorage>();
  for (const id of ids) {
    const storage = new MemoryStorage({
      confState: {
        voters: ids,
        learners: [],
        votersOutgoing: [],
        learnersNext: [],
        autoLeave: false,
      },
    });
    storages.set(id, storage);
    nodes.set(
      id,
      new RawNode({ id, groupId: 0, storage, random, electionTick: 10, heartbeatTick: 1 }),
    );
  }
  return { nodes, storages };
}

/**
 * Runs Ready loops and delivers messages until nothing is left; returns entries applied on
 * n1. `applied` is each node's applied index, kept here rather than read from status()
 * (which builds the configuration and progress: not the work being measured).
 */
function pump(
  nodes: Map<NodeId, RawNode>,
  storages: Map<NodeId, MemoryStorage>,
  applied: Map<NodeId, number>,
): number {
  let appliedOnLeader = 0;
  let queue: Message[] = [];
  for (let pass = 0; ; pass++) {
    if (pass >= MAX_PASSES_PER_ROUND) throw new Error(`no quiescence after ${pass} passes`);
    for (const [id, node] of nodes) {
      while (node.hasReady()) {
        const rd = node.ready();
        const storage = storages.get(id)!;
        if (rd.snapshot !== null) storage.applySnapshot(rd.snapshot);
        storage.append(rd.entries);
        if (rd.hardState !== null) storage.setHardState(rd.hardState);
        for (const m of rd.messages) queue.push(m);
        const lastApplied = rd.committedEntries[rd.committedEntries.length - 1];
        if (lastApplied !== undefined) applied.set(id, lastApplied.index);
        if (id === 'n1') appliedOnLeader += rd.committedEntries.length;
        node.advance();
      }
    }
    if (queue.length === 0) return appliedOnLeader;
    const delivering = queue;
    queue = [];
    for (const m of delivering) nodes.get(m.to)!.step(m);
  }
}

function measure(batch: number): void {
  const { nodes, storages } = makeGroup();
  const leader = nodes.get('n1')!;
  const applied = new Map<NodeId, number>();
  leader.campaign();
  pump(nodes, storages, applied);
  if (leader.status().role !== 'leader') throw new Error('n1 did not win the election');
  const payload = new Uint8Array(ENTRY_BYTES).fill(7);
  const rounds = Math.ceil(TARGET_ENTRIES / batch);
  const startMs = performance.now();
  const startCpu = process.cpuUsage();
  let committed = 0;
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < batch; i++) leader.propose(payload);
    committed += pump(nodes, storages, applied);
    // Keep the logs short, as a host does once entries are applied (memory stays bounded).
    for (const [id, storage] of storages) {
      const appliedIndex = applied.get(id) ?? 0;
      if (appliedIndex - storage.firstIndex() >= COMPACT_EVERY_ENTRIES) {
        storage.compact(appliedIndex);
      }
    }
  }
  const seconds = (performance.now() - startMs) / 1000;
  const cpu = process.cpuUsage(startCpu);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  if (committed !== rounds * batch) throw new Error(`committed ${committed} of ${rounds * batch}`);
  console.log(
    JSON.stringify({
      bench: 'raft',
      nodes: 3,
      entryBytes: ENTRY_BYTES,
      proposalsPerReadyCycle: batch,
      entries: committed,
      seconds: Number(seconds.toFixed(3)),
      cpuSeconds: Number(cpuSeconds.toFixed(3)),
      committedEntriesPerSec: Math.round(committed / seconds),
      // Per CPU second: what the figure would be on an idle core (the machine is shared).
      committedEntriesPerCpuSec: Math.round(committed / cpuSeconds),
    }),
  );
}

for (const batch of BATCH_SIZES) measure(batch);
