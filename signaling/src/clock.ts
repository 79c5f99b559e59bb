/**
 * Time for the server: the grace period, the join timeout, the rate limits and the
 * retirement of down members. Injected so tests drive them with a manual clock instead of
 * sleeping.
 */
export interface Clock {
  /** Milliseconds on a monotonic scale (only differences are used). */
  now(): number;
  /**
   * Wall-clock milliseconds since the Unix epoch, for times that are persisted and must
   * survive a restart (when a member was marked down, for its retirement).
   */
  wallClockMs(): number;
  /** Calls `callback` once after `delayMs`; the returned function cancels it (idempotent). */
  setTimer(delayMs: number, callback: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wallClockMs: () => Date.now(),
  setTimer(delayMs, callback) {
    const handle = setTimeout(callback, delayMs);
    // A pending grace timer must not keep a process alive that is otherwise done.
    handle.unref();
    return () => clearTimeout(handle);
  },
};
