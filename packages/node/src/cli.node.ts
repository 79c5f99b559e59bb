/**
 * `meshkv <command> …` (`pnpm meshkv …` from the workspace root: paths are relative to the
 * folder pnpm was called in, cluster-dir.node.ts `userCwd`). Commands:
 * - `meshkv start [--data DIR] [--nodes N] [--port P]`: a local cluster (start.node.ts).
 * - `meshkv stop [--data DIR]`: stops that start by its pid (stop.node.ts).
 * - `meshkv node --signaling URL --token T --data DIR [--id ID] [--http HOST:PORT]
 *   [--cluster-id C] [--leave] [--ice-bind ADDR]`: one Node peer (peer.node.ts) until
 *   SIGINT/SIGTERM, or until its parent's IPC channel closes (started by `meshkv start`,
 *   to which it reports `{type: 'ready', nodeId, httpUrl}` once it runs).
 * - `meshkv put KEY [VALUE|-]`, `get KEY`, `del KEY`, `status`: an HTTP client of the
 *   cluster (client.node.ts), which it finds in ./.meshkv/cluster.json, `--data DIR`'s, or
 *   at `--endpoint URL`. Prints true / false / the value (raw bytes) / null / a table.
 * Exit codes: 0 after success (null and false included) or a clean stop, 2 for bad
 * arguments, 1 for a failure: `CODE: message` on stderr for the client commands, the
 * message for the others. A second SIGINT/SIGTERM while stopping exits at once with 1.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { limits as storageLimits } from '@meshkv/storage';
import { ClientError, formatStatus, MeshKvClient } from './client.node.ts';
import {
  clusterDir,
  DEFAULT_START_NODES,
  DEFAULT_START_PORT,
  MAX_START_NODES,
  readClusterFile,
  readToken,
  userCwd,
} from './cluster-dir.node.ts';
import { ErrorCode } from './errors.ts';

// The peer and the start (WebRTC, LevelDB, Socket.IO) are imported when their command
// runs: a client command loads only the HTTP client, and starts at once.

/** How the user runs this CLI: the pinned pnpm from the workspace (README quick start). */
const CLI_COMMAND = 'npx -y pnpm@10.34.8 -s meshkv';

const USAGE = `Usage: meshkv <command> [flags]     (meshkv <command> --help for its flags)

Commands:
  start    run a local cluster: signaling server + Node peers + the demo web app, data in ./.meshkv
  stop     stop the cluster that meshkv start runs in ./.meshkv (or --data DIR)
  put      put KEY [VALUE|-]: store a value (- or no VALUE: read it from stdin)
  get      get KEY: print the value (raw bytes), or null
  del      del KEY: delete; prints true, or false if the key held nothing
  status   the cluster's members and partitions as a table
  node     run one Node peer (what start runs for each node)
`;

const START_USAGE = `Usage: meshkv start [--data DIR] [--nodes N] [--port P]

Runs a local cluster: the signaling server (the registry) and N Node peers as child
processes, everything on 127.0.0.1, all data under DIR. The signaling server also serves
the demo web app (built first if demo/ changed): each browser tab opened on it is a node. The first start generates the
cluster token (DIR/token, mode 0600); a later start on DIR resumes the same data and node
identities. Ctrl-C (SIGINT/SIGTERM) stops every peer and the server; the data stays.

  --data DIR        the cluster folder (default ./.meshkv)
  --nodes N         peers to run, 1..${MAX_START_NODES} (default ${DEFAULT_START_NODES})
  --port P          signaling server's port; peer i's HTTP API gets P+i
                    (default ${DEFAULT_START_PORT}; 0: free ports)
  --partitions Q    partitions of a NEW cluster, a power of two (default 64; fixed once created)
  --help            this text
`;

const STOP_USAGE = `Usage: meshkv stop [--data DIR]

Stops the \`meshkv start\` that runs the cluster in DIR, as Ctrl-C in its terminal does
(SIGTERM to the pid in DIR/cluster.json), and waits until it exited (60 s at most). The
data stays. Prints what it did; exits 0 also when the cluster was not running.

  --data DIR        the cluster folder (default ./.meshkv)
  --help            this text
`;

