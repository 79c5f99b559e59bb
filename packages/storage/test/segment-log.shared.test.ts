import { expect } from 'chai';
import { MemoryDisk } from '../src/index.ts';
import { SegmentLog } from '../src/segment-log.ts';
import { entry, prng } from './contract.ts';

describe('storage: per-batch cost of the log index', () => {
  it('a batch of one entry per group costs as much after 1500 batches as after 10 (segments visited)', async () => {
    const storage = await new MemoryDisk().open();
    const groups = 16;
    await storage.write({
      groups: Array.from({ length: groups }, (_, group) => ({ group, create: true as const })),
    });
    const visited: number[] = [];
    for (let batch = 1; batch <= 1500; batch++) {
      const before = SegmentLog.visited;
      await storage.write({
        groups: Array.from({ length: groups }, (_, group) => ({
          group,
          entries: [entry(batch, 1)],
          hardState: { term: 1, vote: null, commit: batch - 1 },
        })),
      });
      visited.push(SegmentLog.visited - before);
    }
    expect(visited[1500 - 1], 'segments visited by the last batch').to.equal(visited[10 - 1]);
    expect(new Set(visited.slice(1)).size, 'distinct costs after the first batch').to.equal(1);
    await storage.close();
  });

  it('answers like a plain list of segments under random appends, truncations, compactions and undos', () => {
    const seed = Number(
      globalThis.process?.env?.STORAGE_SEED ?? Math.floor(Math.random() * 2 ** 31),
    );
    const random = prng(seed);
    const pick = (n: number) => Math.floor(random() * n);
    const log = new SegmentLog();
    /** The model: term of every index from `first`, or undefined where compacted. */
    let model: number[] = [];
    let first = 1;
    let term = 1;
    for (let step = 0; step < 2000; step++) {
      const before = { model: [...model], first };
      const undo: Array<() => void> = [];
      const last = first + model.length - 1;
      // Clearing is rare, so that logs grow past the few segments lookups try from the end.
      const roll = pick(20);
      if (roll < 14) {
        const start = model.length === 0 ? first : first + pick(model.length + 1);
        undo.push(log.truncateFrom(start, () => {}));
        term += pick(2);
        const count = 1 + pick(4);
        undo.push(log.push({ first: start, count, terms: Array(count).fill(term) }));
        model = [...model.slice(0, start - first), ...Array(count).fill(term)];
      } else if (roll < 19 && model.length > 0) {
        const to = first + pick(model.length);
        const dropped: number[] = [];
        undo.push(log.dropThrough(to, (s) => dropped.push(s.first)));
        // Only whole segments go: the model keeps the entries of a segment `to` falls in.
        const kept = log.length === 0 ? last + 1 : log.at(0).first;
        model = model.slice(kept - first);
        first = kept;
      } else {
        undo.push(log.clear(() => {}));
        first = last + 1;
        model = [];
      }
      const check = (what: string) => {
        for (let i = first - 1; i <= first + model.length; i++) {
          expect(log.termAt(i), `seed ${seed}, step ${step} ${what}: term at ${i}`).to.equal(
            i < first ? undefined : model[i - first],
          );
        }
        expect(log.lastIndex(), `seed ${seed}, step ${step} ${what}: last index`).to.equal(
          model.length === 0 ? null : first + model.length - 1,
        );
      };
      check('after the edit');
      if (pick(4) === 0) {
        for (let i = undo.length - 1; i >= 0; i--) undo[i]!();
        model = before.model;
        first = before.first;
        check('after the undo');
      } else {
        log.settle();
      }
    }
  });
});
