/**
 * A Web Lock held for as long as the caller likes, if it is free now (or within a wait).
 * The store holds one per database (a second open fails with 'locked'); the browser node
 * shell holds one per node id (a duplicated tab must not run the same node). The browser
 * releases a lock when its page goes away.
 */

/**
 * Takes lock `name` if no one holds it, or once it is released within `waitMs` (default 0:
 * only if free now; a reloading page waits for the page it replaces to let go). Resolves
 * with its release, or with null while someone (this or another tab, a worker) holds it.
 * The release resolves once the lock is free again (releasing takes a turn of the lock
 * manager; a request right after a release must not find it still held).
 */
export function tryWebLock(name: string, waitMs = 0): Promise<(() => Promise<void>) | null> {
  return new Promise((resolve, reject) => {
    const options: LockOptions =
      waitMs > 0 ? { signal: AbortSignal.timeout(waitMs) } : { ifAvailable: true };
    const held = navigator.locks.request(name, options, (lock) => {
      if (lock === null) {
        resolve(null);
        return;
      }
      return new Promise<void>((release) =>
        resolve(async () => {
          release();
          await held;
        }),
      );
    });
    held.catch((error: unknown) => {
      // The wait ran out: held by someone else all along.
      if (error instanceof DOMException && error.name === 'TimeoutError') resolve(null);
      else reject(error);
    });
  });
}
