/**
 * The folder of a local cluster (`meshkv start`, start.node.ts; default ./.meshkv), as
 * the start command writes it and the client commands read it:
 *
 *   DIR/token          the cluster token (hex, mode 0600), generated on the first start
 *   DIR/cluster.json   where the running cluster is (`ClusterFile`), rewritten by each start
 *   DIR/lock/          held by the running `meshkv start` (peer.node.ts `tryLockDirectory`)
 *   DIR/signaling/     the registry (signaling server data dir)
 *   DIR/nodes/<i>/     node i's data directory (identity, store, lock)
 *
 * Paths a person types are relative to the folder they typed them in: `pnpm meshkv …`
 * runs the script in the workspace root, and says where it was called in INIT_CWD.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeFileDurably } from '@meshkv/signaling/durable-file';
import { MAX_TOKEN_BYTES } from '@meshkv/transport/signaling-protocol';

export const DEFAULT_CLUSTER_DIR = '.meshkv';
/** `meshkv start`'s defaults: the signaling server's port (peer i: + i) and peers run. */
export const DEFAULT_START_PORT = 7700;
export const DEFAULT_START_NODES = 3;
/** Peers one start runs: each is a process with a WebRTC link to every other. */
export const MAX_START_NODES = 16;
export const CLUSTER_FILE = 'cluster.json';
export const TOKEN_FILE = 'token';
const CLUSTER_FILE_FORMAT = 'meshkv-cluster';
const CLUSTER_FILE_VERSION = 1;
/** A cluster file lists a few peers; anything far larger is not one. */
const MAX_CLUSTER_FILE_BYTES = 256 * 1024;
/** 32 random bytes, as hex. */
const TOKEN_RANDOM_BYTES = 32;

/** One peer of the cluster as `meshkv start` last started it. */
export interface ClusterPeer {
  /** 1-based: its data directory is DIR/nodes/<index>. */
  readonly index: number;
  readonly nodeId: string;
  /** Its HTTP API, e.g. http://127.0.0.1:7701. */
  readonly httpUrl: string;
  /** Its process (a child of the start's). */
  readonly pid: number;
}

/** DIR/cluster.json. */
export interface ClusterFile {
  readonly format: typeof CLUSTER_FILE_FORMAT;
  readonly version: typeof CLUSTER_FILE_VERSION;
  /** The `meshkv start` process that wrote it. */
  readonly pid: number;
  readonly startedAt: string;
  readonly signalingUrl: string;
  /** The token file, relative to DIR. */
  readonly tokenFile: string;
  readonly peers: readonly ClusterPeer[];
}

/** A cluster folder whose files are not what `meshkv start` writes. */
export class ClusterDirError extends Error {
  override readonly name = 'ClusterDirError';
}

/**
 * The folder the user ran the command in: pnpm runs a root script in the workspace root
 * and passes the caller's folder as INIT_CWD (only trusted for our own script: a test run
 * under `pnpm test` inherits the INIT_CWD of that run).
 */
export function userCwd(env: NodeJS.ProcessEnv): string {
  return env.npm_lifecycle_event === 'meshkv' && env.INIT_CWD ? env.INIT_CWD : process.cwd();
}

/** The cluster folder: `--data DIR` (relative to the user's folder), else ./.meshkv there. */
export function clusterDir(given: string | undefined, env: NodeJS.ProcessEnv): string {
  return resolve(userCwd(env), given ?? DEFAULT_CLUSTER_DIR);
}

export function peerDataDir(dir: string, index: number): string {
  return join(dir, 'nodes', String(index));
}

export function writeClusterFile(dir: string, file: ClusterFile): Promise<void> {
  return writeFileDurably(join(dir, CLUSTER_FILE), `${JSON.stringify(file, null, 2)}\n`);
}

/** DIR/cluster.json, or null if there is none. */
export async function readClusterFile(dir: string): Promise<ClusterFile | null> {
  const path = join(dir, CLUSTER_FILE);
  const text = await readOptional(path);
  if (text === null) return null;
  const file = text.length <= MAX_CLUSTER_FILE_BYTES ? parseJson(text) : undefined;
  const problem = clusterFileProblem(file);
  if (problem !== undefined) {
    throw new ClusterDirError(`${path} is not a meshkv cluster file: ${problem}`);
  }
  return file as ClusterFile;
}

function clusterFileProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return 'not a JSON object';
  const file = value as Partial<Record<keyof ClusterFile, unknown>>;
  if (file.format !== CLUSTER_FILE_FORMAT) return `format is not '${CLUSTER_FILE_FORMAT}'`;
  if (file.version !== CLUSTER_FILE_VERSION) return `version is not ${CLUSTER_FILE_VERSION}`;
  if (typeof file.signalingUrl !== 'string' || !isHttpUrl(file.signalingUrl)) {
    return 'signalingUrl is not an http URL';
  }
  if (typeof file.tokenFile !== 'string') return 'tokenFile is not a string';
  if (!Array.isArray(file.peers)) return 'peers is not a list';
  for (const peer of file.peers as unknown[]) {
    const p = peer as Partial<Record<keyof ClusterPeer, unknown>> | null;
    if (
      typeof p !== 'object' ||
      p === null ||
      !Number.isSafeInteger(p.index) ||
      !Number.isSafeInteger(p.pid) ||
      typeof p.nodeId !== 'string' ||
      typeof p.httpUrl !== 'string' ||
      !isHttpUrl(p.httpUrl)
    ) {
      return 'a peer is not {index, nodeId, httpUrl, pid}';
    }
  }
  return undefined;
}

function isHttpUrl(text: string): boolean {
  return /^https?:\/\/[^\s/]+\/?$/.test(text);
}

/** The token in DIR/token, or null if there is none. */
export async function readToken(dir: string, tokenFile = TOKEN_FILE): Promise<string | null> {
  const path = join(dir, tokenFile);
  const text = await readOptional(path);
  if (text === null) return null;
  const token = text.trim();
  if (token.length === 0 || Buffer.byteLength(token) > MAX_TOKEN_BYTES || /\s/.test(token)) {
    throw new ClusterDirError(
      `${path} does not hold a token (1..${MAX_TOKEN_BYTES} bytes, no spaces)`,
    );
  }
  return token;
}

/** DIR/token, generated (mode 0600) if there is none yet; `created` says which. */
export async function readOrCreateToken(dir: string): Promise<{ token: string; created: boolean }> {
  const existing = await readToken(dir);
  if (existing !== null) return { token: existing, created: false };
  const token = randomBytes(TOKEN_RANDOM_BYTES).toString('hex');
  await writeFileDurably(join(dir, TOKEN_FILE), `${token}\n`);
  return { token, created: true };
}

async function readOptional(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
