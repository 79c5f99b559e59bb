/**
 * The registry on disk: one JSON file, `<dataDir>/registry.json`, replaced atomically.
 *
 * Format (version 2):
 *   {"format": "meshkv-registry", "version": 2,
 *    "registry": {"settings": {...}, "epoch": N, "members": [...]},
 *    "secretHashes": {"<nodeId>": "<sha256 hex of its member secret>", ...},
 *    "downSinceMs": {"<nodeId of a down member>": <wall-clock ms it was marked down>, ...}}
 * Version 1 (before member secrets) is refused: its members have no secrets to check.
 *
 * A write goes to `registry.json.tmp` in the same directory, is fsynced, renamed over
 * `registry.json`, and the directory is fsynced so the rename itself is durable. A crash
 * leaves either the old or the new file, never a mix. A file that does not parse or
 * validate is an error naming the file: resetting it silently would re-place every
 * partition.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClusterSettings } from '@meshkv/transport/signaling-protocol';
import { writeFileDurably } from './durable-file.ts';
import { type RegistryState, registryStateProblem } from './registry.ts';

export const REGISTRY_FILE_NAME = 'registry.json';
const FORMAT = 'meshkv-registry';
const FORMAT_VERSION = 2;

/** The registry file exists but cannot be used (corrupt, or settings differ). */
export class RegistryFileError extends Error {
  override readonly name = 'RegistryFileError';
}

export function registryFilePath(dataDir: string): string {
  return join(dataDir, REGISTRY_FILE_NAME);
}

/** Reads the registry; undefined if the file does not exist. Throws RegistryFileError. */
export async function loadRegistry(dataDir: string): Promise<RegistryState | undefined> {
  const path = registryFilePath(dataDir);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new RegistryFileError(`cannot read registry file ${path}: ${(error as Error).message}`);
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new RegistryFileError(
      `registry file ${path} is corrupt (not JSON: ${(error as Error).message}); ` +
        'restore it from a backup or remove it to create a new cluster',
    );
  }
  const header = document as {
    format?: unknown;
    version?: unknown;
    registry?: unknown;
    secretHashes?: unknown;
    downSinceMs?: unknown;
  } | null;
  if (header === null || typeof header !== 'object' || header.format !== FORMAT) {
    throw new RegistryFileError(`registry file ${path} is not a meshkv registry`);
  }
  if (header.version !== FORMAT_VERSION) {
    const hint =
      header.version === 1
        ? ' (version 1 has no member secrets: remove it to create a new cluster)'
        : '';
    throw new RegistryFileError(
      `registry file ${path} has format version ${String(header.version)}; this server reads ${FORMAT_VERSION}${hint}`,
    );
  }
  const state = {
    snapshot: header.registry,
    secretHashes: new Map(Object.entries(table(path, header.secretHashes, 'secretHashes'))),
    downSinceMs: new Map(Object.entries(table(path, header.downSinceMs, 'downSinceMs'))),
  };
  const problem = registryStateProblem(state);
  if (problem) throw new RegistryFileError(`registry file ${path} is corrupt: ${problem}`);
  return state as RegistryState;
}

/** A node id → value table of the file; its values are checked with the state. */
function table(path: string, value: unknown, what: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new RegistryFileError(`registry file ${path} is corrupt: ${what} must be an object`);
  }
  return value as Record<string, unknown>;
}

/** Writes the registry atomically and durably (see the file comment). */
export async function saveRegistry(dataDir: string, state: RegistryState): Promise<void> {
  await mkdir(dataDir, { recursive: true });
  const path = registryFilePath(dataDir);
  const document = {
    format: FORMAT,
    version: FORMAT_VERSION,
    registry: state.snapshot,
    // Object.fromEntries defines own properties, so an id like `__proto__` stays data.
    secretHashes: Object.fromEntries(state.secretHashes),
    downSinceMs: Object.fromEntries(state.downSinceMs),
  };
  const text = `${JSON.stringify(document, null, 2)}\n`;
  await writeFileDurably(path, text);
}

/**
 * Checks the settings asked for against those the registry was created with. Only the
 * ones given are compared: a restart without flags keeps the stored settings.
 */
export function checkSettings(
  dataDir: string,
  stored: ClusterSettings,
  requested: Partial<ClusterSettings>,
): void {
  const differences = (Object.keys(requested) as (keyof ClusterSettings)[])
    .filter((key) => requested[key] !== undefined && requested[key] !== stored[key])
    .map((key) => `${key} ${String(requested[key])} (stored: ${String(stored[key])})`);
  if (differences.length > 0) {
    throw new RegistryFileError(
      `registry file ${registryFilePath(dataDir)} was created with other settings: ` +
        `${differences.join(', ')}. Settings are fixed when a cluster is created, because ` +
        'they decide data placement; start without them, or use a new data dir for a new cluster',
    );
  }
}
