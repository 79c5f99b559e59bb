import { DEFAULT_SETTINGS } from '@meshkv/ring';
import { expect } from 'chai';
import {
  type Admission,
  admit,
  completeSettings,
  emptyRegistry,
  findMember,
  markDown,
  markLeft,
  nextRetirementMs,
  type RegistryState,
  retireDownMembers,
} from '../src/registry.ts';

const limits = { maxMembers: 3, maxLeftMembers: 2 };

/** A secret hash per name: the pure functions see only hashes. */
const hash = (name: string): string => name.charCodeAt(0).toString(16).padStart(64, '0');

/** The first join of `nodeId`: no secret presented, the fresh one is `hash(nodeId)`. */
function first(nodeId: string): Admission {
  return { nodeId, kind: 'node', secretHash: hash(nodeId), secretPresented: false };
}

/** A later join of `nodeId` presenting the secret it was issued. */
function again(nodeId: string, fields: Partial<Admission> = {}): Admission {
  return { nodeId, kind: 'node', secretHash: hash(nodeId), secretPresented: true, ...fields };
}

function admitted(state: RegistryState, admission: Admission): RegistryState {
  const result = admit(state, admission, limits);
  if (!result.ok) throw new Error(result.reason);
  return result.state;
}

const nodeIds = (state: RegistryState) => state.snapshot.members.map((member) => member.nodeId);