const CLIENT_FLAGS = `
  --data DIR        the cluster folder whose cluster.json lists the peers (default ./.meshkv)
  --endpoint URL    a peer's HTTP API, e.g. http://127.0.0.1:7701 (repeatable; instead of
                    the cluster file). Peers are tried in order: one that cannot be
                    reached is passed over
  --token TOKEN     cluster token (MESHKV_TOKEN; default: the folder's token file). Peers
                    beyond loopback require it
  --timeout MS      the request's deadline at the peer (default 5000, at most 60000)
  --help            this text
Fails with "CODE: message" on stderr and exit code 1 (e.g. KEY_INVALID, VALUE_TOO_LARGE,
UNAVAILABLE, TIMEOUT; a write that TIMEOUT or OUTCOME_UNKNOWN may or may not have applied).
`;

const COMMAND_USAGE: Readonly<Record<string, string>> = {
  put: `Usage: meshkv put KEY [VALUE|-] [flags]

Stores VALUE under KEY and prints true. With - (or without VALUE, from a pipe) the value
is read from stdin, as bytes (at most ${storageLimits.maxValueBytes} bytes).

  --ack all         answer only once every replica applied it (default: a majority)${CLIENT_FLAGS}`,
  get: `Usage: meshkv get KEY [flags]

Prints KEY's value as stored (raw bytes; a newline is added on a terminal only), or null.

  --consistency local   read this peer's replica, without asking the leader (may be
                        stale; answers while the leader is down). Default: linearizable${CLIENT_FLAGS}`,
  del: `Usage: meshkv del KEY [flags]

Deletes KEY; prints true, or false if it held no value.
${CLIENT_FLAGS}`,
  status: `Usage: meshkv status [flags]

Prints the members (from the registry and each peer) and the partitions (leader, term,
commit index, replicas, each follower's lag behind the leader, moves in progress).

  --json            the gathered statuses as JSON instead${CLIENT_FLAGS}`,
};

const NODE_USAGE = `Usage: meshkv node --signaling URL --token TOKEN --data DIR [flags]

Runs one meshkv peer: joins the signaling server (the registry), opens the WebRTC mesh,
serves its partitions from a LevelDB store in DIR, logs one line per notable event.
SIGINT/SIGTERM stops it; its groups and data stay (it rejoins under the same id).

  --signaling URL     signaling server, e.g. http://127.0.0.1:8080 (MESHKV_SIGNALING_URL)
  --token TOKEN       cluster token (MESHKV_TOKEN)
  --data DIR          data directory: store, identity, lock (MESHKV_DATA_DIR)
  --id ID             node id a fresh DIR asks for (default: the registry issues one)
  --http HOST:PORT    serve the HTTP API there (port 0: any free port; the address is
                      logged). Beyond loopback it answers only requests carrying the
                      cluster token (Authorization: Bearer), but it is reachable by
                      anyone on that network: bind 127.0.0.1 unless you need otherwise.
  --cluster-id ID     cluster id (MESHKV_CLUSTER_ID; default meshkv)
  --leave             on SIGINT/SIGTERM leave the cluster gracefully first (hand every
                      replica off; the id is not used again)
  --ice-bind ADDR     address WebRTC binds its candidates to (default 127.0.0.1: loopback
                      only). Another address exposes the node's Raft traffic on it: use it
                      only for peers on other machines, on a network you trust.
  --help              this text
`;

class UsageError extends Error {}

/** Errors whose message says what to do (PeerStartError, StartError, …). */
const OPERATOR_ERRORS: ReadonlySet<string> = new Set([
  'PeerStartError',
  'StartError',
  'ClusterDirError',
  'StopError',
]);

async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  const usage =
    command === 'node'
      ? NODE_USAGE
      : command === 'start'
        ? START_USAGE
        : command === 'stop'
          ? STOP_USAGE
          : COMMAND_USAGE[command];
  try {
    if (command === 'node') return await runNode(rest, env);
    if (command === 'start') return await start(rest, env);
    if (command === 'stop') return await stop(rest, env);
    if (usage !== undefined) return await client(command, rest, env);
    throw new UsageError(`unknown command '${command}'`);
  } catch (error) {
    if (
      error instanceof UsageError ||
      (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    ) {
      process.stderr.write(`meshkv: ${(error as Error).message}\n\n${usage ?? USAGE}`);
      return 2;
    }
    if (error instanceof ClientError) {
      process.stderr.write(`${error.code}: ${error.message}\n`);
      return 1;
    }
    const known = OPERATOR_ERRORS.has((error as Error).name);
    process.stderr.write(
      `meshkv ${command}: ${known ? (error as Error).message : String(error)}\n`,
    );
    return 1;
  }
}

