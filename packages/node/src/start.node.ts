/**
 * `meshkv start [--data DIR] [--nodes N] [--port P]`: a local cluster in one folder (layout:
 * cluster-dir.node.ts). The signaling server (the registry) runs in this process; each
 * peer is a child process `meshkv node` on its own data directory DIR/nodes/<i>, so a
 * peer's crash or kill -9 is a real process's, as in production.
 *
 * Contract:
 * - DIR's lock is taken first: a second start on a folder another live start holds is
 *   refused (exit 1) before anything is read or started.
 * - The token is generated on the first start (DIR/token, 0600) and passed to the peers in
 *   their environment, never on a command line (other users see those) nor in a log.
 * - The demo app is built first if its sources changed (demo-build.node.ts) and served by
 *   the signaling server at `/`, with `/demo-config.json` (the token) for loopback pages:
 *   every tab opened on it joins the cluster as a node.
 * - Ports: the signaling server on P (default 7700), peer i's HTTP API on P + i; with
 *   `--port 0` every one takes a free port. All on 127.0.0.1, ICE too (no STUN).
 * - Ready once every peer reports (over its IPC channel) that it runs: then DIR/cluster.json
 *   is written and the summary printed. A peer that exits before that stops the start.
 * - Peers run in their own process groups: a terminal's Ctrl-C reaches this process only,
 *   which stops them by pid (SIGTERM; SIGKILL past STOP_DEADLINE_MS), then the server. A
 *   peer whose parent dies (kill -9) sees its IPC channel close and stops by itself.
 * - A peer that exits while the cluster runs is reported; the others go on (a majority of
 *   each partition keeps serving); a later start brings it back on its data.
 * - After the summary it reports the placement until every partition is where the ring
 *   puts it (a new cluster's first member creates each partition with one voter, and
 *   rebalancing grows it to N): a progress line as the count changes (at most every
 *   PLACEMENT_PROGRESS_MS), one line when all are, one if they are not within
 *   PLACEMENT_WATCH_MS.
 * - A later start on DIR resumes: the same registry, the same node identities and data.
 *   Right after a kill -9 it waits (up to HELD_DATA_DIR_WAIT_MS) for the old peers to let
 *   go of their data directories.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignalingServer } from '@meshkv/signaling';
import { MeshKvClient, partitionsInPlace } from './client.node.ts';
import {
  CLUSTER_FILE,
  type ClusterPeer,
  peerDataDir,
  readOrCreateToken,
  TOKEN_FILE,
  writeClusterFile,
} from './cluster-dir.node.ts';
import { DEMO_BUILD_DIR, type DemoBuildResult, ensureDemoBuilt } from './demo-build.node.ts';
import { tryLockDirectory } from './peer.node.ts';

/** How long a peer may take to join and load its partitions. */
const PEER_READY_DEADLINE_MS = 120_000;
/** How long a peer may take to stop cleanly before it is killed. */
const STOP_DEADLINE_MS = 30_000;
/**
 * How long a start waits for a peer's data directory held by another process: the peers
 * of a start killed with -9 stop by themselves, but may hold their directories a moment.
 */
const HELD_DATA_DIR_WAIT_MS = 30_000;
const HELD_DATA_DIR_POLL_MS = 100;
/** Bytes of a child's output line kept before it is cut (its log lines are short). */
const MAX_LINE_BYTES = 16 * 1024;
const CLI_PATH = fileURLToPath(new URL('./cli.node.ts', import.meta.url));
/** How often the start looks at the peers' placement (their /status) while it is not done. */
const PLACEMENT_POLL_MS = 1_000;
/** A progress line at most this often. */
const PLACEMENT_PROGRESS_MS = 5_000;
/** It stops looking after this long, saying where it stood. */
const PLACEMENT_WATCH_MS = 10 * 60_000;

export interface StartOptions {
  /** The cluster folder (absolute). */
  readonly dir: string;
  readonly nodes: number;
  /** The signaling server's port; peer i's HTTP API gets port + i. 0: free ports. */
  readonly port: number;
  /** Partitions of a new cluster (the registry fixes them at its creation). */
  readonly partitions?: number;
  /** How the summary tells the user to run the CLI, e.g. `npx -y pnpm@10.34.8 meshkv`. */
  readonly cliCommand: string;
  /** `--data DIR` as the user should repeat it to the CLI, or '' for the default folder. */
  readonly dataFlag: string;
}

