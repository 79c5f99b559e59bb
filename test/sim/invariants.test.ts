import { type Entry, EntryType, MemoryStorage } from '@meshkv/raft';
import { expect } from 'chai';
import { GroupMonitors, SafetyMonitor, SimFailure } from './invariants.ts';

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

  it('log matching: same index and term, different entries', () => {
    const monitor = new SafetyMonitor();
    monitor.onPersist('a', [entry(2, 1, 'x')]);
    monitor.onPersist('b', [entry(2, 1, 'x')]);
    expectFailure(() => monitor.onPersist('c', [entry(2, 1, 'y')]), 'log matching');
  });

  it('state machine safety: another entry at an applied index', () => {
    const monitor = new SafetyMonitor();
    monitor.onApply('a', entry(2, 1, 'x'));
    monitor.onApply('b', entry(2, 1, 'x'));
    expectFailure(() => monitor.onApply('c', entry(2, 1, 'y')), 'state machine safety');
    expectFailure(() => monitor.onApply('c', entry(2, 2, 'x')), 'state machine safety');
  });

  it('leader completeness: a leader missing a committed entry', () => {
    const monitor = new SafetyMonitor();
    monitor.onApply('a', entry(2, 1));
    monitor.onApply('a', entry(3, 1));
    monitor.onLeader('b', 2, log([entry(2, 1), entry(3, 1)]));
    expectFailure(() => monitor.onLeader('c', 3, log([entry(2, 1)])), 'leader completeness');
    expectFailure(
      () => monitor.onLeader('c', 4, log([entry(2, 1), entry(3, 2)])),
      'leader completeness',
    );
  });

  it('per group (GroupMonitors): groups are independent, and a failure names its group', () => {
    const monitors = new GroupMonitors();
    // Two groups may hold different entries at the same index and term, and both lead term 1.
    monitors.onPersist(0, 'a', [entry(2, 1, 'x')]);
    monitors.onPersist(1, 'a', [entry(2, 1, 'y')]);
    monitors.onLeader(0, 'a', 1, log([]));
    monitors.onLeader(1, 'b', 1, log([]));
    monitors.onApply(1, 'a', entry(2, 1, 'y'));
    try {
      monitors.onApply(1, 'b', entry(2, 1, 'z'));
      expect.fail('expected a state machine safety failure');
    } catch (e) {
      expect(e).to.be.instanceOf(SimFailure);
      expect((e as SimFailure).invariant).to.equal('state machine safety');
      expect((e as SimFailure).detail).to.match(/^group 1: b applied/);
    }
    expectFailure(() => monitors.onLeader(0, 'c', 1, log([])), 'election safety');
  });

  it('entries differing only in bytes that are not UTF-8 are told apart', () => {
    const monitor = new SafetyMonitor();
    const bytes = (b: number): Entry => ({
      index: 2,
      term: 1,
      type: EntryType.Normal,
      data: new Uint8Array([0x80, b]),
    });
    monitor.onPersist('a', [bytes(0xfe)]);
    expectFailure(() => monitor.onPersist('b', [bytes(0xff)]), 'log matching');
  });
});
