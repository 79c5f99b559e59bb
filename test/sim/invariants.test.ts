import { type Entry, EntryType, MemoryStorage } from '@meshkv/raft';
import { expect } from 'chai';
import { SafetyMonitor, SimFailure } from './invariants.ts';

const voters = ['a', 'b', 'c'];
function entry(index: number, term: number, text = `e${index}`): Entry {
  return { index, term, type: EntryType.Normal, data: new TextEncoder().encode(text) };
}
/** A bootstrapped log (index 1 is the bootstrap snapshot) holding `entries` after it. */
function log(entries: Entry[]): MemoryStorage {
  const storage = new MemoryStorage({
    confState: { voters, learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false },
  });
  storage.append(entries);
  return storage;
}
function expectFailure(action: () => void, invariant: string): void {
  try {
    action();
  } catch (e) {
    expect(e).to.be.instanceOf(SimFailure);
    expect((e as SimFailure).invariant).to.equal(invariant);
    return;
  }
  expect.fail(`expected a ${invariant} failure`);
}

describe('sim invariants (SafetyMonitor)', () => {
  it('election safety: two leaders of one term', () => {
    const monitor = new SafetyMonitor();
    monitor.onLeader('a', 2, log([]));
    monitor.onLeader('a', 2, log([])); // the same leader reporting again is fine
    monitor.onLeader('b', 3, log([]));
    expectFailure(() => monitor.onLeader('c', 3, log([])), 'election safety');
  });

  it('read index: a read point below what was committed when the read was asked', () => {
    const monitor = new SafetyMonitor();
    monitor.onApply('a', entry(2, 1), 1);
    monitor.onApply('a', entry(3, 1), 2);
    const committedAtRequest = monitor.highestApplied();
    expect(committedAtRequest).to.equal(3);
    monitor.checkReadIndex('b', 3, committedAtRequest);
    expectFailure(() => monitor.checkReadIndex('b', 2, committedAtRequest), 'read index');
  });

  it('log matching: same index and term, different entries; or differing earlier terms', () => {
    const monitor = new SafetyMonitor();
    monitor.onPersist('a', [entry(2, 1, 'x')]);
    monitor.onPersist('b', [entry(2, 1, 'x')]);
    expectFailure(() => monitor.onPersist('c', [entry(2, 1, 'y')]), 'log matching');
    monitor.checkLogMatching(
      new Map([
        ['a', log([entry(2, 1), entry(3, 2)])],
        ['b', log([entry(2, 1)])],
      ]),
    );
    expectFailure(
      () =>
        monitor.checkLogMatching(
          new Map([
            ['a', log([entry(2, 1), entry(3, 2)])],
            ['b', log([entry(2, 2), entry(3, 2)])],
          ]),
        ),
      'log matching',
    );
  });

  it('state machine safety: another entry at an applied index, or a gap', () => {
    const monitor = new SafetyMonitor();
    monitor.onApply('a', entry(2, 1, 'x'), 1);
    monitor.onApply('b', entry(2, 1, 'x'), 1);
    expectFailure(() => monitor.onApply('c', entry(2, 1, 'y'), 1), 'state machine safety');
    expectFailure(() => monitor.onApply('a', entry(4, 1), 2), 'state machine safety');
  });

  it('leader completeness: a leader missing a committed entry', () => {
    const monitor = new SafetyMonitor();
    monitor.onApply('a', entry(2, 1), 1);
    monitor.onApply('a', entry(3, 1), 2);
    monitor.onLeader('b', 2, log([entry(2, 1), entry(3, 1)]));
    expectFailure(() => monitor.onLeader('c', 3, log([entry(2, 1)])), 'leader completeness');
    expectFailure(
      () => monitor.onLeader('c', 4, log([entry(2, 1), entry(3, 2)])),
      'leader completeness',
    );
  });
});