/** Refusals the user must act on (exit 1 with the message). */
export class StartError extends Error {
  override readonly name = 'StartError';
}

/** Runs the cluster until SIGINT/SIGTERM; resolves with the exit code. */
export async function runStart(options: StartOptions): Promise<number> {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const peers: PeerProcess[] = [];
  // Installed first: a signal during the start stops what runs, cleanly.
  let signalled: (signal: string) => void = () => {};
  const stopSignal = new Promise<string>((resolve) => {
    signalled = resolve;
  });
  const onSignal = (signal: NodeJS.Signals) => {
    signalled(signal);
    // A second one while stopping: kill what is left and exit.
    const again = () => {
      for (const peer of peers) peer.kill('SIGKILL');
      process.exit(1);
    };
    process.once('SIGINT', again);
    process.once('SIGTERM', again);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const { dir } = options;
  const unlock = await tryLockDirectory(dir);
  if (unlock === null) {
    throw new StartError(
      `${dir} is in use by another running \`meshkv start\` (its lock ${join(dir, 'lock')} is held): stop that one first (Ctrl-C where it runs), or use another --data folder`,
    );
  }
  let server: SignalingServer | null = null;
  try {
    const { token, created } = await readOrCreateToken(dir);
    // Before anything listens: a build (seconds) must not delay the peers' grace periods.
    const demo = await ensureDemoBuilt(out);
    if (demo.kind === 'up to date') {
      out('demo: demo/dist is up to date (its sources did not change since it was built)');
    } else if (demo.kind === 'built') {
      out(`demo: built in ${(demo.elapsedMs / 1000).toFixed(1)} s (${demo.reason})`);
    } else if (demo.kind === 'failed') {
      out(`demo: not built, so not served (the cluster runs without it): ${demo.reason}`);
    }
    const staticDir = (await isDirectory(DEMO_BUILD_DIR)) ? DEMO_BUILD_DIR : undefined;
    server = await SignalingServer.start({
      dataDir: join(dir, 'signaling'),
      token,
      host: '127.0.0.1',
      port: options.port,
      ...(options.partitions === undefined ? {} : { settings: { partitions: options.partitions } }),
      ...(staticDir === undefined ? {} : { staticDir, serveDemoConfig: true }),
      log: (line) => out(`[signaling] ${line}`),
    }).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') {
        throw new StartError(
          `port ${options.port} (signaling) is in use: choose another base port with --port P (peers take P+1..P+${options.nodes}), or --port 0 for free ports`,
        );
      }
      throw new StartError(`the signaling server cannot start: ${error.message}`);
    });
    out(`signaling server and registry on ${server.url}`);
    for (let index = 1; index <= options.nodes; index++) {
      await waitForDataDir(peerDataDir(dir, index));
      const httpPort = options.port === 0 ? 0 : options.port + index;
      peers.push(PeerProcess.spawn(index, dir, server.url, token, httpPort, out));
    }
    const started = await Promise.race([
      Promise.all(peers.map((peer) => peer.ready)).then((ready) => ({ ready })),
      stopSignal.then((signal) => ({ signal })),
    ]);
    if ('signal' in started) {
      out(`${started.signal}: stopping`);
    } else {
      await writeClusterFile(dir, {
        format: 'meshkv-cluster',
        version: 1,
        pid: process.pid,
        startedAt: new Date().toISOString(),
        signalingUrl: server.url,
        tokenFile: TOKEN_FILE,
        peers: started.ready,
      });
      out(summary(options, server.url, started.ready, created, staticDir !== undefined, demo));
      void reportPlacement(started.ready, token, server.settings.partitions, out, stopSignal);
      for (const peer of peers) {
        peer.exited.then((code) => {
          if (!peer.stopping) {
            out(
              `node ${peer.index} exited (${code}) while the cluster runs; the others go on. Start again to bring it back`,
            );
          }
        });
      }
      out(`${await stopSignal}: stopping`);
    }
    return 0;
  } finally {
    await Promise.all(peers.map((peer) => peer.stop()));
    await server?.close();
    await unlock();
    if (peers.length > 0) out('stopped');
  }
}

