// A mocha global teardown that turns "the tests passed but the process never exits" (a
// server, socket, child process or timer a test forgot to stop) into a clear failure
// instead of a hung CI run: if the process is still alive a while after the last test, it
// lists what keeps it alive and exits with status 1. The timer is unref'd, so a clean run
// exits at once without waiting for it.
const graceMs = 30_000;

export function mochaGlobalTeardown() {
  setTimeout(() => {
    const handles = process
      ._getActiveHandles()
      .map((handle) => handle?.constructor?.name ?? typeof handle);
    console.error(
      `mocha: the tests finished but the process was still alive ${graceMs / 1000} s later; ` +
        `a test left something running. Active handles: ${handles.join(', ') || '(none)'}`,
    );
    process.exit(1);
  }, graceMs).unref();
}
