/**
 * The workload of the crash tests (Node child process, Chromium): numbered batches whose
 * content is a pure function of their number, so that after a crash the checker can tell
 * exactly which batches a store holds. Isomorphic (also bundled into the browser page).
 *
 * Batch b, for every group g: appends sizeOf(b) entries, sets hardState.commit = b and
 * appliedState.index = b, puts KV `b${b}` and `last` = b and a session for client `c${b % 3}`;
 * every 7th batch also saves a snapshot 5 entries before its end and compacts the log there.
 */
import type { Entry } from '@meshkv/raft';
import type { GroupWrite, NodeStorage, WriteBatch } from '../src/index.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const emptyConf = {
  voters: ['n1'],
  learners: [],
  votersOutgoing: [],
  learnersNext: [],
  autoLeave: false,
};

/** Entries appended by batch b: 1..40, spread by a multiplicative hash. */
export function sizeOf(batch: number): number {
  return 1 + ((Math.imul(batch, 2654435761) >>> 0) % 40);
}

/** Index of the last entry once batches 1..b are in. */
export function lastIndexAfter(batch: number): number {
  let total = 0;
  for (let b = 1; b <= batch; b++) total += sizeOf(b);
  return total;
}

function entryData(group: number, index: number): Uint8Array {
  // 20..2000 bytes, so batches vary in size too.
  const filler = 'x'.repeat((Math.imul(index, 40503) >>> 0) % 1980);
  return encoder.encode(`g${group}i${index}${filler}`);
}

export function batchFor(batch: number, groups: number): WriteBatch {
  const first = lastIndexAfter(batch - 1) + 1;
  const parts: GroupWrite[] = [];
  for (let group = 0; group < groups; group++) {
    const entries: Entry[] = [];
    for (let i = 0; i < sizeOf(batch); i++) {
      entries.push({ index: first + i, term: 1, type: 0, data: entryData(group, first + i) });
    }
    const last = first + entries.length - 1;
    parts.push({
      group,
      ...(batch === 1 ? { create: true as const } : {}),
      entries,
      hardState: { term: 1, vote: 'n1', commit: batch },
      appliedState: { index: batch, term: 1, confState: emptyConf },
      kv: [
        { key: `b${batch}`, value: encoder.encode(`batch ${batch}`) },
        { key: 'last', value: encoder.encode(String(batch)) },
      ],
      sessions: [{ clientId: `c${batch % 3}`, record: encoder.encode(String(batch)) }],
      ...(batch % 7 === 0
        ? {
            savedSnapshot: {
              metadata: { index: last - 5, term: 1, confState: emptyConf },
              data: new Uint8Array(0),
            },
            compactTo: last - 5,
          }
        : {}),
    });
  }
  return { groups: parts };
}

/**
 * Checks that the store holds exactly batches 1..b for some b, in every group alike, and
 * returns b. Throws, saying what is wrong, otherwise.
 */
export async function checkStore(storage: NodeStorage, groups: number): Promise<number> {
  const { groups: loaded } = await storage.load();
  if (loaded.size === 0) return 0;
  if (loaded.size !== groups) throw new Error(`${loaded.size} groups, expected 0 or ${groups}`);
  const batch = loaded.get(0)!.hardState.commit;
  const last = lastIndexAfter(batch);
  for (let group = 0; group < groups; group++) {
    const g = loaded.get(group)!;
    const where = `group ${group} (batch ${batch})`;
    if (g.hardState.commit !== batch) {
      throw new Error(
        `${where}: commit ${g.hardState.commit}: the batch was not atomic across groups`,
      );
    }
    if (g.appliedState.index !== batch)
      throw new Error(`${where}: applied ${g.appliedState.index}`);
    const lastEntry = g.entries.at(-1)?.index ?? g.compacted.index;
    if (lastEntry !== last) throw new Error(`${where}: last index ${lastEntry}, expected ${last}`);
    g.entries.forEach((e, i) => {
      const expected = entryData(group, e.index);
      if (
        e.index !== g.compacted.index + 1 + i ||
        decoder.decode(e.data) !== decoder.decode(expected)
      ) {
        throw new Error(`${where}: entry ${e.index} is wrong`);
      }
    });
    const lastValue = await storage.get(group, 'last');
    if (lastValue === null || decoder.decode(lastValue) !== String(batch)) {
      throw new Error(`${where}: KV last = ${lastValue && decoder.decode(lastValue)}`);
    }
    for (const b of [1, batch]) {
      if ((await storage.get(group, `b${b}`)) === null)
        throw new Error(`${where}: KV b${b} missing`);
    }
    if ((await storage.get(group, `b${batch + 1}`)) !== null) {
      throw new Error(`${where}: KV b${batch + 1} present beyond commit ${batch}`);
    }
    const session = g.sessions.get(`c${batch % 3}`);
    if (session === undefined || decoder.decode(session) !== String(batch)) {
      throw new Error(`${where}: session c${batch % 3} is wrong`);
    }
  }
  return batch;
}