/** A whole number in [min, max] from a flag, or a UsageError. */
function integerFlag(flag: string, text: string, min: number, max: number): number {
  const value = /^\d{1,9}$/.test(text) ? Number(text) : Number.NaN;
  if (!(value >= min && value <= max)) {
    throw new UsageError(`--${flag} must be a whole number in ${min}..${max}, not '${text}'`);
  }
  return value;
}

async function start(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    options: {
      data: { type: 'string' },
      nodes: { type: 'string' },
      port: { type: 'string' },
      partitions: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(START_USAGE);
    return 0;
  }
  const nodes =
    values.nodes === undefined
      ? DEFAULT_START_NODES
      : integerFlag('nodes', values.nodes, 1, MAX_START_NODES);
  const port =
    values.port === undefined
      ? DEFAULT_START_PORT
      : integerFlag('port', values.port, 0, 65_535 - nodes);
  const partitions =
    values.partitions === undefined
      ? undefined
      : integerFlag('partitions', values.partitions, 1, 65_536);
  const { runStart } = await import('./start.node.ts');
  return runStart({
    dir: clusterDir(values.data, env),
    nodes,
    port,
    ...(partitions === undefined ? {} : { partitions }),
    cliCommand: CLI_COMMAND,
    dataFlag: values.data === undefined ? '' : ` --data ${values.data}`,
  });
}

async function stop(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    options: { data: { type: 'string' }, help: { type: 'boolean' } },
  });
  if (values.help) {
    process.stdout.write(STOP_USAGE);
    return 0;
  }
  const { stopStart } = await import('./stop.node.ts');
  process.stdout.write(`${await stopStart(clusterDir(values.data, env))}\n`);
  return 0;
}

/** put, get, del, status (see COMMAND_USAGE). */
async function client(
  command: string,
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: true,
    options: {
      data: { type: 'string' },
      endpoint: { type: 'string', multiple: true },
      token: { type: 'string' },
      timeout: { type: 'string' },
      ...(command === 'put' ? { ack: { type: 'string' } } : {}),
      ...(command === 'get' ? { consistency: { type: 'string' } } : {}),
      ...(command === 'status' ? { json: { type: 'boolean' } } : {}),
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(COMMAND_USAGE[command]!);
    return 0;
  }
  const arity = command === 'status' ? [0, 0] : command === 'put' ? [1, 2] : [1, 1];
  if (positionals.length < arity[0]! || positionals.length > arity[1]!) {
    throw new UsageError(
      command === 'status'
        ? 'status takes no arguments'
        : `${command} takes ${command === 'put' ? 'KEY [VALUE|-]' : 'KEY'}`,
    );
  }
  const ack = values.ack as string | undefined;
  if (ack !== undefined && ack !== 'all') throw new UsageError(`--ack must be 'all', not '${ack}'`);
  const consistency = values.consistency as string | undefined;
  if (consistency !== undefined && consistency !== 'local') {
    throw new UsageError(`--consistency must be 'local', not '${consistency}'`);
  }
  const timeoutMs =
    values.timeout === undefined ? undefined : integerFlag('timeout', values.timeout, 1, 60_000);
  const kv = await connect(values, env, timeoutMs);
  const key = positionals[0]!;
  if (command === 'put') {
    const given = positionals[1];
    if (given === undefined && process.stdin.isTTY) {
      throw new UsageError('put needs a VALUE, or - to read it from stdin');
    }
    const value =
      given === undefined || given === '-' ? await readStdin() : new TextEncoder().encode(given);
    await kv.put(key, value, ack === 'all' ? { ack } : {});
    process.stdout.write('true\n');
  } else if (command === 'get') {
    const value = await kv.get(key, consistency === 'local' ? { consistency } : {});
    if (value === null) process.stdout.write('null\n');
    else {
      process.stdout.write(value);
      // Raw bytes for a pipe; on a terminal the prompt goes on its own line.
      if (process.stdout.isTTY && value[value.byteLength - 1] !== 0x0a) process.stdout.write('\n');
    }
  } else if (command === 'del') {
    process.stdout.write(`${await kv.delete(key)}\n`);
  } else {
    const status = await kv.status();
    process.stdout.write(
      values.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status),
    );
  }
  return 0;
}

