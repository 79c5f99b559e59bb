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

const REPOSITORY_DIR = fileURLToPath(new URL('../../../', import.meta.url));
/** What the signaling server serves at `/`. */
export const DEMO_BUILD_DIR = join(REPOSITORY_DIR, 'demo', 'dist');
/** The file of a build recording its inputs' digest. */
export const INPUTS_FILE = 'build-inputs.json';
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

/**
 * Builds `repository`/demo/dist if its inputs changed (see the file comment); never throws.
 * `repository` is this checkout but in tests.
 */
export async function ensureDemoBuilt(
  out: (line: string) => void,
  repository: string = REPOSITORY_DIR,
): Promise<DemoBuildResult> {
  try {
    return await buildIfNeeded(out, repository);
  } catch (error) {
    return { kind: 'failed', reason: String(error) };
  }
}

async function buildIfNeeded(
  out: (line: string) => void,
  repository: string,
): Promise<DemoBuildResult> {
  const demoDir = join(repository, 'demo');
  const buildDir = join(demoDir, 'dist');
  const workDir = join(demoDir, '.build');
  const viteCli = join(demoDir, 'node_modules', 'vite', 'bin', 'vite.js');
  const inputs = await inputsDigest(repository);
  let why = await rebuildReason(buildDir, inputs);
  if (why === null) return { kind: 'up to date' };
  const unlock = await waitForBuildLock(workDir, out);
  try {
    // Another start may have built it while we waited.
    why = await rebuildReason(buildDir, inputs);
    if (why === null) return { kind: 'up to date' };
    if (!(await isFile(viteCli))) {
      return { kind: 'failed', reason: `vite is not installed (${viteCli}): run pnpm install` };
    }
    out(`demo: building demo/dist (${why})…`);
    const startedMs = performance.now();
    const outDir = join(workDir, `out-${process.pid}`);
    await rm(outDir, { recursive: true, force: true });
    const failure = await runVite(viteCli, demoDir, outDir);
    if (failure !== null) {
      await rm(outDir, { recursive: true, force: true });
      return { kind: 'failed', reason: failure };
    }
    await writeFile(join(outDir, INPUTS_FILE), `${JSON.stringify({ sha256: inputs })}\n`);
    const old = join(workDir, `old-${process.pid}`);
    await rename(buildDir, old).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
    await rename(outDir, buildDir);
    await rm(old, { recursive: true, force: true });
    return { kind: 'built', reason: why, elapsedMs: performance.now() - startedMs };
  } finally {
    await unlock();
  }
}

/** Why `buildDir` must be built, or null if it is the build of `inputs`. */
async function rebuildReason(buildDir: string, inputs: string): Promise<string | null> {
  if (!(await isFile(join(buildDir, 'index.html')))) return 'no build yet';
  const recorded = await readFile(join(buildDir, INPUTS_FILE), 'utf8').then(
    (text) => (JSON.parse(text) as { sha256?: unknown }).sha256,
    () => undefined,
  );
  return recorded === inputs ? null : 'its sources changed since the last build';
}

/** sha256 over the path and bytes of every input file, in path order. */
async function inputsDigest(repository: string): Promise<string> {
  const demoDir = join(repository, 'demo');
  const files: string[] = [
    join(demoDir, 'index.html'),
    join(demoDir, 'vite.config.ts'),
    join(demoDir, 'package.json'),
    join(repository, 'pnpm-lock.yaml'),
  ];
  await listFiles(join(demoDir, 'src'), files);
  for (const name of await readdir(join(repository, 'packages'))) {
    const dir = join(repository, 'packages', name);
    if (!(await isFile(join(dir, 'package.json')))) continue;
    files.push(join(dir, 'package.json'));
    await listFiles(join(dir, 'src'), files);
  }
  files.sort();
  const hash = createHash('sha256');
  for (const file of files) {
    hash.update(relative(repository, file)).update('\0');
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

async function waitForBuildLock(
  workDir: string,
  out: (line: string) => void,
): Promise<() => Promise<void>> {
  const deadlineMs = Date.now() + LOCK_WAIT_MS;
  let told = false;
  for (;;) {
    const unlock = await tryLockDirectory(workDir);
    if (unlock !== null) return unlock;
    if (!told) out('demo: another meshkv start is building it; waiting');
    told = true;
    if (Date.now() > deadlineMs) {
      throw new Error(`${workDir} stayed locked by another build for ${LOCK_WAIT_MS} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
  }
}

/** Runs `vite build` of `demoDir` into `outDir`; resolves with null, or why it failed. */
function runVite(viteCli: string, demoDir: string, outDir: string): Promise<string | null> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [viteCli, 'build', '--outDir', outDir, '--emptyOutDir'], {
      cwd: demoDir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
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