describe('signaling registry transitions', () => {
  const empty = emptyRegistry(completeSettings({ clusterId: 'c' }));

  it('fills missing settings with the defaults and refuses invalid ones', () => {
    expect(empty.snapshot.settings).to.deep.equal({
      clusterId: 'c',
      ...DEFAULT_SETTINGS,
    });
    expect(() => completeSettings({ partitions: 48 })).to.throw(RangeError, 'power of two');
    expect(() => completeSettings({ replicationFactor: 6 })).to.throw(RangeError, '1..5');
    expect(() => completeSettings({ clusterId: 'a/b' })).to.throw(RangeError, 'clusterId');
  });

  it('bumps the epoch exactly once per change and keeps members sorted', () => {
    let state = admitted(empty, first('b'));
    state = admitted(state, first('a'));
    expect(state.snapshot.epoch).to.equal(2);
    expect(nodeIds(state)).to.deep.equal(['a', 'b']);
    const down = markDown(state, 'b', 0, limits);
    expect(down.snapshot.epoch).to.equal(3);
    expect(findMember(down.snapshot, 'b')).to.include({
      state: 'down',
      joinedAtEpoch: 1,
      changedAtEpoch: 3,
    });
    const up = admitted(down, again('b'));
    expect(up.snapshot.epoch).to.equal(4);
    expect(findMember(up.snapshot, 'b')).to.include({
      state: 'up',
      joinedAtEpoch: 1,
      changedAtEpoch: 4,
    });
  });

  it('returns the same state when nothing changes', () => {
    const state = admitted(empty, first('a'));
    expect(admitted(state, again('a'))).to.equal(state);
    expect(markDown(state, 'nobody', 0, limits)).to.equal(state);
    const left = markLeft(state, 'a', limits);
    expect(markDown(left, 'a', 0, limits)).to.equal(left);
    // A kind or address change is a change.
    expect(admitted(state, again('a', { kind: 'browser' })).snapshot.epoch).to.equal(2);
  });

  it("keeps a member's HTTP address; a rejoin with another one changes the record", () => {
    const address = 'http://127.0.0.1:7701';
    const state = admitted(empty, { ...first('a'), httpAddress: address });
    expect(findMember(state.snapshot, 'a')?.httpAddress).to.equal(address);
    // A reconnect with the same address changes nothing; a restart on another port does.
    expect(admitted(state, again('a', { httpAddress: address }))).to.equal(state);
    const moved = admitted(state, again('a', { httpAddress: 'http://127.0.0.1:7709' }));
    expect(moved.snapshot.epoch).to.equal(2);
    expect(findMember(moved.snapshot, 'a')).to.include({
      httpAddress: 'http://127.0.0.1:7709',
      changedAtEpoch: 2,
    });
    // A join without one drops it: the address is whatever the member serves now.
    const none = admitted(moved, again('a'));
    expect(findMember(none.snapshot, 'a')).to.not.have.property('httpAddress');
    // Kept while down: a client may still try it, and it comes back with the member.
    expect(findMember(markDown(moved, 'a', 0, limits).snapshot, 'a')?.httpAddress).to.equal(
      'http://127.0.0.1:7709',
    );
  });

  it('binds an id to the secret of its first join and refuses a reclaim without it', () => {
    const state = markDown(admitted(empty, first('bob')), 'bob', 0, limits);
    expect(state.secretHashes.get('bob')).to.equal(hash('bob'));
    // A join that presented no secret got a fresh one (here `hash('m')`): not bob's.
    expect(admit(state, { ...first('bob'), secretHash: hash('m') }, limits)).to.deep.equal({
      ok: false,
      code: 'wrong_secret',
      reason:
        "node id 'bob' is bound to a member secret and this join has none: join with the secret kept with its data, or under a new id",
    });
    const wrong = admit(state, again('bob', { secretHash: hash('m') }), limits);
    expect(wrong).to.deep.include({ ok: false, code: 'wrong_secret' });
    expect(admitted(state, again('bob')).snapshot.epoch).to.equal(state.snapshot.epoch + 1);
    // A left member too comes back only with its secret.
    const left = markLeft(state, 'bob', limits);
    expect(admit(left, again('bob', { secretHash: hash('m') }), limits).ok).to.equal(false);
    expect(admitted(left, again('bob')).snapshot.epoch).to.equal(left.snapshot.epoch + 1);
  });

  it('refuses a secret for an id it does not know: the record is gone', () => {
    expect(admit(empty, again('ghost'), limits)).to.deep.equal({
      ok: false,
      code: 'wrong_secret',
      reason:
        "node id 'ghost' is not registered (retired or dropped): its member secret is void; join under a new id",
    });
  });

  it('refuses new members beyond maxMembers, not returning ones', () => {
    let state = admitted(admitted(admitted(empty, first('a')), first('b')), first('c'));
    expect(admit(state, first('d'), limits)).to.deep.equal({
      ok: false,
      code: 'cluster_full',
      reason: 'the cluster has its maximum of 3 members',
    });
    state = markDown(state, 'c', 0, limits);
    expect(admitted(state, again('c')).snapshot.epoch).to.equal(state.snapshot.epoch + 1);
    state = markLeft(state, 'c', limits);
    expect(admitted(state, first('d')).snapshot.epoch).to.equal(state.snapshot.epoch + 1);
  });

  it('keeps at most maxLeftMembers left records, dropping the oldest and its secret', () => {
    let state = admitted(admitted(admitted(empty, first('a')), first('b')), first('c'));
    for (const nodeId of ['b', 'a', 'c']) state = markLeft(state, nodeId, limits);
    expect(nodeIds(state)).to.deep.equal(['a', 'c']);
    expect([...state.secretHashes.keys()].sort()).to.deep.equal(['a', 'c']);
    // The dropped id is new again: registered afresh, with a new joinedAtEpoch.
    const reborn = admitted(state, first('b'));
    expect(findMember(reborn.snapshot, 'b')?.joinedAtEpoch).to.equal(reborn.snapshot.epoch);
    expect(admit(state, again('b'), limits).ok).to.equal(false);
  });

  it('retires the members down for the retirement period, all at once, pushed as one change', () => {
    const periodMs = 500;
    let state = admitted(admitted(admitted(empty, first('a')), first('b')), first('c'));
    state = markDown(state, 'a', 1_000, limits);
    state = markDown(state, 'b', 1_200, limits);
    expect(nextRetirementMs(state, periodMs)).to.equal(1_500);
    expect(retireDownMembers(state, 1_499, periodMs, limits)).to.equal(state);
    const one = retireDownMembers(state, 1_500, periodMs, limits);
    expect(one.snapshot.epoch).to.equal(state.snapshot.epoch + 1);
    expect(findMember(one.snapshot, 'a')).to.include({ state: 'retired', changedAtEpoch: 6 });
    expect([...one.downSinceMs.keys()]).to.deep.equal(['b']);
    expect(nextRetirementMs(one, periodMs)).to.equal(1_700);
    const both = retireDownMembers(state, 5_000, periodMs, limits);
    expect(both.snapshot.epoch).to.equal(state.snapshot.epoch + 1);
    expect(both.snapshot.members.map((member) => member.state)).to.deep.equal([
      'retired',
      'retired',
      'up',
    ]);
    expect(nextRetirementMs(both, periodMs)).to.equal(undefined);
  });

  it('counts retired members no more against maxMembers; one comes back with its secret', () => {
    let state = admitted(admitted(admitted(empty, first('a')), first('b')), first('c'));
    state = markDown(state, 'c', 0, limits);
    expect(admit(state, first('d'), limits)).to.deep.include({ code: 'cluster_full' });
    state = retireDownMembers(state, 10, 10, limits);
    state = admitted(state, first('d'));
    expect(nodeIds(state)).to.deep.equal(['a', 'b', 'c', 'd']);
    // c's storage may still come back as c (its data, if its replicas were all down too).
    expect(admit(state, first('c'), limits)).to.deep.include({ code: 'wrong_secret' });
    const back = admit(state, again('c'), limits);
    expect(back.ok).to.equal(false); // a, b, d are up: the cluster is full for c now
    const freed = markLeft(state, 'd', limits);
    const returned = admitted(freed, again('c'));
    expect(findMember(returned.snapshot, 'c')).to.include({ state: 'up', joinedAtEpoch: 3 });
    expect(returned.downSinceMs.size).to.equal(0);
  });

  it('bounds left and retired records together, dropping the oldest with its secret', () => {
    let state = admitted(admitted(admitted(empty, first('a')), first('b')), first('c'));
    state = markLeft(state, 'a', limits);
    state = retireDownMembers(markDown(state, 'b', 0, limits), 10, 10, limits);
    state = markLeft(state, 'c', limits);
    expect(state.snapshot.members.map((m) => `${m.nodeId} ${m.state}`)).to.deep.equal([
      'b retired',
      'c left',
    ]);
    expect([...state.secretHashes.keys()].sort()).to.deep.equal(['b', 'c']);
  });
});
