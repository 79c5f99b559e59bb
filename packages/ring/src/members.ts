import { utf8ToBytes } from '@noble/hashes/utils.js';
import { RingError } from './errors.ts';
import { MAX_MEMBERS, MAX_NODE_ID_BYTES } from './settings.ts';

/** With the `u` flag a class of surrogates matches only unpaired ones. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/**
 * Checks one node id: a non-empty string of at most MAX_NODE_ID_BYTES UTF-8 bytes and
 * well-formed Unicode (a lone surrogate would be hashed as U+FFFD, so two different ids
 * could get the same tokens). Throws RingError('invalid_member').
 */
export function validateNodeId(nodeId: unknown): asserts nodeId is string {
  if (typeof nodeId !== 'string' || nodeId.length === 0) {
    throw new RingError(
      'invalid_member',
      `node id must be a non-empty string, got ${describe(nodeId)}`,
    );
  }
  if (LONE_SURROGATE.test(nodeId)) {
    throw new RingError(
      'invalid_member',
      `node id ${JSON.stringify(nodeId)} is not well-formed Unicode`,
    );
  }
  // A UTF-8 encoding has at least as many bytes as UTF-16 code units, at most 3 per unit.
  if (nodeId.length > MAX_NODE_ID_BYTES || utf8ToBytes(nodeId).length > MAX_NODE_ID_BYTES) {
    throw new RingError(
      'invalid_member',
      `node id ${JSON.stringify(nodeId.slice(0, MAX_NODE_ID_BYTES))}… is longer than ${MAX_NODE_ID_BYTES} UTF-8 bytes`,
    );
  }
}

/**
 * Validates a member list and returns its ids sorted (JavaScript string order, i.e. by
 * UTF-16 code units): a placement depends only on the set of members, never on the order
 * the caller listed them in. Throws RingError('invalid_member').
 */
export function sortedMembers(members: readonly string[]): string[] {
  if (!Array.isArray(members)) {
    throw new RingError(
      'invalid_member',
      `members must be an array of node ids, got ${describe(members)}`,
    );
  }
  if (members.length > MAX_MEMBERS) {
    throw new RingError(
      'invalid_member',
      `at most ${MAX_MEMBERS} members are supported, got ${members.length}`,
    );
  }
  const seen = new Set<string>();
  for (const nodeId of members) {
    validateNodeId(nodeId);
    if (seen.has(nodeId)) {
      throw new RingError('invalid_member', `duplicate node id ${JSON.stringify(nodeId)}`);
    }
    seen.add(nodeId);
  }
  return [...seen].sort();
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return 'an array';
  return value === null ? 'null' : typeof value;
}
