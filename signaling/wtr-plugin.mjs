// A web-test-runner plugin that runs one signaling server (the CLI, in a child process)
// for the whole browser test run, so browser tests can join a real cluster. Browser code
// gets its address with
//   executeServerCommand('meshkv-signaling') → {url, token, clusterId}
// (from '@web/test-runner-commands'). The config is plain JavaScript, so the server runs
// as `node --import tsx signaling/src/cli.ts`, like in production.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('./src/cli.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const START_DEADLINE_MS = 60_000;

export function signalingPlugin() {
  const token = 'browser-tests';
  const clusterId = 'browser-tests';
  let child;
  let dataDir;
  let url;
  return {
    name: 'meshkv-signaling',
    async serverStart() {
      dataDir = mkdtempSync(join(tmpdir(), 'meshkv-wtr-signaling-'));
      child = spawn(
        process.execPath,
        ['--import', 'tsx', CLI, '--port', '0', '--data-dir', dataDir, '--token', token],
        {
          cwd: ROOT,
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, MESHKV_CLUSTER_ID: clusterId },
        },
      );
      let stderr = '';
      child.stderr.on('data', (chunk) => {
        stderr += chunk;
      });
      url = await new Promise((resolve, reject) => {
        let stdout = '';
        const deadline = setTimeout(() => {
          reject(new Error(`signaling server did not start in ${START_DEADLINE_MS} ms: ${stderr}`));
        }, START_DEADLINE_MS);
        child.stdout.on('data', (chunk) => {
          stdout += chunk;
          const match = /listening on (\S+)/.exec(stdout);
          if (match) {
            clearTimeout(deadline);
            resolve(match[1]);
          }
        });
        child.once('exit', (code) => {
          clearTimeout(deadline);
          reject(new Error(`signaling server exited with ${code}: ${stderr}`));
        });
      });
    },
    async serverStop() {
      if (child && child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
    executeCommand({ command }) {
      if (command !== 'meshkv-signaling') return undefined;
      return { url, token, clusterId };
    },
  };
}
