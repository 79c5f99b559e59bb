/** The batches bench/storage.ts times: `batchSize` entries of `entryBytes` for group 0. */
import type { WriteBatch } from '../src/index.ts';

const incompressible = new Map<number, Uint8Array>();

/** Pseudo-random bytes, so that no layer's compression flatters the figures. */
function payload(entryBytes: number): Uint8Array {
  let data = incompressible.get(entryBytes);
  if (data === undefined) {
    data = new Uint8Array(entryBytes);
    let state = 0x9e3779b9;
    for (let i = 0; i < entryBytes; i++) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
      data[i] = state >>> 24;
    }
    incompressible.set(entryBytes, data);
  }
  return data;
}

export function benchBatch(batch: number, batchSize: number, entryBytes: number): WriteBatch {
  const data = payload(entryBytes);
  const first = batch * batchSize + 1;
  return {
    groups: [
      {
        group: 0,
        entries: Array.from({ length: batchSize }, (_, i) => ({
          index: first + i,
          term: 1,
          type: 0,
          data,
        })),
        hardState: { term: 1, vote: 'n1', commit: first - 1 },
      },
    ],
  };
}
