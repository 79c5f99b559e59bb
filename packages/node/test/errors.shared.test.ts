import { limits } from '@meshkv/storage';
import { expect } from 'chai';
import {
  ackIncomplete,
  closed,
  ErrorCode,
  isMeshKvError,
  keyEmpty,
  keyNotString,
  keyNotWellFormed,
  keyTooLarge,
  MeshKvError,
  outcomeUnknown,
  overloaded,
  timeout,
  unavailable,
  utf8ByteLength,
  validateKey,
  valueBytes,
  valueNotBytes,
  valueNotWellFormed,
  valueTooLarge,
} from '../src/errors.ts';

function thrown(action: () => unknown): MeshKvError {
  try {
    action();
  } catch (error) {
    expect(error).to.be.instanceOf(MeshKvError);
    return error as MeshKvError;
  }
  throw new Error('expected a MeshKvError, nothing was thrown');
}

describe('node errors: MeshKvError and its builders', () => {
  it('builds every code with a readable message and JSON-serialisable details', () => {
    const built: MeshKvError[] = [
      keyTooLarge(1025),
      keyNotString(7),
      keyEmpty(),
      keyNotWellFormed(),
      valueTooLarge(limits.maxValueBytes + 1),
      valueNotBytes(null),
      valueNotWellFormed(),
      unavailable(17, ['a', 'b'], ['a', 'b']),
      timeout(5000, 'write', true),
      overloaded('maxPendingRequests', 1024),
      ackIncomplete(3, ['a', 'b', 'c'], ['c']),
      closed('was closed'),
      outcomeUnknown(4),
    ];
    const codes = new Set(built.map((error) => error.code));
    expect([...codes].sort()).to.deep.equal(Object.values(ErrorCode).sort());
    for (const error of built) {
      expect(error.name).to.equal('MeshKvError');
      expect(error.message.length, error.code).to.be.greaterThan(20);
      expect(JSON.parse(JSON.stringify(error.details)), error.code).to.deep.equal(error.details);
      expect(isMeshKvError(error)).to.equal(true);
      expect(isMeshKvError(error, error.code)).to.equal(true);
    }
    expect(unavailable(17, ['a', 'b'], ['a', 'b']).message).to.equal(
      'no replica of partition 17 is reachable: nodes a, b are down',
    );
    expect(timeout(5000, 'write', true).message).to.equal(
      'timed out after 5000 ms: the write may or may not have been applied',
    );
    expect(timeout(5000, 'write', true).details.mayHaveApplied).to.equal(true);
    expect(timeout(5000, 'read', true, 2).message).to.equal(
      'timed out after 5000 ms (partition 2): the read did not complete',
    );
    expect(timeout(5000, 'read', true).details.mayHaveApplied).to.equal(false);
    const noMajority = unavailable(5, ['a', 'b', 'c'], ['b', 'c'], 'a');
    expect(noMajority.message).to.equal(
      'partition 5 has no live majority: 2 of its 3 replicas (a, b, c) are down: b, c',
    );
    expect(noMajority.details).to.deep.equal({
      partition: 5,
      replicas: ['a', 'b', 'c'],
      downNodes: ['b', 'c'],
      leader: 'a',
    });
    expect(ackIncomplete(3, ['a', 'b', 'c'], ['c']).details.unconfirmed).to.deep.equal(['c']);
  });

  it('isMeshKvError tells codes and other errors apart', () => {
    expect(isMeshKvError(closed('left the cluster'), ErrorCode.TIMEOUT)).to.equal(false);
    expect(isMeshKvError(new Error('x'))).to.equal(false);
    expect(isMeshKvError({ code: 'TIMEOUT' })).to.equal(false);
    expect(isMeshKvError(undefined)).to.equal(false);
  });
});

describe('node errors: key and value validation', () => {
  it('refuses a key that is not a string, empty or holds a lone surrogate', () => {
    expect(thrown(() => validateKey(3)).details).to.include({ reason: 'not_string' });
    expect(thrown(() => validateKey(null)).details).to.include({ got: 'null' });
    expect(thrown(() => validateKey('')).details).to.include({ reason: 'empty' });
    for (const key of ['a\uD800', '\uDC00b', 'x\uD800\uD800y', '\uDBFF']) {
      const error = thrown(() => validateKey(key));
      expect(error.code).to.equal(ErrorCode.KEY_INVALID);
      expect(error.details.reason, JSON.stringify(key)).to.equal('lone_surrogate');
    }
    expect(validateKey('\uD83D\uDE00')).to.equal(4); // a well-formed pair: one emoji
  });

  it('takes a key of exactly maxKeyBytes UTF-8 bytes of multi-byte characters, not one more', () => {
    // 'é' is 2 UTF-8 bytes, '€' 3, '😀' 4 (a surrogate pair): lengths in units differ.
    const twoByte = 'é'.repeat(limits.maxKeyBytes / 2);
    expect(validateKey(twoByte)).to.equal(limits.maxKeyBytes);
    expect(thrown(() => validateKey(`${twoByte}a`)).details).to.include({
      reason: 'too_large',
      sizeBytes: limits.maxKeyBytes + 1,
    });
    const fourByte = '😀'.repeat(limits.maxKeyBytes / 4);
    expect(validateKey(fourByte)).to.equal(limits.maxKeyBytes);
    expect(thrown(() => validateKey(`${fourByte}a`)).code).to.equal(ErrorCode.KEY_INVALID);
    // 1023 bytes of 'a' plus one 3-byte char: 1026 bytes in 1024 units.
    const mixed = `${'a'.repeat(limits.maxKeyBytes - 1)}€`;
    expect(mixed.length).to.equal(limits.maxKeyBytes);
    expect(thrown(() => validateKey(mixed)).details.sizeBytes).to.equal(limits.maxKeyBytes + 2);
    expect(utf8ByteLength(mixed)).to.equal(new TextEncoder().encode(mixed).length);
  });

  it('takes values of exactly maxValueBytes as bytes or UTF-8, not one more', () => {
    const bytes = new Uint8Array(limits.maxValueBytes);
    expect(valueBytes(bytes)).to.equal(bytes);
    const over = thrown(() => valueBytes(new Uint8Array(limits.maxValueBytes + 1)));
    expect(over.code).to.equal(ErrorCode.VALUE_TOO_LARGE);
    expect(over.details).to.include({ sizeBytes: limits.maxValueBytes + 1 });
    const text = `${'€'.repeat((limits.maxValueBytes - 1) / 3)}a`; // 3·349525 + 1 bytes
    expect(valueBytes(text).length).to.equal(limits.maxValueBytes);
    expect(thrown(() => valueBytes(`${text}a`)).code).to.equal(ErrorCode.VALUE_TOO_LARGE);
    expect(valueBytes('')).to.deep.equal(new Uint8Array(0));
    expect([...valueBytes('hé')]).to.deep.equal([0x68, 0xc3, 0xa9]);
  });

  it('refuses a value that is neither string nor bytes, or a string with a lone surrogate', () => {
    for (const value of [null, undefined, 1, {}, [1], new ArrayBuffer(1)]) {
      expect(thrown(() => valueBytes(value)).code).to.equal(ErrorCode.VALUE_INVALID);
    }
    expect(thrown(() => valueBytes('a\uDFFF')).details).to.include({ reason: 'lone_surrogate' });
  });
});
