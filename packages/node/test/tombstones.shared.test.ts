import { expect } from 'chai';
import {
  decodeRetirement,
  decodeTombstone,
  encodeRetirement,
  encodeTombstone,
} from '../src/tombstones.ts';

describe('node tombstones', () => {
  it('round-trip a term, a vote (or none) and the deleted replica id', () => {
    for (const tombstone of [
      { term: 0, vote: null, replica: 'a@1' },
      { term: 7, vote: 'node-é@2', replica: 'b@z' },
      { term: 2 ** 53 - 1, vote: 'x'.repeat(64), replica: 'y'.repeat(64) },
    ]) {
      expect(decodeTombstone(encodeTombstone(tombstone))).to.deep.equal(tombstone);
    }
  });

  it('decode anything else as null', () => {
    const good = encodeTombstone({ term: 5, vote: 'b@2', replica: 'c@3' });
    expect(decodeTombstone(good)).to.not.equal(null);
    expect(decodeTombstone(good.subarray(0, good.length - 1))).to.equal(null);
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
    const noReplica = encodeTombstone({ term: 5, vote: null, replica: 'c@3' }).subarray(0, 11);
    expect(decodeTombstone(noReplica)).to.equal(null);
  });

  it('retirement records: round-trip a replica id and its removal index; anything else is null', () => {
    for (const record of [
      { replica: 'a@1', removedAtIndex: 1 },
      { replica: 'n-é@zz', removedAtIndex: 2 ** 53 - 1 },
    ]) {
      expect(decodeRetirement(encodeRetirement(record))).to.deep.equal(record);
    }
    const good = encodeRetirement({ replica: 'c@3', removedAtIndex: 9 });
    expect(decodeRetirement(good.subarray(0, good.length - 1))).to.equal(null);
    expect(decodeRetirement(new Uint8Array([...good, 0]))).to.equal(null);
    const zeroIndex = good.slice();
    new DataView(zeroIndex.buffer).setFloat64(1, 0);
    expect(decodeRetirement(zeroIndex)).to.equal(null);
    const badUtf8 = good.slice();
    badUtf8[10] = 0xff;
    expect(decodeRetirement(badUtf8)).to.equal(null);
    expect(decodeRetirement(good.subarray(0, 10))).to.equal(null);
  });
});
