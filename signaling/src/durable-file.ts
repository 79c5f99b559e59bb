/**
 * Small durable files, replaced whole, atomically, readable by their owner only: the
 * registry file here, and beside a Node peer's data its identity.json, a cluster folder's
 * token and cluster.json (packages/node imports it from here).
 */
import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Replaces `path` with `text` durably and atomically, readable by its owner only (0600): a
 * temporary file, fsync, rename, fsync of the directory. A crash leaves the old file or
 * the new one, never a torn one.
 */
export async function writeFileDurably(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  const file = await open(tmp, 'w', 0o600);
  try {
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(tmp, path);
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
