/**
 * Keys as binary strings, one char per byte (latin1): string order is then bytewise key
 * order, and a string is a Map key where a Uint8Array is not. Shared by the memory disk,
 * the IndexedDB scans and the IndexedDB copy written behind the journal.
 */

/** Keys up to this length become strings in one call (far below any argument limit). */
const maxApplyKeyBytes = 4096;

export function binaryKey(key: Uint8Array): string {
  if (key.length <= maxApplyKeyBytes) {
    return String.fromCharCode.apply(null, key as unknown as number[]);
  }
  let text = '';
  for (const byte of key) text += String.fromCharCode(byte);
  return text;
}

/** The key bytes of a `binaryKey`. */
export function keyOfBinary(text: string): Uint8Array {
  const key = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) key[i] = text.charCodeAt(i);
  return key;
}
