import { mulberry32 } from '@meshkv/raft';
import type { RegistrySnapshot } from '@meshkv/transport/signaling-protocol';
import { expect } from 'chai';
import { type RegistryPush, SimRegistry } from './registry.ts';

function registry(seed = 1): SimRegistry {
  return new SimRegistry({
    settings: { partitions: 8, replicationFactor: 3, tokensPerNode: 8 },
    prng: mulberry32(seed),
    gracePeriodMs: 1000,
    maxPushDelayMs: 50,
  });
}

/** Runs the registry to `untilMs`, collecting its pushes. */
function runTo(sim: SimRegistry, untilMs: number, into: RegistryPush[] = []): RegistryPush[] {
  for (;;) {
    const atMs = sim.nextEventAtMs();
    if (atMs === undefined || atMs > untilMs) return into;
    into.push(...sim.runDue(atMs));
  }
}

function states(snapshot: RegistrySnapshot): Record<string, string> {
  return Object.fromEntries(snapshot.members.map((m) => [m.nodeId, m.state]));
}

describe('simulated registry (the server’s pure transitions in virtual time)', () => {
  it('admits members, pushes each change to every connected node in epoch order', () => {
    const sim = registry();
    expect(sim.join('a', 0).epoch).to.equal(1);
    sim.join('b', 10);
    const reply = sim.join('c', 20);
    expect(reply.epoch).to.equal(3);
    expect(sim.upMembers()).to.deep.equal(['a', 'b', 'c']);
    const pushes = runTo(sim, 1000);
    // a hears of epochs 2 and 3, b of 3; c's join reply was the newest: no push to c.
    expect(pushes.filter((p) => p.nodeId === 'a').map((p) => p.snapshot.epoch)).to.deep.equal([
      2, 3,
    ]);
    expect(pushes.filter((p) => p.nodeId === 'b').map((p) => p.snapshot.epoch)).to.deep.equal([3]);
    expect(pushes.filter((p) => p.nodeId === 'c')).to.deep.equal([]);
  });

  it('marks a member down after the grace period, unless it reconnects first', () => {
    const sim = registry();
    for (const id of ['a', 'b', 'c']) sim.join(id, 0);
    runTo(sim, 100);
    sim.disconnect('b', 100);
    sim.disconnect('c', 100);
    runTo(sim, 500);
    expect(sim.join('b', 600).epoch, 'b is still up: no change').to.equal(3);
    const pushes = runTo(sim, 2000);
    expect(states(sim.snapshot)).to.deep.equal({ a: 'up', b: 'up', c: 'down' });
    expect(pushes.map((p) => `${p.nodeId}@${p.snapshot.epoch}`).sort()).to.deep.equal([
      'a@4',
      'b@4',
    ]);
    // c comes back with its data (its secret): up again, a new epoch.
    expect(states(sim.join('c', 2100))).to.deep.equal({ a: 'up', b: 'up', c: 'up' });
    expect(sim.snapshot.epoch).to.equal(5);
  });

  it('a lost disk joins under a new id; a leave marks the member left and stops its pushes', () => {
    const sim = registry();
    for (const id of ['a', 'b', 'c']) sim.join(id, 0);
    sim.disconnect('c', 10);
    sim.join('c2', 20);
    runTo(sim, 5000);
    expect(states(sim.snapshot)).to.deep.equal({ a: 'up', b: 'up', c: 'down', c2: 'up' });
    sim.leave('a', 5000);
    expect(sim.upMembers()).to.deep.equal(['b', 'c2']);
    sim.forget('a');
    const pushes = runTo(sim, 10_000);
    expect(pushes.map((p) => p.nodeId).sort()).to.deep.equal(['b', 'c2']);
    expect(sim.changes).to.have.length(sim.snapshot.epoch);
  });

  it('never delivers an older snapshot after a newer one to a node (random delays)', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const sim = registry(seed);
      const prng = mulberry32(seed + 1000);
      const ids = ['a', 'b', 'c', 'd', 'e'];
      const pushes: RegistryPush[] = [];
      let nowMs = 0;
      for (let step = 0; step < 40; step++) {
        nowMs += prng.nextInt(30);
        const id = ids[prng.nextInt(ids.length)]!;
        if (prng.nextInt(3) === 0) sim.disconnect(id, nowMs);
        else sim.join(id, nowMs);
        runTo(sim, nowMs, pushes);
      }
      runTo(sim, nowMs + 10_000, pushes);
      const lastEpoch = new Map<string, number>();
      for (const { nodeId, snapshot } of pushes) {
        expect(snapshot.epoch, `seed ${seed}: push to ${nodeId}`).to.be.greaterThan(
          lastEpoch.get(nodeId) ?? 0,
        );
        lastEpoch.set(nodeId, snapshot.epoch);
      }
    }
  });
});
