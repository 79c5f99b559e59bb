/**
 * One server per data directory: two servers writing one registry file would interleave
 * their changes. The lock must be released by the kernel when its process dies (SIGKILL
 * included) and must not depend on pids: a pid file is fooled by pid reuse, and in a
 * container by pid 1, which is always alive.
 *
 * Node has no flock(2). The lock is a listening Unix domain socket in the data dir, named
 * `registry.lock.<generation>`: a connect to it succeeds while its process lives and
 * fails with ECONNREFUSED once the process is gone (the file stays, nobody listens).
 *
 * Taking it:
 * 1. Listen on a unique name (`registry.lock-<random>`).
 * 2. Find the highest generation g present (0 if none). If there is one, connect to it:
 *    accepted → a live server holds the dir: refuse. ECONNREFUSED → its holder is dead:
 *    go on. ENOENT → released meanwhile: start over.
 * 3. Hard-link the unique name to generation g + 1. link(2) creates a name atomically or
 *    fails with EEXIST (another process claimed g + 1 first: start over, checking that
 *    one). The socket listens before its generation name exists, so a live holder's
 *    name always accepts connections.
 * At most one holder lives: generation g + 1 is claimed only by whoever found g dead,
 * only one process can create a name, and a dead socket never comes back. The holder
 * then removes every other lock name that refuses connections: dead generations, and
 * the pid file `registry.lock` of earlier versions.
 *
 * Releasing: unlink our name, close the socket.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readdir, unlink } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { RegistryFileError } from './registry-file.ts';

export const LOCK_NAME = 'registry.lock';
const GENERATION_NAME = /^registry\.lock\.(\d{1,15})$/;
/** Every name this lock (or an earlier version of it) ever created. */
const ANY_LOCK_NAME = /^registry\.lock(?:[.-]|$)/;
/** Rounds of step 2–3 lost to other processes before giving up. */
const MAX_CLAIM_ATTEMPTS = 16;
/**
 * `sun_path` holds 108 bytes on Linux (104 on macOS), and libuv silently truncates a
 * longer path, which would lock some other name. Longer paths go through the open
 * directory: `/proc/self/fd/<fd>/<name>` (Linux only).
 */
const MAX_SOCKET_PATH_BYTES = 100;

/** Takes the data dir's lock (see the file comment); resolves with its release. */
export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  await mkdir(dataDir, { recursive: true });
  const directory = await open(dataDir, 'r');
  const address = (name: string): string => {
    const direct = join(dataDir, name);
    if (Buffer.byteLength(direct) <= MAX_SOCKET_PATH_BYTES) return direct;
    if (process.platform === 'linux') return `/proc/self/fd/${directory.fd}/${name}`;
    throw new RegistryFileError(
      `data dir path ${dataDir} is too long for its lock socket (at most ${MAX_SOCKET_PATH_BYTES - name.length - 1} bytes here)`,
    );
  };
  let server: Server | undefined;
  try {
    const unique = `${LOCK_NAME}-${randomBytes(8).toString('hex')}`;
    server = await listen(address(unique));
    const name = await claim(dataDir, address, unique);
    await unlink(address(unique));
    await removeDead(dataDir, address, name);
    const held = server;
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      await unlink(address(name)).catch(ignoreMissing);
      await new Promise((resolve) => held.close(resolve));
      await directory.close();
    };
  } catch (error) {
    if (server) await new Promise((resolve) => server!.close(resolve));
    await directory.close();
    throw error;
  }
}

/** Steps 2–3: links `unique` to the next generation's name; returns that name. */
async function claim(
  dataDir: string,
  address: (name: string) => string,
  unique: string,
): Promise<string> {
  for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
    let highest = 0;
    for (const entry of await readdir(dataDir)) {
      const match = GENERATION_NAME.exec(entry);
      if (match) highest = Math.max(highest, Number(match[1]));
    }
    if (highest > 0) {
      const current = `${LOCK_NAME}.${highest}`;
      const holder = await probe(address(current));
      if (holder === 'alive') {
        throw new RegistryFileError(
          `data dir ${dataDir} is in use by another signaling server (its lock ${join(dataDir, current)} accepts connections); one server per data dir`,
        );
      }
      if (holder === 'gone') continue;
    }
    const next = `${LOCK_NAME}.${highest + 1}`;
    try {
      await link(address(unique), address(next));
      return next;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  throw new RegistryFileError(
    `cannot take the lock of data dir ${dataDir}: other processes kept taking it`,
  );
}

/** Removes the lock names other than `ours` that nobody listens on. */
async function removeDead(
  dataDir: string,
  address: (name: string) => string,
  ours: string,
): Promise<void> {
  for (const entry of await readdir(dataDir)) {
    if (entry === ours || !ANY_LOCK_NAME.test(entry)) continue;
    if ((await probe(address(entry))) === 'dead') {
      await unlink(address(entry)).catch(ignoreMissing);
    }
  }
}

/**
 * `alive`: a process accepts connections on `path` (or its backlog is full: someone
 * listens); `dead`: nobody listens (a socket whose process is gone, or not a socket);
 * `gone`: no such name.
 */
function probe(path: string): Promise<'alive' | 'dead' | 'gone'> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve('alive');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      socket.destroy();
      if (error.code === 'ECONNREFUSED' || error.code === 'ENOTSOCK') resolve('dead');
      else if (error.code === 'ENOENT') resolve('gone');
      else if (error.code === 'EAGAIN') resolve('alive');
      else reject(error);
    });
  });
}

function listen(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    // Connections only prove that we live; they are closed at once.
    const server = createServer((socket) => socket.destroy());
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      // The lock alone must not keep a process alive that is otherwise done.
      server.unref();
      resolve(server);
    });
  });
}

function ignoreMissing(error: NodeJS.ErrnoException): void {
  if (error.code !== 'ENOENT') throw error;
}
