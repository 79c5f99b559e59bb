import { StorageError } from '@meshkv/storage';
import { expect } from 'chai';
import {
  cryptoRandom,
  type Identity,
  parseIdentity,
  startBoundToStorage,
} from '../src/identity.ts';

const identity: Identity = { clusterId: 'c', nodeId: 'n1', memberSecret: 's' };

describe('identity: the shells’ shared join and storage-binding rules', () => {
  it('parses an identity record and refuses anything else', () => {
    expect(parseIdentity({ ...identity, extra: 1 })).to.deep.equal(identity);
    for (const bad of [null, undefined, 'x', {}, { ...identity, nodeId: 3 }, { clusterId: 'c' }]) {
      expect(parseIdentity(bad)).to.equal(null);
    }
  });

  it('a store refused as corrupt is set aside and the node starts as a new member', async () => {
    const starts: (Identity | null)[] = [];
    const asides: string[] = [];
    const result = await startBoundToStorage(
      identity,
      async (bound) => {
        starts.push(bound);
        if (bound !== null) throw new StorageError('corrupt', 'vanished: gone');
        return 'new';
      },
      async (reason) => {
        asides.push(reason);
      },
    );
    expect(result).to.equal('new');
    expect(starts).to.deep.equal([identity, null]);
    expect(asides).to.deep.equal(['vanished: gone']);
  });

  it('any other start failure is passed on, nothing set aside', async () => {
    const asides: string[] = [];
    const failure = await startBoundToStorage(
      identity,
      async () => {
        throw new StorageError('locked', 'in use');
      },
      async (reason) => {
        asides.push(reason);
      },
    ).catch((error: unknown) => error);
    expect(failure).to.be.instanceOf(StorageError);
    expect((failure as StorageError).code).to.equal('locked');
    expect(asides).to.deep.equal([]);
  });

  it('cryptoRandom draws every value of a small range and refuses a bad one', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(cryptoRandom.nextInt(7));
    expect([...seen].sort()).to.deep.equal([0, 1, 2, 3, 4, 5, 6]);
    expect(cryptoRandom.nextInt(1)).to.equal(0);
    expect(() => cryptoRandom.nextInt(0)).to.throw(RangeError);
    expect(() => cryptoRandom.nextInt(1.5)).to.throw(RangeError);
  });
});
