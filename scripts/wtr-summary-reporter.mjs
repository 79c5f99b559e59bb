// Writes the pass/fail counts of a web-test-runner run to $MESHKV_SUMMARY_FILE (JSON),
// so scripts/test.mjs can add them to the one summary line of `pnpm test`.
import { writeFileSync } from 'node:fs';

function countTests(suite, counts) {
  for (const test of suite?.tests ?? []) {
    if (test.skipped) counts.skipped += 1;
    else if (test.passed) counts.passed += 1;
    else counts.failed += 1;
  }
  for (const child of suite?.suites ?? []) countTests(child, counts);
}

export function summaryReporter() {
  return {
    onTestRunFinished({ sessions }) {
      const counts = { passed: 0, failed: 0, skipped: 0 };
      for (const session of sessions) {
        countTests(session.testResults, counts);
        // A file that failed to load or threw outside a test has errors but maybe no tests.
        if (!session.passed && (session.errors?.length ?? 0) > 0) counts.failed += 1;
      }
      const file = process.env.MESHKV_SUMMARY_FILE;
      if (file) writeFileSync(file, JSON.stringify(counts));
    },
  };
}
