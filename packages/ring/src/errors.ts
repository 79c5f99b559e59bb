/** Why a ring call refused its input. Stable strings: callers may switch on them. */
export type RingErrorCode =
  /** Settings out of range: Q not a power of two, N outside 1..5, V outside its bounds. */
  | 'invalid_settings'
  /** A member list with an empty, too long, malformed or duplicate node id, or too many ids. */
  | 'invalid_member'
  /** A partition index that is not an integer in 0..Q-1. */
  | 'invalid_partition'
  /** A key that is not a string. */
  | 'invalid_key'
  /** Two placements compared although they were computed with different settings. */
  | 'settings_mismatch';

/** The only error the ring throws on bad input; `code` is stable, `message` says what and why. */
export class RingError extends Error {
  override readonly name = 'RingError';
  readonly code: RingErrorCode;

  constructor(code: RingErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}
