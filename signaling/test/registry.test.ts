import { DEFAULT_SETTINGS } from '@meshkv/ring';
import type { RegistrySnapshot } from '@meshkv/transport/signaling-protocol';
import { expect } from 'chai';
import { admit, completeSettings, emptyRegistry, findMember, setState } from '../src/registry.ts';

const limits = { maxMembers: 3, maxLeftMembers: 2 };

function admitted(registry: RegistrySnapshot, nodeId: string): RegistrySnapshot {
  const result = admit(registry, { nodeId, kind: 'node' }, limits);
  if (!result.ok) throw new Error(result.reason);
  return result.registry;
}

describe('signaling registry transitions', () => {
  const empty = emptyRegistry(completeSettings({ clusterId: 'c' }));

  it('fills missing settings with the defaults and refuses invalid ones', () => {
    expect(empty.settings).to.deep.equal({
      clusterId: 'c',
      ...DEFAULT_SETTINGS,
    });
    expect(() => completeSettings({ partitions: 48 })).to.throw(RangeError, 'power of two');
    expect(() => completeSettings({ replicationFactor: 6 })).to.throw(RangeError, '1..5');
    expect(() => completeSettings({ clusterId: 'a/b' })).to.throw(RangeError, 'clusterId');
  });

  it('bumps the epoch exactly once per change and keeps members sorted', () => {
    let registry = admitted(empty, 'b');
    registry = admitted(registry, 'a');
    expect(registry.epoch).to.equal(2);
    expect(registry.members.map((member) => member.nodeId)).to.deep.equal(['a', 'b']);
    const down = setState(registry, 'b', 'down', limits);
    expect(down.epoch).to.equal(3);
    expect(findMember(down, 'b')).to.include({
      state: 'down',
      joinedAtEpoch: 1,
      changedAtEpoch: 3,
    });
    const up = admitted(down, 'b');
    expect(up.epoch).to.equal(4);
    expect(findMember(up, 'b')).to.include({ state: 'up', joinedAtEpoch: 1, changedAtEpoch: 4 });
  });

  it('returns the same snapshot when nothing changes', () => {
    const registry = admitted(empty, 'a');
    expect(admitted(registry, 'a')).to.equal(registry);
    expect(setState(registry, 'nobody', 'down', limits)).to.equal(registry);
    const left = setState(registry, 'a', 'left', limits);
    expect(setState(left, 'a', 'down', limits)).to.equal(left);
    // A kind or address change is a change.
    const moved = admit(registry, { nodeId: 'a', kind: 'browser' }, limits);
    expect(moved.ok && moved.registry.epoch).to.equal(2);
  });

  it('refuses new members beyond maxMembers, not returning ones', () => {
    let registry = admitted(admitted(admitted(empty, 'a'), 'b'), 'c');
    expect(admit(registry, { nodeId: 'd', kind: 'node' }, limits)).to.deep.equal({
      ok: false,
      reason: 'the cluster has its maximum of 3 members',
    });
    registry = setState(registry, 'c', 'down', limits);
    expect(admitted(registry, 'c').epoch).to.equal(registry.epoch + 1);
    registry = setState(registry, 'c', 'left', limits);
    expect(admitted(registry, 'd').epoch).to.equal(registry.epoch + 1);
  });

  it('keeps at most maxLeftMembers left records, dropping the oldest', () => {
    let registry = admitted(admitted(admitted(empty, 'a'), 'b'), 'c');
    for (const nodeId of ['b', 'a', 'c']) registry = setState(registry, nodeId, 'left', limits);
    expect(registry.members.map((member) => member.nodeId)).to.deep.equal(['a', 'c']);
  });
});
