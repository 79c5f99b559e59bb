/**
 * Node's native CRC-32 for the store's checksums: zlib.crc32 (Node 20.15+, 22.2+) is 6-8x
 * the JavaScript CRC from 1 KiB on (a 1 MiB value: ~0.3 ms instead of ~2 ms), and a 1 MiB
 * put seals its value twice (the log entry and the KV write). Importing this module
 * installs it; on a Node without zlib.crc32 the JavaScript CRC stays.
 */
import * as zlib from 'node:zlib';
import { useNativeCrc32 } from './codec.ts';

/** zlib.crc32 where this Node has it (the types know it, older Node versions do not). */
export const zlibCrc32 = (zlib as Partial<typeof zlib>).crc32 ?? null;

if (zlibCrc32 !== null) useNativeCrc32(zlibCrc32);
