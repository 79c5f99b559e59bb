#!/usr/bin/env node
// `pnpm test`: every check of the repository in one command, ending with one line
// `tests: N passed, N failed`.
//
// Stages: lint+format (biome), typecheck (tsc -b), Node tests (mocha; `*.test.ts` and
// `*.shared.test.ts`), browser tests (web-test-runner in Debian's Chromium;
// `*.browser.test.ts` and `*.shared.test.ts`). Lint and typecheck count as one test each.
// Everything runs inside a private network namespace (scripts/netns-run.sh) because
// tests start browsers and WebRTC peers. Chromium and Firefox ESR are installed with apt-get if
// missing.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromiumPath } from './chromium.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The browsers the tests run in (Debian packages), installed with apt-get if missing. */
const firefoxPath = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';
const browsers = [
  { name: 'chromium', path: chromiumPath, env: 'CHROME_PATH' },
  { name: 'firefox-esr', path: firefoxPath, env: 'FIREFOX_PATH' },
];

function ensureBrowsers() {
  const missing = browsers.filter((browser) => !existsSync(browser.path));
  if (missing.length === 0) return;
  const names = missing.map((browser) => browser.name);
  console.log(
    `test: ${missing.map((b) => b.path).join(', ')} missing; installing Debian's ${names.join(', ')} with apt-get`,
  );
  for (const args of [
    ['update', '-qq'],
    ['install', '-y', '-qq', ...names],
  ]) {
    const result = spawnSync('apt-get', args, {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
    if (result.status !== 0) {
      const hint = missing.map((b) => `${b.name} (or set ${b.env})`).join(', ');
      console.error(`test: apt-get ${args.join(' ')} failed; install ${hint}`);
      process.exit(2);
    }
  }
}

if (process.env.MESHKV_NETNS !== '1') {
  ensureBrowsers();
  const netns = spawnSync(
    join(root, 'scripts/netns-run.sh'),
    [process.execPath, ...process.argv.slice(1)],
    {
      stdio: 'inherit',
    },
  );
  process.exit(netns.status ?? 1);
}

/** Runs a command with its output shown live and kept for parsing. */
function run(command, args, env = {}) {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: root,
      env: { ...process.env, FORCE_COLOR: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const keep = (stream, sink) =>
      stream.on('data', (chunk) => {
        output += chunk;
        sink.write(chunk);
      });
    keep(child.stdout, process.stdout);
    keep(child.stderr, process.stderr);
    child.on('close', (code) => resolve({ code: code ?? 1, output }));
  });
}

const bin = (name) => join(root, 'node_modules/.bin', name);
const resultsDir = join(root, '.test-results');
rmSync(resultsDir, { recursive: true, force: true });
mkdirSync(resultsDir, { recursive: true });

// Node test files; `*.browser.test.ts` are excluded by .mocharc.json.
const nodeTestGlobs = [
  'packages/*/test/**/*.test.ts',
  'signaling/test/**/*.test.ts',
  'test/**/*.test.ts',
  'demo/test/**/*.test.ts',
];

const stages = [
  {
    name: 'lint',
    async run() {
      const { code } = await run(bin('biome'), ['check', '.']);
      return code === 0 ? { passed: 1, failed: 0 } : { passed: 0, failed: 1 };
    },
  },
  {
    name: 'typecheck',
    async run() {
      const { code } = await run(bin('tsc'), ['-b']);
      return code === 0 ? { passed: 1, failed: 0 } : { passed: 0, failed: 1 };
    },
  },
  {
    name: 'node',
    async run() {
      const { code, output } = await run(bin('mocha'), nodeTestGlobs);
      const passed = Number(/(\d+) passing/.exec(output)?.[1] ?? 0);
      const failed = Number(/(\d+) failing/.exec(output)?.[1] ?? 0);
      // A crash before mocha's summary still has to count as a failure.
      return { passed, failed: code !== 0 && failed === 0 ? 1 : failed };
    },
  },
  {
    name: 'browser',
    async run() {
      const summaryFile = join(resultsDir, 'wtr.json');
      const { code } = await run(bin('wtr'), [], { MESHKV_SUMMARY_FILE: summaryFile });
      if (!existsSync(summaryFile)) return { passed: 0, failed: 1 };
      const { passed, failed } = JSON.parse(readFileSync(summaryFile, 'utf8'));
      return { passed, failed: code !== 0 && failed === 0 ? 1 : failed };
    },
  },
];

const only = process.argv.slice(2);
let passed = 0;
let failed = 0;
for (const stage of stages) {
  if (only.length > 0 && !only.includes(stage.name)) continue;
  console.log(`\n=== ${stage.name} ===`);
  const startedMs = Date.now();
  const result = await stage.run();
  console.log(
    `=== ${stage.name}: ${result.passed} passed, ${result.failed} failed (${((Date.now() - startedMs) / 1000).toFixed(1)} s)`,
  );
  passed += result.passed;
  failed += result.failed;
}
console.log(`tests: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
