// `meshkv start` and the client commands as real processes: a 3-node cluster in a
// temporary folder on free ports, put/get/del/status through the CLI, the error codes the
// CLI can reach, failover (an unreachable first endpoint, a kill -9 peer), a write whose
// connection breaks or gets no answer (OUTCOME_UNKNOWN, TIMEOUT), a second start refused,
// SIGINT stopping every child, a restart resuming the data under the same identities,
// `meshkv stop` stopping that one, and
// the peers of a start killed with -9 stopping by themselves while a new start takes over.
// Starts WebRTC peers: runs inside the private network namespace (`pnpm test` or
// scripts/netns-run.sh). Every process is stopped by pid.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { limits } from '@meshkv/storage';
import { expect } from 'chai';
import { type ClusterFile, peerDataDir } from '../src/cluster-dir.node.ts';
import { tryLockDirectory } from '../src/peer.node.ts';
import {
  DEADLINE_MS,
  getJson,
  MESHKV_CLI,
  Proc,
  ProcessSet,
  peerStatus,
  ROOT,
  waitUntil,
} from './support/processes.ts';

/** tsx by its resolved path: the CLI also runs from the cluster's folder (cwd), not ROOT. */
const TSX = import.meta.resolve('tsx');
const PARTITIONS = 8;

interface CliResult {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** One CLI command to its end; `input` is its stdin. */
function cli(
  args: readonly string[],
  options: { cwd?: string; input?: Uint8Array | string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', TSX, MESHKV_CLI, ...args], {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk;
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout: Buffer.concat(stdout), stderr }));
    child.stdin.end(options.input ?? '');
  });
}

/** `meshkv start` on `dir`: 3 nodes, free ports, few partitions (a quick start). */
function spawnStart(dir: string): Proc {
  const args = ['start', '--data', dir, '--nodes', '3', '--port', '0'];
  return Proc.spawn(MESHKV_CLI, [...args, '--partitions', String(PARTITIONS)], {
    name: 'meshkv start',
  });
}

async function summaryPrinted(start: Proc): Promise<void> {
  await waitUntil(
    () => {
      if (!start.running) throw new Error(`meshkv start exited ${start.exitCode}`);
      return /^Stop: Ctrl-C/m.test(start.stdout) ? true : undefined;
    },
    'meshkv start to print its summary',
    () => start.state(),
  );
}

/** Whether `pid` runs (a zombie, dead but not yet reaped by its new parent, does not). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
}

/** A TCP server on 127.0.0.1 that does `onConnection` with every socket. */
async function tcpServer(
  onConnection: (socket: Socket) => void,
): Promise<{ server: Server; url: string }> {
  const server = createServer(onConnection);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return { server, url: `http://127.0.0.1:${port}` };
}

async function closedPortUrl(): Promise<string> {
  const { server, url } = await tcpServer((socket) => socket.destroy());
  await new Promise((resolve) => server.close(resolve));
  return url;
}

/** Waits until every partition has a leader some reachable peer reports. */
function waitForLeaders(file: ClusterFile): Promise<true> {
  return waitUntil(async () => {
    const led = new Set<number>();
    for (const peer of file.peers) {
      const status = await peerStatus(peer.httpUrl).catch(() => null);
      for (const group of status?.groups ?? [])
        if (group.role === 'leader') led.add(group.partition);
    }
    return led.size === PARTITIONS ? true : undefined;
  }, `a leader for each of the ${PARTITIONS} partitions`);
}

