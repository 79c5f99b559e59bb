// A real 3-member etcd beside a meshkv benchmark, in the same run: started on 127.0.0.1
// with its own data folders and free ports, default settings (fsync per batch), driven
// through its HTTP/JSON gateway (POST /v3/kv/put and /v3/kv/range, base64 keys and values;
// a range is linearizable by default) over node:http keep-alive Agents, and stopped by pid.
// The etcd binary is Debian's etcd-server (`apt-get install etcd-server`): a bench never
// installs it. Kept out of bench/*.ts so `pnpm bench` does not list it as a benchmark.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Proc, type ProcessSet, waitUntil } from '../../packages/node/test/support/processes.ts';
import type { Call } from './closed-loop.ts';

const MEMBERS = 3;
/** Every member must answer healthy within this. */
const HEALTHY_DEADLINE_MS = 120_000;
const CLOCK_TICKS_PER_SECOND = Number(
  spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100,
);

/** The installed etcd's version, or null when there is none. */
export function etcdVersion(): string | null {
  const probe = spawnSync('etcd', ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) return null;
  return /etcd Version: (\S+)/.exec(probe.stdout)?.[1] ?? 'unknown';
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/** utime + stime in seconds of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file. */
export function statCpuSeconds(path: string): number {
  const stat = readFileSync(path, 'utf8');
  // The command name (field 2) may hold spaces: fields 14 and 15 are counted after its ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/** utime + stime of `pid` in seconds. */
export function cpuSecondsOf(pid: number): number {
  return statCpuSeconds(`/proc/${pid}/stat`);
}

/**
 * Starts 3 etcd members (data under `dir`, tracked by `procs`), waits until every one is
 * healthy, runs `run` with their client URLs and pids, then stops them (SIGTERM).
 */
export async function withEtcd(
  procs: ProcessSet,
  dir: string,
  run: (endpoints: readonly string[], pids: readonly number[]) => Promise<void>,
): Promise<void> {
  const members = [];
  for (let i = 0; i < MEMBERS; i++) {
    members.push({ name: `m${i + 1}`, client: await freePort(), peer: await freePort() });
  }
  const initialCluster = members.map((m) => `${m.name}=http://127.0.0.1:${m.peer}`).join(',');
  const etcds = members.map((m) =>
    procs.track(
      new Proc(
        spawn(
          'etcd',
          [
            `--name=${m.name}`,
            `--data-dir=${join(dir, m.name)}`,
            `--listen-client-urls=http://127.0.0.1:${m.client}`,
            `--advertise-client-urls=http://127.0.0.1:${m.client}`,
            `--listen-peer-urls=http://127.0.0.1:${m.peer}`,
            `--initial-advertise-peer-urls=http://127.0.0.1:${m.peer}`,
            `--initial-cluster=${initialCluster}`,
            '--initial-cluster-state=new',
            '--initial-cluster-token=meshkv-bench',
            '--logger=zap',
            '--log-level=warn',
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        ),
        `etcd ${m.name}`,
      ),
    ),
  );
  const endpoints = members.map((m) => `http://127.0.0.1:${m.client}`);
  await waitUntil(
    async () => {
      for (const etcd of etcds) if (!etcd.running) throw new Error(`${etcd.name} exited`);
      for (const endpoint of endpoints) {
        const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(5000) });
        if (!(await response.text()).includes('"health":"true"')) return undefined;
      }
      return true;
    },
    'the etcd members to be healthy',
    () => procs.state(),
    HEALTHY_DEADLINE_MS,
  );
  await run(
    endpoints,
    etcds.map((e) => e.child.pid!),
  );
  for (const etcd of etcds) await etcd.stop('SIGTERM');
}

/** One HTTP request on a keep-alive Agent: null when `accept` takes the answer, else why not. */
export function httpCall(
  agent: Agent,
  url: URL,
  method: string,
  path: string,
  body: Buffer | null,
  accept: (status: number, body: Buffer) => boolean,
  timeoutMs: number,
): Promise<string | null> {
  return new Promise((resolve) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        method,
        path,
        agent,
        headers: body === null ? {} : { 'content-length': body.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
          const status = res.statusCode ?? 0;
          resolve(accept(status, data) ? null : `${status} ${data.toString('utf8').slice(0, 200)}`);
        });
        res.on('error', (error) => resolve(String(error)));
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error('request timed out')));
    req.on('error', (error) => resolve(String(error)));
    req.end(body ?? undefined);
  });
}

export interface EtcdWorkload {
  readonly endpoints: readonly string[];
  readonly op: 'put' | 'get';
  /** Written by puts; what a get must find (its first bytes are checked). */
  readonly value: Uint8Array;
  readonly keyNames: readonly string[];
  /** Sockets per endpoint (at least the requests in flight). */
  readonly sockets: number;
  readonly timeoutMs: number;
}

/** The workload's request through etcd's gateway: bodies built once per key. */
export function etcdCall(workload: EtcdWorkload): Call {
  const urls = workload.endpoints.map((e) => new URL(e));
  const agents = urls.map(() => new Agent({ keepAlive: true, maxSockets: workload.sockets }));
  const valueBase64 = Buffer.from(workload.value).toString('base64');
  const keysBase64 = workload.keyNames.map((k) => Buffer.from(k).toString('base64'));
  const timeoutMs = workload.timeoutMs;
  if (workload.op === 'put') {
    const bodies = keysBase64.map((k) =>
      Buffer.from(JSON.stringify({ key: k, value: valueBase64 })),
    );
    const ok = (status: number) => status === 200;
    return (endpoint, key) =>
      httpCall(
        agents[endpoint]!,
        urls[endpoint]!,
        'POST',
        '/v3/kv/put',
        bodies[key]!,
        ok,
        timeoutMs,
      );
  }
  const bodies = keysBase64.map((k) => Buffer.from(JSON.stringify({ key: k })));
  const found = Buffer.from(`"value":"${valueBase64.slice(0, 16)}`);
  const ok = (status: number, body: Buffer) => status === 200 && body.includes(found);
  return (endpoint, key) =>
    httpCall(
      agents[endpoint]!,
      urls[endpoint]!,
      'POST',
      '/v3/kv/range',
      bodies[key]!,
      ok,
      timeoutMs,
    );
}
