/**
 * A Web Lock held for as long as the caller likes, if it is free now. The store holds one
 * per database (a second open fails with 'locked'); the browser node shell holds one per
 * node id (a duplicated tab must not run the same node). The browser releases a lock when
 * its page goes away.
 */

/**
 * Takes lock `name` if no one holds it: resolves with its release, or with null while
 * someone (this or another tab, a worker) holds it. The release resolves once the lock is
 * free again (releasing takes a turn of the lock manager; a request right after a release
 * must not find it still held).
 */
export function tryWebLock(name: string): Promise<(() => Promise<void>) | null> {
  return new Promise((resolve, reject) => {
    const held = navigator.locks.request(name, { ifAvailable: true }, (lock) => {
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
    held.catch(reject);
  });
}