/**
 * Progress of the placement after a start (see the file comment): partitions whose leader
 * reports them in place, out of `partitions`. Ends when all are, at PLACEMENT_WATCH_MS, or
 * when the start stops.
 */
async function reportPlacement(
  peers: readonly ClusterPeer[],
  token: string,
  partitions: number,
  out: (line: string) => void,
  stopSignal: Promise<unknown>,
): Promise<void> {
  const startMs = performance.now();
  let stopped = false;
  void stopSignal.then(() => {
    stopped = true;
  });
  const client = new MeshKvClient({
    endpoints: peers.map((peer) => peer.httpUrl),
    token,
    timeoutMs: PLACEMENT_POLL_MS,
  });
  let placed = 0;
  let reportedMs = 0;
  let reported = -1;
  const seconds = () => ((performance.now() - startMs) / 1000).toFixed(1);
  while (!stopped && performance.now() - startMs < PLACEMENT_WATCH_MS) {
    placed = await client.status().then(partitionsInPlace, () => placed);
    if (stopped) return;
    if (placed >= partitions) {
      out(
        `placement: all ${partitions} partitions on the replicas the ring gives them (${seconds()} s after the summary)`,
      );
      return;
    }
    if (placed !== reported && performance.now() - reportedMs >= PLACEMENT_PROGRESS_MS) {
      out(`placement: ${placed} of ${partitions} partitions in place; replicas are being added`);
      reported = placed;
      reportedMs = performance.now();
    }
    await Promise.race([
      new Promise((resolve) => setTimeout(resolve, PLACEMENT_POLL_MS)),
      stopSignal,
    ]);
  }
  if (!stopped) {
    out(
      `placement: ${placed} of ${partitions} partitions in place after ${PLACEMENT_WATCH_MS / 60_000} min; \`meshkv status\` tells why`,
    );
  }
}

function summary(
  options: StartOptions,
  signalingUrl: string,
  peers: readonly ClusterPeer[],
  tokenCreated: boolean,
  demoServed: boolean,
  demo: DemoBuildResult,
): string {
  const cli = options.cliCommand;
  const data = options.dataFlag;
  const dir = options.dir;
  const demoLine = demoServed
    ? `  demo                  ${signalingUrl}/  <- open it, in several tabs: each tab joins as a node${demo.kind === 'failed' ? ' (an older build: this one failed, see above)' : ''}`
    : '  demo                  not served (its build failed, see above)';
  const lines = [
    '',
    `meshkv: ${peers.length} node${peers.length === 1 ? '' : 's'} running, data in ${dir}`,
    demoLine,
    `  signaling + registry  ${signalingUrl}  (registry: ${signalingUrl}/status)`,
    ...peers.map((p) => `  node ${p.index}  ${p.nodeId}  HTTP API ${p.httpUrl}  (pid ${p.pid})`),
    `  token                 ${join(dir, TOKEN_FILE)}${tokenCreated ? ' (generated now)' : ''}: clients beyond loopback send it as "Authorization: Bearer <token>"`,
    `  cluster file          ${join(dir, CLUSTER_FILE)} (the CLI finds the peers there)`,
    '',
    'Use it (from another terminal in the same folder):',
    `  ${cli} put greeting hello${data}      # true`,
    `  ${cli} get greeting${data}            # hello`,
    `  ${cli} del greeting${data}            # true`,
    `  ${cli} status${data}                  # members and partitions`,
    `  curl ${peers[0]!.httpUrl}/kv/greeting`,
    '',
    `Stop: Ctrl-C here (or \`${cli} stop${data}\`, or kill ${process.pid}). The data stays in ${dir}: \`meshkv start\`${data} again resumes it.`,
    '',
  ];
  return lines.join('\n');
}

/** One `meshkv node` child (see the file comment). */
class PeerProcess {
  readonly ready: Promise<ClusterPeer>;
  readonly exited: Promise<number | string>;
  stopping = false;
  private exitCode: number | string | undefined = undefined;

