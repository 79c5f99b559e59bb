import { mulberry32 } from '@meshkv/raft';
import { expect } from 'chai';
import { ValueCache } from '../src/value-cache.ts';

const bytes = (text: string) => new TextEncoder().encode(text);
const OVERHEAD = 64;

describe('value cache: bounded, coherent with applied writes', () => {
  /** A storage read of `key` that returns `value`. */
  function stored(cache: ValueCache, key: string, value: Uint8Array | null): void {
    cache.fill(key, cache.readStarted(key), value);
  }

  it('keeps what was read (a copy) and a delete; a put drops the entry', () => {
    const cache = new ValueCache(4096);
    const buffer = bytes('xxvalue');
    stored(cache, 'a', buffer.subarray(2));
    buffer[2] = 0; // The buffer is reused: the cached value is a copy.
    expect(new TextDecoder().decode(cache.get('a')!)).to.equal('value');
    cache.write('a', bytes('new'));
    expect(cache.get('a')).to.equal(undefined);
    cache.write('a', null);
    expect(cache.get('a')).to.equal(null); // Cached: the key holds nothing.
    expect(cache.get('b')).to.equal(undefined);
  });

  it('a read in flight when a write of its key applies does not fill the cache', () => {
    const cache = new ValueCache(4096);
    const token = cache.readStarted('k');
    cache.write('k', bytes('new'));
    cache.fill('k', token, bytes('old')); // The read saw storage before the write.
    expect(cache.get('k')).to.equal(undefined);
    // A read begun after the write fills it (its result is as new as the write).
    stored(cache, 'k', bytes('new'));
    expect(new TextDecoder().decode(cache.get('k')!)).to.equal('new');
  });

  it('evicts the least recently used past its bytes; keeps no value above an eighth of them', () => {
    const entry = OVERHEAD + 2 * 2 + 20; // key 'kN' (2 UTF-16 units, 2 bytes each), 20 bytes
    const cache = new ValueCache(3 * entry);
    for (const key of ['k1', 'k2', 'k3']) stored(cache, key, new Uint8Array(20));
    expect(cache.sizeBytes).to.equal(3 * entry);
    cache.get('k1'); // k2 is now the least recently used.
    stored(cache, 'k4', new Uint8Array(20));
    expect(cache.get('k2')).to.equal(undefined);
    expect([cache.get('k1'), cache.get('k3'), cache.get('k4')].every((v) => v !== undefined)).to.be
      .true;
    // A large value read is not kept, and its key's old entry is gone.
    stored(cache, 'k1', new Uint8Array(Math.floor((3 * entry) / 8) + 1));
    expect(cache.get('k1')).to.equal(undefined);
    expect(cache.sizeBytes).to.equal(2 * entry);
  });

  it('seeded: always answers as a map of the applied writes would, within its bound', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const prng = mulberry32(seed);
      const bound = 200 + prng.nextInt(2000);
      const cache = new ValueCache(bound);
      const truth = new Map<string, string | null>();
      const reads: { key: string; token: object; value: string | null }[] = [];
      for (let step = 0; step < 500; step++) {
        const key = `k${prng.nextInt(12)}`;
        const roll = prng.nextInt(4);
        if (roll === 0) {
          const value = prng.nextInt(5) === 0 ? null : 'v'.repeat(prng.nextInt(80));
          truth.set(key, value);
          cache.write(key, value === null ? null : bytes(value));
        } else if (roll === 1) {
          // A storage read begins, answering as of now; it finishes later.
          reads.push({ key, token: cache.readStarted(key), value: truth.get(key) ?? null });
        } else if (roll === 2 && reads.length > 0) {
          const read = reads.splice(prng.nextInt(reads.length), 1)[0]!;
          cache.fill(read.key, read.token, read.value === null ? null : bytes(read.value));
        } else {
          const got = cache.get(key);
          if (got !== undefined) {
            const expected = truth.get(key) ?? null;
            const actual = got === null ? null : new TextDecoder().decode(got);
            expect(actual, `seed ${seed} step ${step} ${key}`).to.equal(expected);
          }
        }
        expect(cache.sizeBytes).to.be.at.most(bound);
      }
    }
  });
});
