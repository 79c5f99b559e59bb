/**
 * `meshkv start` builds the demo app (demo/, Vite) when needed, so that the quick start's
 * one command serves it (demo/README.md "How it is served").
 *
 * - Needed: demo/dist has no index.html, or the sha256 of the build's inputs (the demo's
 *   sources, every packages/<name>/src and package.json the bundle draws from, and
 *   pnpm-lock.yaml) differs from the one recorded in demo/dist/build-inputs.json by the
 *   last build. Contents, not mtimes: a fresh checkout or a branch switch touches mtimes.
 * - One build at a time: the builder holds demo/.build/lock (two starts in two folders
 *   may race); whoever waited checks again, and finds the other's build.
 * - `vite build` runs as a child process into demo/.build/out-<pid>, then replaces
 *   demo/dist by renames: a server still serving the old build never sees half a new one.
 * - A failed build (or no vite installed) is reported and the start goes on without it:
 *   the cluster is the product, the demo its window.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tryLockDirectory } from './peer.node.ts';

export const REPOSITORY_DIR = fileURLToPath(new URL('../../../', import.meta.url));
export const DEMO_DIR = join(REPOSITORY_DIR, 'demo');
/** What the signaling server serves at `/`. */
export const DEMO_BUILD_DIR = join(DEMO_DIR, 'dist');
const INPUTS_FILE = 'build-inputs.json';
const WORK_DIR = join(DEMO_DIR, '.build');
const VITE_CLI = join(DEMO_DIR, 'node_modules', 'vite', 'bin', 'vite.js');
/** A build slower than this is killed (a few seconds here; the machine may be loaded). */
const BUILD_DEADLINE_MS = 300_000;
/** How long a start waits for another start's build. */
const LOCK_WAIT_MS = BUILD_DEADLINE_MS + 30_000;
const LOCK_POLL_MS = 200;
/** Input files hashed at most (the repository has a few hundred). */
const MAX_INPUT_FILES = 10_000;
/** Output of a failed build shown (its tail). */
const MAX_SHOWN_OUTPUT_CHARS = 4_000;

export type DemoBuildResult =
  | { readonly kind: 'up to date' }
  | { readonly kind: 'built'; readonly reason: string; readonly elapsedMs: number }
  | { readonly kind: 'failed'; readonly reason: string };

/** Builds demo/dist if its inputs changed (see the file comment); never throws. */
export async function ensureDemoBuilt(out: (line: string) => void): Promise<DemoBuildResult> {
  try {
    return await buildIfNeeded(out);
  } catch (error) {
    return { kind: 'failed', reason: String(error) };
  }
}

async function buildIfNeeded(out: (line: string) => void): Promise<DemoBuildResult> {
  const inputs = await inputsDigest();
  let why = await rebuildReason(inputs);
  if (why === null) return { kind: 'up to date' };
  const unlock = await waitForBuildLock(out);
  try {
    // Another start may have built it while we waited.
    why = await rebuildReason(inputs);
    if (why === null) return { kind: 'up to date' };
    if (!(await isFile(VITE_CLI))) {
      return { kind: 'failed', reason: `vite is not installed (${VITE_CLI}): run pnpm install` };
    }
    out(`demo: building demo/dist (${why})…`);
    const startedMs = performance.now();
    const outDir = join(WORK_DIR, `out-${process.pid}`);
    await rm(outDir, { recursive: true, force: true });
    const failure = await runVite(outDir);
    if (failure !== null) {
      await rm(outDir, { recursive: true, force: true });
      return { kind: 'failed', reason: failure };
    }
    await writeFile(join(outDir, INPUTS_FILE), `${JSON.stringify({ sha256: inputs })}\n`);
    const old = join(WORK_DIR, `old-${process.pid}`);
    await rename(DEMO_BUILD_DIR, old).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
    await rename(outDir, DEMO_BUILD_DIR);
    await rm(old, { recursive: true, force: true });
    return { kind: 'built', reason: why, elapsedMs: performance.now() - startedMs };
  } finally {
    await unlock();
  }
}

/** Why demo/dist must be built, or null if it is the build of `inputs`. */
async function rebuildReason(inputs: string): Promise<string | null> {
  if (!(await isFile(join(DEMO_BUILD_DIR, 'index.html')))) return 'no build yet';
  const recorded = await readFile(join(DEMO_BUILD_DIR, INPUTS_FILE), 'utf8').then(
    (text) => (JSON.parse(text) as { sha256?: unknown }).sha256,
    () => undefined,
  );
  return recorded === inputs ? null : 'its sources changed since the last build';
}

/** sha256 over the path and bytes of every input file, in path order. */
async function inputsDigest(): Promise<string> {
  const files: string[] = [
    join(DEMO_DIR, 'index.html'),
    join(DEMO_DIR, 'vite.config.ts'),
    join(DEMO_DIR, 'package.json'),
    join(REPOSITORY_DIR, 'pnpm-lock.yaml'),
  ];
  await listFiles(join(DEMO_DIR, 'src'), files);
  for (const name of await readdir(join(REPOSITORY_DIR, 'packages'))) {
    const dir = join(REPOSITORY_DIR, 'packages', name);
    if (!(await isFile(join(dir, 'package.json')))) continue;
    files.push(join(dir, 'package.json'));
    await listFiles(join(dir, 'src'), files);
  }
  files.sort();
  const hash = createHash('sha256');
  for (const file of files) {
    hash.update(relative(REPOSITORY_DIR, file)).update('\0');
    hash.update(await readFile(file).catch(() => Buffer.from('(missing)')));
    hash.update('\0');
  }
  return hash.digest('hex');
}

async function listFiles(dir: string, into: string[]): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await listFiles(path, into);
    else if (entry.isFile()) into.push(path);
    if (into.length > MAX_INPUT_FILES) {
      throw new Error(`more than ${MAX_INPUT_FILES} demo build inputs under ${dir}`);
    }
  }
}

async function waitForBuildLock(out: (line: string) => void): Promise<() => Promise<void>> {
  const deadlineMs = Date.now() + LOCK_WAIT_MS;
  let told = false;
  for (;;) {
    const unlock = await tryLockDirectory(WORK_DIR);
    if (unlock !== null) return unlock;
    if (!told) out('demo: another meshkv start is building it; waiting');
    told = true;
    if (Date.now() > deadlineMs) {
      throw new Error(`${WORK_DIR} stayed locked by another build for ${LOCK_WAIT_MS} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
  }
}

/** Runs `vite build` into `outDir`; resolves with null, or why it failed. */
function runVite(outDir: string): Promise<string | null> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [VITE_CLI, 'build', '--outDir', outDir, '--emptyOutDir'],
      { cwd: DEMO_DIR, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-MAX_SHOWN_OUTPUT_CHARS);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const killer = setTimeout(() => child.kill('SIGKILL'), BUILD_DEADLINE_MS);
    child.once('error', (error) => {
      clearTimeout(killer);
      resolve(`vite could not run: ${error.message}`);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(killer);
      if (code === 0) resolve(null);
      else resolve(`vite build exited (${code ?? signal}):\n${output.trimEnd()}`);
    });
  });
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (info) => info.isFile(),
    () => false,
  );
}
