// A deliberately naive model of DESIGN.md "Partitioning", written from the text alone with
// bigint positions, linear scans and string comparisons, to check the real ring against.
import { sha256 } from '@noble/hashes/sha2.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import type { RingSettings } from '../src/index.ts';

export function referencePosition(text: string): bigint {
  const digest = sha256(utf8ToBytes(text));
  let position = 0n;
  for (let i = 0; i < 8; i++) position = (position << 8n) | BigInt(digest[i]!);
  return position;
}

export function referencePartitionOf(key: string, partitions: number): number {
  const bits = BigInt(Math.log2(partitions));
  return Number(referencePosition(key) >> (64n - bits));
}

/** Per partition, the first min(N, M) distinct members clockwise from p·2^64/Q. */
export function referencePlacement(settings: RingSettings, members: readonly string[]): string[][] {
  const tokens: { position: bigint; id: string }[] = [];
  for (const id of members) {
    for (let i = 0; i < settings.tokensPerNode; i++) {
      tokens.push({ position: referencePosition(`${id}#${i}`), id });
    }
  }
  tokens.sort((a, b) =>
    a.position !== b.position
      ? a.position < b.position
        ? -1
        : 1
      : a.id < b.id
        ? -1
        : a.id > b.id
          ? 1
          : 0,
  );
  const table: string[][] = [];
  for (let p = 0; p < settings.partitions; p++) {
    const start = (BigInt(p) << 64n) / BigInt(settings.partitions);
    let first = tokens.findIndex((token) => token.position >= start);
    if (first < 0) first = 0;
    const replicas: string[] = [];
    for (let step = 0; step < tokens.length; step++) {
      const { id } = tokens[(first + step) % tokens.length]!;
      if (replicas.length < settings.replicationFactor && !replicas.includes(id)) replicas.push(id);
    }
    table.push(replicas);
  }
  return table;
}

/** A reproducible "random" member set: sha256 makes the tokens of these ids random. */
export function memberSet(set: number, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `s${set}-n${i}`);
}
