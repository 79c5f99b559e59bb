import { expect } from 'chai';
import { incarnationOf, nodeOfReplica, replicaId, replicaOfNode } from '../src/replica-id.ts';

describe('node replica ids', () => {
  it('name a node and an incarnation, and give both back', () => {
    for (const [node, incarnation] of [
      ['a', 1],
      ['n0123456789ab', 17],
      ['x'.repeat(52), 2 ** 53 - 1],
      ['host.local:9', 36],
    ] as const) {
      const id = replicaId(node, incarnation);
      expect(new TextEncoder().encode(id).length).to.be.at.most(64);
      expect(nodeOfReplica(id)).to.equal(node);
      expect(incarnationOf(id)).to.equal(incarnation);
    }
    expect(replicaId('a', 36)).to.equal('a@10');
  });

  it('refuse what cannot name a replica, and read non-ids as no node', () => {
    expect(() => replicaId('a', 0)).to.throw(RangeError);
    expect(() => replicaId('a', 1.5)).to.throw(RangeError);
    expect(() => replicaId('x'.repeat(53), 1)).to.throw(RangeError, /52/);
    expect(() => replicaId('a@b', 1)).to.throw(RangeError);
    expect(() => replicaId('', 1)).to.throw(RangeError);
    expect(nodeOfReplica('plain')).to.equal('');
    expect(nodeOfReplica('@1')).to.equal('');
    expect(incarnationOf('a@')).to.equal(0);
    expect(incarnationOf('a@Z')).to.equal(0);
    expect(incarnationOf('a@0')).to.equal(0);
  });

  it("find a node's replica in a configuration, the newest should there be two", () => {
    const c = {
      voters: ['a@1', 'b@3'],
      learners: ['c@5'],
      votersOutgoing: ['b@2', 'a@1'],
      learnersNext: [],
      autoLeave: false,
    };
    expect(replicaOfNode(c, 'a')).to.equal('a@1');
    expect(replicaOfNode(c, 'b')).to.equal('b@3');
    expect(replicaOfNode(c, 'c')).to.equal('c@5');
    expect(replicaOfNode(c, 'd')).to.equal(null);
  });
});
