/**
 * Raft ticks for a browser node from a dedicated Worker's timer. A hidden tab runs its
 * page timers at most once per second (Chromium: once per minute after five minutes
 * hidden, unless the page uses WebRTC), which would stretch a 100 ms tick tenfold and
 * make every group this tab leads lose its leadership; a dedicated worker's timers are
 * not throttled that way, and the message it posts runs in the page at once (message
 * handlers are not throttled either).
 *
 * The worker is made from a Blob URL of a few lines, so no bundler has to emit a file
 * for it. It posts a message each `tickMs`; the page ticks with its own clock.
 */

const WORKER_SOURCE = `let timer;
onmessage = (event) => {
  clearInterval(timer);
  if (event.data > 0) timer = setInterval(() => postMessage(0), event.data);
};`;

/** Calls `onTick` every `tickMs` from a worker's timer until the returned stop is called. */
export function startWorkerTicks(tickMs: number, onTick: () => void): () => void {
  if (!(tickMs > 0)) throw new RangeError(`tickMs ${tickMs} must be positive`);
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' }));
  const worker = new Worker(url, { name: 'meshkv-ticks' });
  // The worker has fetched its script once it runs; the URL is not needed after that, but
  // revoking it before then would fail the load, so it is revoked when the ticks stop.
  worker.onmessage = () => onTick();
  worker.postMessage(tickMs);
  return () => {
    worker.terminate();
    URL.revokeObjectURL(url);
  };
}
