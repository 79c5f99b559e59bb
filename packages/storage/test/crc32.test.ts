import { expect } from 'chai';
import { crc32, jsCrc32 } from '../src/codec.ts';
import { zlibCrc32 } from '../src/crc32.node.ts';

describe('storage: the native CRC-32 on Node (crc32.node.ts)', () => {
  it('is zlib.crc32 on this Node, and crc32 gives the JavaScript CRC values through it', () => {
    expect(zlibCrc32, `zlib.crc32 on Node ${process.versions.node}`).to.be.a('function');
    // Lengths on both sides of the native threshold, unaligned ranges, continued CRCs.
    const data = Uint8Array.from({ length: 3000 }, (_, i) => (i * 37 + 11) & 0xff);
    for (const length of [0, 1, 7, 100, 255, 256, 257, 511, 1024, 2999]) {
      for (const from of [0, 1, 3]) {
        const to = Math.min(data.length, from + length);
        const part = data.subarray(from, to);
        for (const previous of [0, 0xcbf43926, 0xffffffff]) {
          const expected = jsCrc32(data, previous, from, to);
          expect(crc32(data, previous, from, to), `[${from}, ${to}) after ${previous}`).to.equal(
            expected,
          );
          expect(zlibCrc32!(part, previous), `zlib [${from}, ${to})`).to.equal(expected);
        }
      }
    }
    const big = Uint8Array.from({ length: 1024 * 1024 }, (_, i) => (i * 7919) >>> 3);
    expect(crc32(big)).to.equal(jsCrc32(big));
    expect(crc32(big, crc32(data))).to.equal(jsCrc32(big, jsCrc32(data)));
  });
});
