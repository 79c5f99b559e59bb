// Real processes for the Node peer tests (peer.node.test.ts, faults.node.test.ts): the
// signaling CLI and `meshkv node` spawned through tsx on free ports (port 0, the address
// read from their logs), their output kept, and every one stopped by pid. WebRTC peers
// need the private network namespace (`pnpm test` or scripts/netns-run.sh).
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { NodeStatus } from '../../src/mesh-node.ts';

export const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const MESHKV_CLI = fileURLToPath(new URL('../../src/cli.node.ts', import.meta.url));
export const SIGNALING_CLI = fileURLToPath(
  new URL('../../../../signaling/src/cli.ts', import.meta.url),
);
/** How long a test waits for a condition before it fails (generous: the machine is shared). */
export const DEADLINE_MS = 60_000;
/** Polling interval of waitUntil: the tests wait on conditions, never on fixed sleeps. */
const POLL_MS = 100;
/** Output kept per process stream (the tail: what a failure report needs). */
const MAX_OUTPUT_CHARS = 1_000_000;

/** A child process whose output is kept, and its exit code once it exits. */
export class Proc {
  stdout = '';
  stderr = '';
  /** undefined while it runs; null once a signal ended it (see exitSignal). */
  exitCode: number | null | undefined = undefined;
  exitSignal: NodeJS.Signals | null = null;
  readonly exited: Promise<number | null>;

  constructor(
    readonly child: ChildProcess,
    readonly name: string,
  ) {
    child.stdout!.on('data', (chunk) => {
      this.stdout = keepTail(this.stdout + chunk);
    });
    child.stderr!.on('data', (chunk) => {
      this.stderr = keepTail(this.stderr + chunk);
    });
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        resolve(code);
      }),
    );
  }

  /**
   * `node --import tsx script args` from the repository root; in network namespace `netns`
   * (`ip netns exec` execs the command, so the child's pid is node's own) if given.
   */
  static spawn(
    script: string,
    args: readonly string[],
    options: { name?: string; netns?: string } = {},
  ): Proc {
    const command = [process.execPath, '--import', 'tsx', script, ...args];
    if (options.netns !== undefined) command.unshift('ip', 'netns', 'exec', options.netns);
    return new Proc(
      spawn(command[0]!, command.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }),
      options.name ?? script,
    );
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** Sends `signal` to the pid (if still running) and resolves with the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }

  state(): object {
    return {
      name: this.name,
      pid: this.child.pid,
      exitCode: this.exitCode,
      exitSignal: this.exitSignal,
      stdout: this.stdout.slice(-4000),
      stderr: this.stderr.slice(-4000),
    };
  }
}

function keepTail(text: string): string {
  return text.length > MAX_OUTPUT_CHARS ? text.slice(-MAX_OUTPUT_CHARS) : text;
}

/**
 * Resolves with `probe()`'s first non-undefined answer; fails after `deadlineMs` naming
 * `what` and showing `state()` (which may be async). `probe` may be async (an HTTP poll); a probe that throws
 * counts as not yet (a peer still starting refuses connections).
 */
