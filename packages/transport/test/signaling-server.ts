// Runs the signaling server CLI (signaling/src/cli.ts) as a child process, for tests that
// need a real server: restarts, the client's reconnection, the WebRTC mesh over signaling.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../../signaling/src/cli.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const START_DEADLINE_MS = 60_000;

export interface SignalingProcessOptions {
  readonly dataDir: string;
  readonly token: string;
  /** Default 0: any free port. Pass the old port to restart on the same address. */
  readonly port?: number;
  /** More CLI flags, e.g. ['--cluster-id', 'c', '--grace-period-ms', '500']. */
  readonly args?: readonly string[];
}

/** Output and exit of a CLI run that was expected to fail. */
export interface CliOutcome {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export class SignalingProcess {
  private constructor(
    private readonly child: ChildProcess,
    /** `http://127.0.0.1:port`. */
    readonly url: string,
    private readonly exited: Promise<number | null>,
  ) {}

  get port(): number {
    return Number(new URL(this.url).port);
  }

  /** Starts the CLI and resolves once it prints the address it listens on. */
  static async start(options: SignalingProcessOptions): Promise<SignalingProcess> {
    const child = spawnCli([
      '--port',
      String(options.port ?? 0),
      '--data-dir',
      options.dataDir,
      '--token',
      options.token,
      ...(options.args ?? []),
    ]);
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    let stdout = '';
    let stderr = '';
    child.stderr!.on('data', (chunk) => {
      stderr += chunk;
    });
    const url = await new Promise<string>((resolve, reject) => {
      const deadline = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`signaling server did not start in ${START_DEADLINE_MS} ms: ${stderr}`));
      }, START_DEADLINE_MS);
      child.stdout!.on('data', (chunk) => {
        stdout += chunk;
        const match = /listening on (\S+)/.exec(stdout);
        if (match) {
          clearTimeout(deadline);
          resolve(match[1]!);
        }
      });
      void exited.then((code) => {
        clearTimeout(deadline);
        reject(new Error(`signaling server exited with ${code}: ${stderr}`));
      });
    });
    return new SignalingProcess(child, url, exited);
  }

  /** Runs the CLI to its end (for flag and start-up errors). */
  static async run(args: readonly string[]): Promise<CliOutcome> {
    const child = spawnCli(args);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr!.on('data', (chunk) => {
      stderr += chunk;
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    return { code, stdout, stderr };
  }

  /** Sends `signal` to this process (by pid) and resolves with its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

function spawnCli(args: readonly string[]): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
