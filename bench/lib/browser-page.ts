// The page side of bench/browser.ts, bundled by esbuild (storage's test/chromium.ts serves
// it). One script, two roles:
// - a node page starts this tab's node through `@meshkv/node/browser` (IndexedDB storage,
//   the WebRTC mesh) and answers requests arriving on its BroadcastChannel by calling its
//   node's put/get, which routes them to the partition's leader like any caller's;
// - the client page hosts no node: it runs the closed loop (closed-loop.ts), sending each
//   request to a node page's channel in turn, and marks the measured window through
//   `window.benchMark` (exposed by the bench).
// A BroadcastChannel is the same-origin way between tabs that keeps them in their own
// renderer processes (a window.open'ed page would share its opener's).
import { startBrowserNode } from '../../packages/node/src/browser-node.browser.ts';
import { type StatusView, statusView } from '../../packages/node/test/support/status-view.ts';
import {
  type Call,
  fillKeys,
  keyNames,
  type LoopResult,
  type LoopSpec,
  measureLoop,
  patternValue,
} from './closed-loop.ts';

export interface NodeStartArgs {
  readonly signalingUrl: string;
  readonly token: string;
  readonly clusterId: string;
}

export interface ClientSpec extends LoopSpec {
  /** The node pages' ids, in the order the requests go round them. */
  readonly nodeIds: readonly string[];
  readonly op: 'put' | 'get';
  readonly valueBytes: number;
  /** Write every key first (untimed), this many at a time; 0: no fill. */
  readonly fillConcurrency: number;
}

export type Phase = 'measure' | 'done';

export interface BenchPage {
  startNode(args: NodeStartArgs): Promise<{ nodeId: string }>;
  status(): StatusView;
  runClient(spec: ClientSpec): Promise<LoopResult>;
}

declare global {
  interface Window {
    meshkvBench: BenchPage;
    benchMark(phase: Phase): Promise<void>;
  }
}

const PUT = 0;
const GET = 1;
/** [request id, PUT | GET, key, value (puts) or null]. */
type Request = [number, number, string, Uint8Array | null];
/** [request id, error or null, bytes of the value read (-1: none)]. */
type Answer = [number, string | null, number];
/** The node's deadline for one request (as bench/cluster.ts asks of the Node peers). */
const DEADLINE_MS = 30_000;
/** How often the client fails the requests that outlived their deadline. */
const SWEEP_MS = 1_000;
/** The client's grace beyond the node's deadline before it calls a request lost. */
const LOST_AFTER_DEADLINE_MS = 5_000;

function channelName(nodeId: string): string {
  return `meshkv-bench/${nodeId}`;
}

function describeError(error: unknown): string {
  const e = error as { code?: string; message?: string };
  return `${e.code ?? 'THROWN'}: ${String(e.message ?? error)}`;
}

async function startNode(args: NodeStartArgs): Promise<{ nodeId: string }> {
  const tab = await startBrowserNode(args);
  const channel = new BroadcastChannel(channelName(tab.nodeId));
  channel.onmessage = (event: MessageEvent<Request>) => {
    const [id, op, key, value] = event.data;
    const answered =
      op === PUT
        ? tab.node.put(key, value!, { deadlineMs: DEADLINE_MS }).then(() => 0)
        : tab.node
            .get(key, { deadlineMs: DEADLINE_MS })
            .then((v) => (v === null ? -1 : v.byteLength));
    answered.then(
      (bytes) => channel.postMessage([id, null, bytes] satisfies Answer),
      (error: unknown) => channel.postMessage([id, describeError(error), 0] satisfies Answer),
    );
  };
  window.meshkvBench.status = () => statusView(tab.node.status());
  return { nodeId: tab.nodeId };
}

/** The client's requests to the node pages, and the answers matched to them by id. */
function clientCalls(spec: ClientSpec): { put: Call; get: Call; close(): void } {
  const channels = spec.nodeIds.map((id) => new BroadcastChannel(channelName(id)));
  const pending = new Map<number, { resolve: (answer: Answer) => void; sentMs: number }>();
  for (const channel of channels) {
    channel.onmessage = (event: MessageEvent<Answer>) => {
      const waiting = pending.get(event.data[0]);
      if (waiting === undefined) return;
      pending.delete(event.data[0]);
      waiting.resolve(event.data);
    };
  }
  const lostAfterMs = DEADLINE_MS + LOST_AFTER_DEADLINE_MS;
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const [id, waiting] of pending) {
      if (now - waiting.sentMs < lostAfterMs) continue;
      pending.delete(id);
      waiting.resolve([id, `no answer in ${lostAfterMs} ms`, 0]);
    }
  }, SWEEP_MS);
  const value = patternValue(spec.valueBytes);
  const names = keyNames(spec.keys);
  let nextId = 0;
  const send = (endpoint: number, request: Request) =>
    new Promise<Answer>((resolve) => {
      pending.set(request[0], { resolve, sentMs: performance.now() });
      channels[endpoint]!.postMessage(request);
    });
  return {
    put: async (endpoint, key) => (await send(endpoint, [nextId++, PUT, names[key]!, value]))[1],
    get: async (endpoint, key) => {
      const [, error, bytes] = await send(endpoint, [nextId++, GET, names[key]!, null]);
      return error ?? (bytes === spec.valueBytes ? null : `read ${bytes} bytes`);
    },
    close() {
      clearInterval(sweep);
      for (const channel of channels) channel.close();
    },
  };
}

async function runClient(spec: ClientSpec): Promise<LoopResult> {
  const calls = clientCalls(spec);
  try {
    if (spec.fillConcurrency > 0) await fillKeys(calls.put, spec, spec.fillConcurrency);
    return await measureLoop(spec.op === 'put' ? calls.put : calls.get, spec, {
      // Not awaited: the bench reads CPU counters while the loop goes on.
      measure: () => void window.benchMark('measure'),
      done: () => void window.benchMark('done'),
    });
  } finally {
    calls.close();
  }
}

window.meshkvBench = {
  startNode,
  status: () => {
    throw new Error('this page runs no node');
  },
  runClient,
};
