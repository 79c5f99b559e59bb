// Browser tests: `*.browser.test.ts` (Chromium only) and `*.shared.test.ts` (Node and
// Chromium). Debian's chromium is used because test tools cannot download browsers here.
import { esbuildPlugin } from '@web/dev-server-esbuild';
import { defaultReporter } from '@web/test-runner';
import { chromeLauncher } from '@web/test-runner-chrome';
import { chromiumArgs, chromiumPath } from './scripts/chromium.mjs';
import { summaryReporter } from './scripts/wtr-summary-reporter.mjs';
import { signalingPlugin } from './signaling/wtr-plugin.mjs';

export default {
  files: [
    'packages/*/test/**/*.{browser,shared}.test.ts',
    'signaling/test/**/*.browser.test.ts',
    'test/**/*.{browser,shared}.test.ts',
  ],
  // `browser: true` applies package.json "browser" field remaps (engine.io-client needs them).
  nodeResolve: { browser: true, exportConditions: ['browser', 'import', 'default'] },
  plugins: [esbuildPlugin({ ts: true, target: 'es2022' }), signalingPlugin()],
  browsers: [
    chromeLauncher({
      launchOptions: { executablePath: chromiumPath, headless: true, args: [...chromiumArgs] },
    }),
  ],
  concurrency: 1,
  testFramework: { config: { timeout: 120000 } },
  testsFinishTimeout: 15 * 60 * 1000,
  reporters: [defaultReporter(), summaryReporter()],
};
