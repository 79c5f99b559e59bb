// Benchmarks that start WebRTC peers or browsers run in the private network namespace
// (scripts/netns-run.sh): outside it, the script runs itself again inside one.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from '../../packages/node/test/support/processes.ts';

/** Runs `main` inside the namespace: here if already in, else in `script` run again there. */
export async function inNetworkNamespace(script: string, main: () => Promise<void>): Promise<void> {
  if (process.env.MESHKV_NETNS === '1') {
    await main();
    return;
  }
  const child = spawn(
    join(ROOT, 'scripts/netns-run.sh'),
    [process.execPath, '--import', 'tsx', script, ...process.argv.slice(2)],
    { cwd: ROOT, stdio: 'inherit' },
  );
  child.once('exit', (code) => process.exit(code ?? 1));
}
