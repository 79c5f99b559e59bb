// The one place that says how tests and benchmarks start Chromium: Debian's package (test
// tools cannot download browsers here) with the flags that keep it quiet on a closed network
// (no background networking, component updates, sync or QUIC) and runnable as root.
export const chromiumPath = process.env.CHROME_PATH ?? '/usr/bin/chromium';

export const chromiumArgs = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
