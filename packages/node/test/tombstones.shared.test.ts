import { expect } from 'chai';
import { decodeTombstone, encodeTombstone } from '../src/tombstones.ts';

describe('node tombstones', () => {
  it('round-trip a term and a vote (or none); anything else decodes as null', () => {
    for (const hardState of [
      { term: 0, vote: null, commit: 0 },
      { term: 7, vote: 'node-é', commit: 3 },
      { term: 2 ** 53 - 1, vote: 'x'.repeat(64), commit: 0 },
    ]) {
      expect(decodeTombstone(encodeTombstone(hardState))).to.deep.equal({
        term: hardState.term,
        vote: hardState.vote,
      });
    }
    const good = encodeTombstone({ term: 5, vote: 'b', commit: 0 });
    expect(decodeTombstone(good.subarray(0, 9))).to.equal(null);
    expect(decodeTombstone(new Uint8Array([...good, 0]))).to.equal(null);
    const otherVersion = good.slice();
    otherVersion[0] = 2;
    expect(decodeTombstone(otherVersion)).to.equal(null);
    const badUtf8 = good.slice();
    badUtf8[10] = 0xff;
    expect(decodeTombstone(badUtf8)).to.equal(null);
    const fractionalTerm = good.slice();
    new DataView(fractionalTerm.buffer).setFloat64(1, 1.5);
    expect(decodeTombstone(fractionalTerm)).to.equal(null);
  });
});
