import { sha256 } from '@noble/hashes/sha2.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';

/**
 * Ring positions are unsigned 64-bit numbers: the first 8 bytes of a sha256 digest, big
 * endian. They are handled as two uint32 halves (`hi`, `lo`) rather than bigint: comparing
 * two positions is then two integer comparisons, they fit in Uint32Arrays, and nothing
 * allocates. The order of positions is the order of (hi, lo).
 */

/** The high 32 bits of a position: bytes 0..3 of the sha256 digest, big endian. */
function highWord(digest: Uint8Array): number {
  return ((digest[0]! << 24) | (digest[1]! << 16) | (digest[2]! << 8) | digest[3]!) >>> 0;
}

/** The low 32 bits of the position (bytes 4..7 of sha256, big endian). */
function lowWord(digest: Uint8Array): number {
  return ((digest[4]! << 24) | (digest[5]! << 16) | (digest[6]! << 8) | digest[7]!) >>> 0;
}

/** The ring position of a string: the first 8 bytes of sha256(utf-8 text) as [hi, lo]. */
export function positionOf(text: string): [hi: number, lo: number] {
  const digest = sha256(utf8ToBytes(text));
  return [highWord(digest), lowWord(digest)];
}

/** The high word of a string's position: enough for partitionOf (Q ≤ 2^32). */
export function highWordOf(text: string): number {
  return highWord(sha256(utf8ToBytes(text)));
}

/** '#', between a node id and its token index. */
const HASH_SIGN = 0x23;

/**
 * Writes the positions of the tokens `${nodeId}#${i}`, i in 0..count-1, to high[at + i] and
 * low[at + i]. The id is UTF-8 encoded once and the ASCII `#i` appended byte by byte: the
 * same bytes as utf8(`${nodeId}#${i}`) without a TextEncoder call per token.
 */
export function writeTokenPositions(
  nodeId: string,
  count: number,
  high: Uint32Array,
  low: Uint32Array,
  at: number,
): void {
  const id = utf8ToBytes(nodeId);
  const message = new Uint8Array(id.length + 1 + String(count).length);
  message.set(id);
  message[id.length] = HASH_SIGN;
  for (let i = 0; i < count; i++) {
    const digits = String(i);
    for (let d = 0; d < digits.length; d++) message[id.length + 1 + d] = digits.charCodeAt(d);
    const digest = sha256(message.subarray(0, id.length + 1 + digits.length));
    high[at + i] = highWord(digest);
    low[at + i] = lowWord(digest);
  }
}