describe('meshkv start and the CLI (real processes)', function () {
  this.timeout(5 * DEADLINE_MS);
  let home: string;
  let dir: string;
  let start: Proc;
  let file: ClusterFile;
  const processes = new ProcessSet();
  const servers: Server[] = [];
  const readClusterFile = (): ClusterFile =>
    JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as ClusterFile;
  /** The CLI run in the folder holding ./.meshkv: it finds the cluster without flags. */
  const inFolder = (args: readonly string[], input?: Uint8Array | string) =>
    cli(args, { cwd: home, ...(input === undefined ? {} : { input }) });

  before(async () => {
    home = mkdtempSync(join(tmpdir(), 'meshkv-cli-'));
    dir = join(home, '.meshkv');
    start = processes.track(spawnStart(dir));
    await summaryPrinted(start);
    file = readClusterFile();
  });

  after(async () => {
    for (const server of servers) server.close();
    await processes.killAll();
    // Peers stop by themselves once their parent is gone (IPC channel closed); any left
    // after a failure are killed by the pids the cluster files named.
    for (const peer of file?.peers ?? []) if (alive(peer.pid)) process.kill(peer.pid, 'SIGKILL');
    rmSync(home, { recursive: true, force: true });
  });

  it('prints a summary, keeps the token in the folder (0600, never printed) and registers each HTTP API', async () => {
    expect(file.peers).to.have.length(3);
    expect(start.stdout).to.include(file.signalingUrl);
    for (const peer of file.peers) expect(start.stdout).to.include(peer.httpUrl);
    expect(start.stdout).to.include(join(dir, 'token'));
    const token = readFileSync(join(dir, 'token'), 'utf8').trim();
    expect(token).to.match(/^[0-9a-f]{64}$/);
    expect(statSync(join(dir, 'token')).mode & 0o777).to.equal(0o600);
    expect(start.stdout + start.stderr).to.not.include(token);
    const registry = await getJson<{ members: { nodeId: string; httpAddress?: string }[] }>(
      `${file.signalingUrl}/status`,
    );
    const addresses = Object.fromEntries(registry.members.map((m) => [m.nodeId, m.httpAddress]));
    for (const peer of file.peers) expect(addresses[peer.nodeId]).to.equal(peer.httpUrl);
  });

  it('reports the placement after the summary until every partition has its replicas', async () => {
    const line = await waitUntil(
      async () =>
        /^placement: all (\d+) partitions on the replicas the ring gives them/m.exec(
          start.stdout,
        )?.[0],
      'the start to report every partition in place',
    );
    expect(line).to.include(`all ${PARTITIONS} partitions`);
    // What it said matches the peers: every partition's leader has three voters.
    const voters = new Map<number, number>();
    for (const peer of file.peers) {
      for (const group of (await peerStatus(peer.httpUrl)).groups) {
        if (group.role === 'leader') voters.set(group.partition, group.voters.length);
      }
    }
    expect([...voters.values()]).to.deep.equal(Array(PARTITIONS).fill(3));
  });

  it('refuses a second start on the same folder while the first runs', async () => {
    const second = await cli(['start', '--data', dir, '--port', '0']);
    expect(second.code, second.stderr).to.equal(1);
    expect(second.stderr).to.match(/in use by another running `meshkv start`/);
    expect(start.running).to.equal(true);
  });

  it('puts, gets and deletes through the CLI, finding the cluster in ./.meshkv', async () => {
    const put = await inFolder(['put', 'greeting', 'hello']);
    expect(put.code, put.stderr).to.equal(0);
    expect(put.stdout.toString()).to.equal('true\n');
    const get = await inFolder(['get', 'greeting']);
    expect(get.code, get.stderr).to.equal(0);
    expect(get.stdout.toString()).to.equal('hello');
    // As `pnpm meshkv` runs it: in the workspace root, the caller's folder in INIT_CWD.
    const viaPnpm = await cli(['get', 'greeting'], {
      env: { INIT_CWD: home, npm_lifecycle_event: 'meshkv' },
    });
    expect(viaPnpm.stdout.toString(), viaPnpm.stderr).to.equal('hello');
    expect((await inFolder(['get', 'missing'])).stdout.toString()).to.equal('null\n');
    expect((await inFolder(['put', 'gone', 'soon'])).code).to.equal(0);
    const del = await inFolder(['del', 'gone']);
    expect(del.code, del.stderr).to.equal(0);
    expect(del.stdout.toString()).to.equal('true\n');
    expect((await inFolder(['del', 'gone'])).stdout.toString()).to.equal('false\n');
    const acked = await inFolder(['put', 'acked', 'by all', '--ack', 'all', '--timeout', '30000']);
    expect(acked.stdout.toString(), acked.stderr).to.equal('true\n');
    const local = await inFolder(['get', 'acked', '--consistency', 'local']);
    expect(local.stdout.toString(), local.stderr).to.equal('by all');
  });

  it('takes a binary value from stdin and prints it back raw', async () => {
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const put = await inFolder(['put', 'bytes', '-'], bytes);
    expect(put.code, put.stderr).to.equal(0);
    const get = await inFolder(['get', 'bytes']);
    expect([...get.stdout]).to.deep.equal([...bytes]);
  });

  it('prints the status table: every member and every partition with its leader', async () => {
    await waitForLeaders(file);
    const status = await inFolder(['status']);
    expect(status.code, status.stderr).to.equal(0);
    const text = status.stdout.toString();
    for (const peer of file.peers) {
      expect(text).to.match(new RegExp(`^${peer.nodeId}\\s+node\\s+up\\s+${peer.httpUrl}`, 'm'));
    }
    expect(text).to.include(`Partitions (${PARTITIONS};`);
    const ids = file.peers.map((p) => p.nodeId).join('|');
    for (let partition = 0; partition < PARTITIONS; partition++) {
      expect(text).to.match(new RegExp(`^${partition}\\s+(${ids})\\s+\\d+`, 'm'));
    }
  });

  it('exits 1 with CODE: message: KEY_INVALID, VALUE_TOO_LARGE, and usage errors with 2', async () => {
    const empty = await inFolder(['get', '']);
    expect(empty.code, empty.stderr).to.equal(1);
    expect(empty.stderr).to.match(/^KEY_INVALID: the key must not be empty\n$/);
    const long = await inFolder(['put', 'k'.repeat(limits.maxKeyBytes + 1), 'v']);
    expect(long.code, long.stderr).to.equal(1);
    expect(long.stderr).to.match(/^KEY_INVALID: the key is 1025 UTF-8 bytes/);
    const large = await inFolder(['put', 'big', '-'], new Uint8Array(limits.maxValueBytes + 1));
    expect(large.code, large.stderr).to.equal(1);
    expect(large.stderr).to.match(/^VALUE_TOO_LARGE: /);
    expect((await inFolder(['get', 'big'])).stdout.toString()).to.equal('null\n');
    const usage = await inFolder(['get', 'a', 'b']);
    expect(usage.code, usage.stderr).to.equal(2);
    expect(usage.stderr).to.match(/get takes KEY/);
    const help = await inFolder(['put', '--help']);
    expect(help.code, help.stderr).to.equal(0);
    expect(help.stdout.toString()).to.match(/^Usage: meshkv put KEY/);
  });

  it('fails over past an unreachable endpoint; UNAVAILABLE when none answers', async () => {
    const dead = await closedPortUrl();
    const live = file.peers[1]!.httpUrl;
    const put = await cli(['put', 'failover', 'ok', '--endpoint', dead, '--endpoint', live]);
    expect(put.stdout.toString(), put.stderr).to.equal('true\n');
    const none = await cli([
      'get',
      'failover',
      '--endpoint',
      dead,
      '--endpoint',
      await closedPortUrl(),
    ]);
    expect(none.code, none.stderr).to.equal(1);
    expect(none.stderr).to.match(/^UNAVAILABLE: no peer reachable: .*ECONNREFUSED/);
  });

  it('a write whose connection breaks or gets no answer may have applied: not retried elsewhere', async () => {
    const live = file.peers[0]!.httpUrl;
    // Reads the request, then closes the connection without an answer.
    const breaking = await tcpServer((socket) => socket.once('data', () => socket.destroy()));
    // Accepts and never answers.
    const silent = await tcpServer(() => {});
    servers.push(breaking.server, silent.server);
    const broken = await cli([
      'put',
      'unknown',
      'v',
      '--endpoint',
      breaking.url,
      '--endpoint',
      live,
    ]);
    expect(broken.code, broken.stderr).to.equal(1);
    expect(broken.stderr).to.match(
      /^OUTCOME_UNKNOWN: .* closed the connection before answering .*: the write may or may not have been applied/,
    );
    const timedOut = await cli([
      'put',
      'unknown',
      'v',
      '--timeout',
      '50',
      '--endpoint',
      silent.url,
      '--endpoint',
      live,
    ]);
    expect(timedOut.code, timedOut.stderr).to.equal(1);
    expect(timedOut.stderr).to.match(
      /^TIMEOUT: no answer from .* within \d+ ms: the write may or may not have been applied/,
    );
    expect((await cli(['get', 'unknown', '--endpoint', live])).stdout.toString()).to.equal(
      'null\n',
    );
    // A read is safe to repeat: it goes on to the next endpoint.
    const read = await cli(['get', 'greeting', '--endpoint', breaking.url, '--endpoint', live]);
    expect(read.stdout.toString(), read.stderr).to.equal('hello');
  });

  it('serves with the first peer killed (-9): the CLI fails over from the cluster file', async () => {
    const first = file.peers[0]!;
    process.kill(first.pid, 'SIGKILL');
    await waitUntil(
      () => (start.stdout.includes('node 1 exited') ? true : undefined),
      'meshkv start to report node 1 gone',
      () => start.state(),
    );
    expect(alive(first.pid)).to.equal(false);
    const put = await inFolder(['put', 'while-down', 'written', '--timeout', '30000']);
    expect(put.stdout.toString(), put.stderr).to.equal('true\n');
    const get = await inFolder(['get', 'greeting', '--timeout', '30000']);
    expect(get.stdout.toString(), get.stderr).to.equal('hello');
  });

  it('SIGINT stops every child; the CLI then says UNAVAILABLE; a restart resumes data and identities; meshkv stop stops it', async () => {
    const pids = file.peers.map((p) => p.pid);
    expect(await start.stop('SIGINT'), JSON.stringify(start.state())).to.equal(0);
    expect(start.stdout).to.match(/^stopped$/m);
    for (const pid of pids) expect(alive(pid), `pid ${pid}`).to.equal(false);
    const down = await inFolder(['get', 'greeting']);
    expect(down.code, down.stderr).to.equal(1);
    expect(down.stderr).to.match(/^UNAVAILABLE: no peer reachable/);

    const restarted = processes.track(spawnStart(dir));
    await summaryPrinted(restarted);
    const again = readClusterFile();
    expect(again.peers.map((p) => p.nodeId)).to.deep.equal(file.peers.map((p) => p.nodeId));
    expect(restarted.stdout).to.not.include('(generated now)');
    file = again;
    for (const [key, value] of [
      ['greeting', 'hello'],
      ['while-down', 'written'],
      ['acked', 'by all'],
    ]) {
      const get = await inFolder(['get', key!, '--timeout', '30000']);
      expect(get.stdout.toString(), get.stderr).to.equal(value);
    }
    // `meshkv stop` ends it as SIGINT did: by the start's pid from the cluster file.
    const stopped = await inFolder(['stop']);
    expect(stopped.code, stopped.stderr).to.equal(0);
    expect(stopped.stdout.toString()).to.match(
      /^stopped the cluster in .* \(meshkv start, pid \d+\)/,
    );
    expect(await restarted.exited, JSON.stringify(restarted.state())).to.equal(0);
    for (const peer of again.peers) expect(alive(peer.pid), `pid ${peer.pid}`).to.equal(false);
    const twice = await inFolder(['stop']);
    expect(twice.code, twice.stderr).to.equal(0);
    expect(twice.stdout.toString()).to.match(/is not running \(its start, pid \d+, exited\)/);
  });

  it('kill -9 of meshkv start: its peers stop by themselves, and a start at once takes over', async () => {
    const killed = processes.track(spawnStart(dir));
    await summaryPrinted(killed);
    const orphans = readClusterFile().peers;
    await killed.stop('SIGKILL');
    // The new start waits for the orphans to let go of their data directories.
    const next = processes.track(spawnStart(dir));
    await summaryPrinted(next);
    // They let go of their directories as the last step of their stop, then exit.
    await waitUntil(
      () => (orphans.every((peer) => !alive(peer.pid)) ? true : undefined),
      'the orphaned peers to exit',
      () => orphans.map((peer) => ({ pid: peer.pid, alive: alive(peer.pid) })),
    );
    file = readClusterFile();
    expect(file.peers.map((p) => p.nodeId)).to.deep.equal(orphans.map((p) => p.nodeId));
    const get = await inFolder(['get', 'greeting', '--timeout', '30000']);
    expect(get.stdout.toString(), get.stderr).to.equal('hello');
    expect(await next.stop('SIGINT'), JSON.stringify(next.state())).to.equal(0);
    for (const folder of [dir, ...file.peers.map((peer) => peerDataDir(dir, peer.index))]) {
      const unlock = await tryLockDirectory(folder);
      expect(unlock, `${folder} is still locked`).to.not.equal(null);
      await unlock!();
    }
  });
});