/** The client for `--endpoint`s, else the cluster file of `--data` (or ./.meshkv). */
async function connect(
  values: { data?: string; endpoint?: string[]; token?: string },
  env: NodeJS.ProcessEnv,
  timeoutMs: number | undefined,
): Promise<MeshKvClient> {
  const dir = clusterDir(values.data, env);
  const file = await readClusterFile(dir);
  const token =
    values.token ?? env.MESHKV_TOKEN ?? (await readToken(dir, file?.tokenFile)) ?? undefined;
  const common = {
    ...(token === undefined ? {} : { token }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  };
  if (values.endpoint !== undefined)
    return new MeshKvClient({ endpoints: values.endpoint, ...common });
  if (file === null) {
    throw new ClientError(
      ErrorCode.UNAVAILABLE,
      `no cluster found: ${join(dir, 'cluster.json')} does not exist (run \`meshkv start\` in ${values.data === undefined ? userCwd(env) : 'that folder'}, pass --data DIR, or --endpoint URL)`,
    );
  }
  return new MeshKvClient({
    endpoints: file.peers.map((peer) => peer.httpUrl),
    signalingUrl: file.signalingUrl,
    ...common,
  });
}

/** stdin as bytes; more than the store takes is refused before it is all read. */
async function readStdin(): Promise<Uint8Array> {
  const maxBytes = storageLimits.maxValueBytes;
  const chunks: Buffer[] = [];
  let sizeBytes = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    sizeBytes += chunk.byteLength;
    if (sizeBytes > maxBytes) {
      throw new ClientError(
        ErrorCode.VALUE_TOO_LARGE,
        `the value on stdin is over ${maxBytes} bytes (reading stopped at ${sizeBytes}), the limit is ${maxBytes}`,
        { sizeBytes, maxBytes },
      );
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, sizeBytes);
}

/** `HOST:PORT` (`[::1]:PORT` for IPv6) → its parts; a UsageError if it is not one. */
function hostPort(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || port > 65_535) {
    throw new UsageError(`--http must be HOST:PORT (e.g. 127.0.0.1:7001), not '${text}'`);
  }
  return { host: (match[1] ?? match[2])!, port };
}

async function runNode(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    options: {
      signaling: { type: 'string' },
      token: { type: 'string' },
      data: { type: 'string' },
      id: { type: 'string' },
      http: { type: 'string' },
      'cluster-id': { type: 'string' },
      leave: { type: 'boolean' },
      'ice-bind': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(NODE_USAGE);
    return 0;
  }
  const required = (flag: string, value: string | undefined, variable: string): string => {
    if (!value) throw new UsageError(`--${flag} is required (or ${variable})`);
    return value;
  };
  const options = {
    signalingUrl: required(
      'signaling',
      values.signaling ?? env.MESHKV_SIGNALING_URL,
      'MESHKV_SIGNALING_URL',
    ),
    token: required('token', values.token ?? env.MESHKV_TOKEN, 'MESHKV_TOKEN'),
    dataDir: required('data', values.data ?? env.MESHKV_DATA_DIR, 'MESHKV_DATA_DIR'),
    nodeId: values.id,
    clusterId: values['cluster-id'] ?? env.MESHKV_CLUSTER_ID,
    iceBindAddress: values['ice-bind'],
    http: values.http === undefined ? undefined : hostPort(values.http),
  };
  // Listening before the start: a signal while it joins must stop the peer cleanly once it
  // runs, not kill the process (Node's default) in the middle of writing its identity.
  const stopSignal = new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
    // Started by `meshkv start`: its death (kill -9 too) closes the IPC channel.
    if (process.send !== undefined) {
      process.once('disconnect', () => resolve('parent gone (IPC channel closed)'));
    }
  });
  const { NodePeer } = await import('./peer.node.ts');
  const peer = await NodePeer.start(options);
  // A callback: a parent gone meanwhile is an error to ignore (the disconnect stops us).
  process.send?.(
    { type: 'ready', nodeId: peer.nodeId, httpUrl: peer.httpUrl },
    undefined,
    {},
    () => {},
  );
  const signal = await stopSignal;
  const again = () => process.exit(1);
  process.once('SIGINT', again);
  process.once('SIGTERM', again);
  process.stdout.write(`${signal}: stopping${values.leave ? ' (leaving the cluster)' : ''}\n`);
  await peer.stop({ leave: values.leave === true });
  return 0;
}

process.exitCode = await main(process.argv.slice(2), process.env);
// Handles a library may leave open (timers, native threads) must not keep a stopped peer alive.
process.exit();