export async function waitUntil<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  what: string,
  state: () => unknown = () => undefined,
  deadlineMs = DEADLINE_MS,
): Promise<T> {
  const startMs = Date.now();
  let lastError: unknown;
  for (;;) {
    try {
      const found = await probe();
      if (found !== undefined) return found;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() - startMs > deadlineMs) {
      throw new Error(
        `timed out after ${deadlineMs} ms waiting for ${what}; last error: ${String(lastError)}; state: ${JSON.stringify(await state())}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Leader of each partition (the last line logged for it), and its term. */
export function leaders(output: string): Map<number, { leader: string; term: number }> {
  const found = new Map<number, { leader: string; term: number }>();
  for (const m of output.matchAll(/^leader of partition (\d+): (\S+) \(term (\d+)\)$/gm)) {
    found.set(Number(m[1]), { leader: m[2]!, term: Number(m[3]) });
  }
  return found;
}

/** The HTTP API address a peer logged (the last one), or null before it did. */
export function httpUrlOf(output: string): string | null {
  const all = [...output.matchAll(/^HTTP API on (\S+)$/gm)];
  return all.length === 0 ? null : all[all.length - 1]![1]!;
}

export function joinedAs(output: string): { id: string; how: string } | null {
  const m = /^joined as (\S+) \((new member|rejoined)\)/m.exec(output);
  return m === null ? null : { id: m[1]!, how: m[2]! };
}

export interface SignalingOptions {
  readonly dataDir: string;
  readonly token: string;
  readonly partitions: number;
  readonly replicas?: number;
  readonly gracePeriodMs?: number;
  /** Address to bind (default the server's, 127.0.0.1). */
  readonly host?: string;
}

/** A running signaling server and its URL. */
export interface SignalingProcess {
  readonly proc: Proc;
  readonly url: string;
}

/** Starts the signaling CLI on a free port and waits until it listens. */
export async function startSignaling(
  options: SignalingOptions,
  track: (proc: Proc) => void,
): Promise<SignalingProcess> {
  const args = [
    '--port',
    '0',
    '--data-dir',
    options.dataDir,
    '--token',
    options.token,
    '--partitions',
    String(options.partitions),
  ];
  if (options.replicas !== undefined) args.push('--replicas', String(options.replicas));
  if (options.gracePeriodMs !== undefined) {
    args.push('--grace-period-ms', String(options.gracePeriodMs));
  }
  if (options.host !== undefined) args.push('--host', options.host);
  const proc = Proc.spawn(SIGNALING_CLI, args, { name: 'signaling' });
  track(proc);
  const url = await waitUntil(
    () => {
      if (!proc.running) throw new Error(`signaling exited ${proc.exitCode}`);
      return /listening on (\S+)/.exec(proc.stdout)?.[1];
    },
    'the signaling server to listen',
    () => proc.state(),
  );
  return { proc, url };
}

export interface PeerProcessOptions {
  readonly signalingUrl: string;
  readonly token: string;
  readonly dataDir: string;
  /** `--http HOST:PORT`; default 127.0.0.1:0. */
  readonly http?: string;
  readonly iceBind?: string;
  readonly leave?: boolean;
  readonly netns?: string;
  readonly name?: string;
}

/** Spawns `meshkv node` (does not wait for it: see waitForHttp). */
export function spawnPeer(options: PeerProcessOptions): Proc {
  const args = [
    'node',
    '--signaling',
    options.signalingUrl,
    '--token',
    options.token,
    '--data',
    options.dataDir,
    '--http',
    options.http ?? '127.0.0.1:0',
  ];
  if (options.iceBind !== undefined) args.push('--ice-bind', options.iceBind);
  if (options.leave === true) args.push('--leave');
  return Proc.spawn(MESHKV_CLI, args, {
    name: options.name ?? options.dataDir,
    netns: options.netns,
  });
}

/** Waits until `peer` serves its HTTP API; its URL. Fails at once if the process exits. */
export function waitForHttp(peer: Proc): Promise<string> {
  return waitUntil(
    () => {
      if (!peer.running) throw new Error(`${peer.name} exited ${peer.exitCode}`);
      return httpUrlOf(peer.stdout) ?? undefined;
    },
    `${peer.name} to serve HTTP`,
    () => peer.state(),
  );
}

/** `GET url` as JSON (with the token when given), failing on a non-200 answer. */
export async function getJson<T>(url: string, token?: string): Promise<T> {
  const response = await fetch(url, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(10_000),
  });
  const body = await response.text();
  if (response.status !== 200) throw new Error(`GET ${url}: ${response.status} ${body}`);
  return JSON.parse(body) as T;
}

/** A peer's `GET /status`. */
export function peerStatus(httpUrl: string, token?: string): Promise<NodeStatus> {
  return getJson<NodeStatus>(`${httpUrl}/status`, token);
}

/** The members of the signaling server's `GET /status`. */
export interface RegistryStatus {
  readonly settings: {
    readonly partitions: number;
    readonly replicationFactor: number;
    readonly tokensPerNode: number;
  };
  readonly epoch: number;
  readonly members: readonly { readonly nodeId: string; readonly state: string }[];
}

export function registryStatus(signalingUrl: string): Promise<RegistryStatus> {
  return getJson<RegistryStatus>(`${signalingUrl}/status`);
}

/**
 * Every process a test started, so an `after`/`afterEach` hook stops them all by pid
 * whatever failed.
 */
export class ProcessSet {
  private readonly procs: Proc[] = [];

  readonly track = (proc: Proc): Proc => {
    this.procs.push(proc);
    return proc;
  };

  /** SIGKILLs every process still running and waits for each to exit. */
  async killAll(): Promise<void> {
    await Promise.all(this.procs.splice(0).map((proc) => proc.stop('SIGKILL')));
  }

  /** Per process, its last `maxLines` output lines matching `pattern` (for failure messages). */
  grep(pattern: RegExp, maxLines: number): { name: string; lines: string[] }[] {
    return this.procs.map((proc) => ({
      name: proc.name,
      lines: `${proc.stdout}\n${proc.stderr}`
        .split('\n')
        .filter((line) => pattern.test(line))
        .slice(-maxLines),
    }));
  }

  /** State of every process (for failure messages). */
  state(): object[] {
    return this.procs.map((proc) => proc.state());
  }
}
