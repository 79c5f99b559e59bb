import { expect } from 'chai';
import { TestCluster } from './support/cluster.ts';

const text = (bytes: Uint8Array | null) =>
  bytes === null ? null : new TextDecoder().decode(bytes);

describe('MeshNode scenarios', function () {
  this.timeout(60_000);

  it('bootstrap: the first member creates every partition and serves put/get/delete', async () => {
    const cluster = new TestCluster({ partitions: 4, trace: !!process.env.TRACE });
    try {
      const a = await cluster.start('a');
      await cluster.until(
        () => a.status().groups.filter((g) => g.role === 'leader').length === 4,
        'a leads every partition',
      );
      expect(await cluster.settle(a.put('k1', 'v1'))).to.equal(true);
      expect(text(await cluster.settle(a.get('k1')))).to.equal('v1');
      expect(await cluster.settle(a.get('missing'))).to.equal(null);
      expect(await cluster.settle(a.delete('k1'))).to.equal(true);
      expect(await cluster.settle(a.delete('k1'))).to.equal(false);
      expect(await cluster.settle(a.get('k1'))).to.equal(null);
    } finally {
      if (process.env.TRACE) console.log(cluster.traceLines.join('\n'));
      await cluster.close();
    }
  });

  it('bootstrap 1 → 3 nodes: the groups grow to three voters by rebalancing; any node serves', async () => {
    const cluster = new TestCluster({ partitions: 4, trace: !!process.env.TRACE });
    try {
      const a = await cluster.start('a');
      await cluster.settle(a.put('before', 'growth'));
      const b = await cluster.start('b');
      const c = await cluster.start('c');
      const inPlace = () =>
        [a, b, c].every(
          (n) =>
            n.status().groups.length === 4 &&
            n
              .status()
              .groups.every(
                (g) =>
                  g.voters.length === 3 && g.learners.length === 0 && g.votersOutgoing.length === 0,
              ),
        );
      await cluster.until(inPlace, 'every partition has voters a, b, c on every node');
      expect(text(await cluster.settle(c.get('before')))).to.equal('growth');
      expect(await cluster.settle(c.put('k', 'from c'))).to.equal(true);
      expect(text(await cluster.settle(b.get('k')))).to.equal('from c');
      expect(text(await cluster.settle(b.get('k', { consistency: 'local' })))).to.equal('from c');
      expect(await cluster.settle(b.put('k2', 'all', { ack: 'all' }))).to.equal(true);
      expect(text(await cluster.settle(a.get('k2', { consistency: 'local' })))).to.equal('all');
    } finally {
      if (process.env.TRACE) console.log(cluster.traceLines.join('\n'));
      await cluster.close();
    }
  });
});
