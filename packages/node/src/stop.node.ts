/**
 * `meshkv stop [--data DIR]`: stops the `meshkv start` that runs the cluster in DIR, as
 * Ctrl-C in its terminal would (SIGTERM to its pid, from DIR/cluster.json), and waits until
 * it exited. For scripts and for a start whose wrapper was killed: `npx pnpm meshkv start`
 * does not pass a SIGTERM of its own on to the start, which then keeps running.
 *
 * On Linux the pid is checked to be a `meshkv start` first (/proc/PID/cmdline), so a pid
 * reused by another process since is never signalled.
 */
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { readClusterFile } from './cluster-dir.node.ts';

/** The start's own stop: its peers' deadline (30 s, then SIGKILL) plus the server's. */
const STOP_WAIT_MS = 60_000;
const POLL_MS = 100;

/** Why `meshkv stop` could not stop the cluster (exit code 1). */
export class StopError extends Error {
  override readonly name = 'StopError';
}

/** What `meshkv stop` prints. */
export async function stopStart(dir: string): Promise<string> {
  const file = await readClusterFile(dir);
  if (file === null) {
    throw new StopError(`no cluster in ${dir} (no cluster.json: \`meshkv start\` never ran there)`);
  }
  const pid = file.pid;
  if (!isRunning(pid))
    return `the cluster in ${dir} is not running (its start, pid ${pid}, exited)`;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => null);
  if (cmdline !== null && !isMeshkvStart(cmdline.split('\0'))) {
    return `the cluster in ${dir} is not running (pid ${pid} is another program now)`;
  }
  process.kill(pid, 'SIGTERM');
  for (let waitedMs = 0; isRunning(pid); waitedMs += POLL_MS) {
    if (waitedMs >= STOP_WAIT_MS) {
      throw new StopError(`meshkv start (pid ${pid}) still runs ${STOP_WAIT_MS} ms after SIGTERM`);
    }
    await sleep(POLL_MS);
  }
  return `stopped the cluster in ${dir} (meshkv start, pid ${pid}); its data stays there`;
}

/** Whether `pid` exists (signal 0 checks without signalling; EPERM: it exists). */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** `node … cli.node.ts start …` (or a build of the CLI named meshkv). */
function isMeshkvStart(args: readonly string[]): boolean {
  const at = args.indexOf('start');
  return at > 0 && args.slice(0, at).some((arg) => /cli\.node\.[jt]s$|meshkv/.test(arg));
}
