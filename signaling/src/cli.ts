/**
 * `node --import tsx signaling/src/cli.ts --token secret [flags]`: runs the signaling
 * server. Flags win over environment variables. Prints one line
 * `meshkv-signaling listening on <url>` on stdout once it accepts connections; logs go to
 * stderr. Exits 0 after SIGINT/SIGTERM, 2 for bad flags, 1 if it cannot start.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_SETTINGS, MAX_REPLICATION_FACTOR } from '@meshkv/ring';
import { type ClusterSettings, DEFAULT_CLUSTER_ID } from '@meshkv/transport/signaling-protocol';
import { DEFAULT_RETIREMENT_PERIOD_MS } from './registry.ts';
import { DEFAULT_GRACE_PERIOD_MS, SignalingServer } from './server.ts';

const USAGE = `Usage: node --import tsx signaling/src/cli.ts [flags]

Runs the meshkv signaling server and cluster registry.

  --host HOST            address to bind (MESHKV_SIGNALING_HOST; default 127.0.0.1)
  --port PORT            port (MESHKV_SIGNALING_PORT; default 8080; 0 = any free port)
  --data-dir DIR         registry directory (MESHKV_SIGNALING_DATA_DIR; default ./.data/signaling)
  --token TOKEN          cluster token members must present (MESHKV_TOKEN; required)
  --static-dir DIR       folder served over HTTP, e.g. the demo build (MESHKV_STATIC_DIR)
  --grace-period-ms MS   disconnection time before a member is marked down
                         (MESHKV_GRACE_PERIOD_MS; default ${DEFAULT_GRACE_PERIOD_MS})
  --retirement-period-ms MS
                         time down before a member is retired (no longer counted
                         against the member limit, not placed)
                         (MESHKV_RETIREMENT_PERIOD_MS; default ${DEFAULT_RETIREMENT_PERIOD_MS})
Cluster settings: used when the registry is created; later they must match it or be omitted.
  --cluster-id ID        (MESHKV_CLUSTER_ID; default ${DEFAULT_CLUSTER_ID})
  --partitions Q         power of two (MESHKV_PARTITIONS; default ${DEFAULT_SETTINGS.partitions})
  --replicas N           1..${MAX_REPLICATION_FACTOR} (MESHKV_REPLICAS; default ${DEFAULT_SETTINGS.replicationFactor})
  --tokens-per-node V    (MESHKV_TOKENS_PER_NODE; default ${DEFAULT_SETTINGS.tokensPerNode})
  --help                 this text
`;

class UsageError extends Error {}

function integer(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text))
    throw new UsageError(`${name} must be a non-negative integer, not '${text}'`);
  return Number(text);
}

function parse(argv: string[], env: NodeJS.ProcessEnv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      'data-dir': { type: 'string' },
      token: { type: 'string' },
      'static-dir': { type: 'string' },
      'grace-period-ms': { type: 'string' },
      'retirement-period-ms': { type: 'string' },
      'cluster-id': { type: 'string' },
      partitions: { type: 'string' },
      replicas: { type: 'string' },
      'tokens-per-node': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) return undefined;
  const token = values.token ?? env.MESHKV_TOKEN;
  if (!token) throw new UsageError('a cluster token is required: --token or MESHKV_TOKEN');
  const given: Partial<Record<keyof ClusterSettings, string | number | undefined>> = {
    clusterId: values['cluster-id'] ?? env.MESHKV_CLUSTER_ID,
    partitions: integer('--partitions', values.partitions ?? env.MESHKV_PARTITIONS),
    replicationFactor: integer('--replicas', values.replicas ?? env.MESHKV_REPLICAS),
    tokensPerNode: integer(
      '--tokens-per-node',
      values['tokens-per-node'] ?? env.MESHKV_TOKENS_PER_NODE,
    ),
  };
  // Only the settings given are passed, so a restart without them keeps the stored ones.
  const settings = Object.fromEntries(
    Object.entries(given).filter(([, value]) => value !== undefined),
  ) as Partial<ClusterSettings>;
  const staticDir = values['static-dir'] ?? env.MESHKV_STATIC_DIR;
  const gracePeriodMs = integer(
    '--grace-period-ms',
    values['grace-period-ms'] ?? env.MESHKV_GRACE_PERIOD_MS,
  );
  const retirementPeriodMs = integer(
    '--retirement-period-ms',
    values['retirement-period-ms'] ?? env.MESHKV_RETIREMENT_PERIOD_MS,
  );
  return {
    host: values.host ?? env.MESHKV_SIGNALING_HOST ?? '127.0.0.1',
    port: integer('--port', values.port ?? env.MESHKV_SIGNALING_PORT) ?? 8080,
    dataDir: values['data-dir'] ?? env.MESHKV_SIGNALING_DATA_DIR ?? './.data/signaling',
    token,
    settings,
    ...(staticDir === undefined ? {} : { staticDir }),
    ...(gracePeriodMs === undefined ? {} : { gracePeriodMs }),
    ...(retirementPeriodMs === undefined ? {} : { retirementPeriodMs }),
  };
}

async function main(): Promise<number> {
  let options: ReturnType<typeof parse>;
  try {
    options = parse(process.argv.slice(2), process.env);
  } catch (error) {
    process.stderr.write(`meshkv-signaling: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (options === undefined) {
    process.stdout.write(USAGE);
    return 0;
  }
  let server: SignalingServer;
  try {
    server = await SignalingServer.start({
      ...options,
      log: (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
    });
  } catch (error) {
    process.stderr.write(`meshkv-signaling: cannot start: ${(error as Error).message}\n`);
    return 1;
  }
  // Handlers first: whoever reads the line below may signal at once (a parent woken by
  // the write can run before this process installs them, and be killed by the default).
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.stderr.write(`meshkv-signaling: ${signal}, shutting down\n`);
      // A second signal while closing exits at once.
      process.once('SIGINT', () => process.exit(1));
      process.once('SIGTERM', () => process.exit(1));
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  process.stdout.write(`meshkv-signaling listening on ${server.url}\n`);
  await stopped;
  await server.close();
  return 0;
}

process.exitCode = await main();
