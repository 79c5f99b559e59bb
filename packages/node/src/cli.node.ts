/**
 * `meshkv <command> …` (`pnpm meshkv …` from the workspace root). Commands:
 * - `meshkv node --signaling URL --token T --data DIR [--id ID] [--http HOST:PORT]
 *   [--cluster-id C] [--leave] [--ice-bind ADDR]`: one Node peer (peer.node.ts) until SIGINT/SIGTERM.
 * Exit codes: 0 after a clean stop, 2 for bad arguments, 1 when the peer cannot start or
 * stop (the message on stderr). A second SIGINT/SIGTERM exits at once with 1.
 */
import { parseArgs } from 'node:util';
import { NodePeer, PeerStartError } from './peer.node.ts';

const USAGE = `Usage: meshkv <command> [flags]

Commands:
  node     run one Node peer (meshkv node --help)
`;

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

async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  try {
    if (command === 'node') return await runNode(rest, env);
    throw new UsageError(`unknown command '${command}'`);
  } catch (error) {
    if (
      error instanceof UsageError ||
      (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    ) {
      process.stderr.write(
        `meshkv: ${(error as Error).message}\n\n${command === 'node' ? NODE_USAGE : USAGE}`,
      );
      return 2;
    }
    process.stderr.write(
      `meshkv ${command}: ${error instanceof PeerStartError ? error.message : String(error)}\n`,
    );
    return 1;
  }
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
  const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  const peer = await NodePeer.start(options);
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
