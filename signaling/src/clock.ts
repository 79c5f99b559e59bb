/**
 * Time for the server: the grace period, the join timeout and the rate limits. Injected so
 * tests drive the grace period with a manual clock instead of sleeping.
 */
export interface Clock {
  /** Milliseconds on a monotonic scale (only differences are used). */
  now(): number;
  /** Calls `callback` once after `delayMs`; the returned function cancels it (idempotent). */
  setTimer(delayMs: number, callback: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimer(delayMs, callback) {
    const handle = setTimeout(callback, delayMs);
    // A pending grace timer must not keep a process alive that is otherwise done.
    handle.unref();
    return () => clearTimeout(handle);
  },
};