  private constructor(
    readonly index: number,
    private readonly child: ChildProcess,
    dataDir: string,
    out: (line: string) => void,
  ) {
    forwardLines(child.stdout!, (line) => out(`[node ${index}] ${line}`));
    forwardLines(child.stderr!, (line) => process.stderr.write(`[node ${index}] ${line}\n`));
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitCode = code ?? signal ?? 'unknown';
        resolve(this.exitCode);
      });
    });
    this.ready = new Promise<ClusterPeer>((resolve, reject) => {
      const deadline = setTimeout(() => {
        reject(new StartError(`node ${index} did not start within ${PEER_READY_DEADLINE_MS} ms`));
      }, PEER_READY_DEADLINE_MS);
      child.on('message', (message: { type?: unknown; nodeId?: unknown; httpUrl?: unknown }) => {
        if (message?.type !== 'ready') return;
        clearTimeout(deadline);
        if (typeof message.nodeId !== 'string' || typeof message.httpUrl !== 'string') {
          reject(new StartError(`node ${index} reported no node id and HTTP address`));
          return;
        }
        resolve({ index, nodeId: message.nodeId, httpUrl: message.httpUrl, pid: child.pid! });
      });
      this.exited.then((code) => {
        clearTimeout(deadline);
        reject(
          new StartError(
            `node ${index} (data ${dataDir}) exited (${code}) before it ran: its messages are above`,
          ),
        );
      });
    });
    // Reported by runStart's race; a rejection nobody awaits must not crash the process.
    this.ready.catch(() => {});
  }

  static spawn(
    index: number,
    dir: string,
    signalingUrl: string,
    token: string,
    httpPort: number,
    out: (line: string) => void,
  ): PeerProcess {
    const args = [
      '--import',
      import.meta.resolve('tsx'),
      CLI_PATH,
      'node',
      '--signaling',
      signalingUrl,
      '--data',
      peerDataDir(dir, index),
      '--http',
      `127.0.0.1:${httpPort}`,
    ];
    const child = spawn(process.execPath, args, {
      env: { ...process.env, MESHKV_TOKEN: token },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      // Its own process group: a terminal's Ctrl-C is ours to pass on, after our own stop.
      detached: true,
    });
    return new PeerProcess(index, child, peerDataDir(dir, index), out);
  }

  kill(signal: NodeJS.Signals): void {
    if (this.exitCode === undefined) this.child.kill(signal);
  }

  /** SIGTERM by pid, SIGKILL past STOP_DEADLINE_MS; resolves once it exited. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.exitCode !== undefined) return;
    this.kill('SIGTERM');
    const killer = setTimeout(() => this.kill('SIGKILL'), STOP_DEADLINE_MS);
    await this.exited;
    clearTimeout(killer);
  }
}

/** Resolves once no other process holds `dataDir` (see HELD_DATA_DIR_WAIT_MS). */
async function waitForDataDir(dataDir: string): Promise<void> {
  const deadlineMs = Date.now() + HELD_DATA_DIR_WAIT_MS;
  for (;;) {
    const unlock = await tryLockDirectory(dataDir);
    if (unlock !== null) return unlock();
    if (Date.now() > deadlineMs) {
      throw new StartError(
        `${dataDir} is still held by another process after ${HELD_DATA_DIR_WAIT_MS} ms (a peer of an earlier start? its pid is in cluster.json): stop it first`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, HELD_DATA_DIR_POLL_MS));
  }
}

/** Calls `onLine` with each line `stream` yields (long lines cut at MAX_LINE_BYTES). */
function forwardLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    pending += chunk;
    let at = pending.indexOf('\n');
    while (at >= 0) {
      onLine(pending.slice(0, at));
      pending = pending.slice(at + 1);
      at = pending.indexOf('\n');
    }
    if (pending.length > MAX_LINE_BYTES) {
      onLine(`${pending.slice(0, MAX_LINE_BYTES)}…`);
      pending = '';
    }
  });
  stream.on('end', () => {
    if (pending.length > 0) onLine(pending);
  });
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (info) => info.isDirectory(),
    () => false,
  );
}
