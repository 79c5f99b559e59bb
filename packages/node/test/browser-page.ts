// The page side of browser-cluster.node.test.ts, bundled by esbuild (storage's
// test/chromium.ts serves it): `window.meshkvPage` starts this tab's node through the
// public `@meshkv/node/browser` entry and answers the test's page.evaluate calls with
// plain JSON. It also records the page's own timer gaps, so the hidden-page test can show
// that the page was throttled while the node's ticks (from a worker) were not.
import { type BrowserNode, type SignalingStatus, startBrowserNode } from '@meshkv/node/browser';
import { indexedDbName } from '@meshkv/storage/browser';
import type { LinkState } from '@meshkv/transport';
import { deleteJournal } from '../../storage/src/journal.browser.ts';
import type { FaultState } from '../src/fault-transport.ts';
import { type StatusView, statusView } from './support/status-view.ts';

export interface PageStartArgs {
  readonly signalingUrl: string;
  readonly token: string;
  readonly clusterId: string;
}

/** A KV call's outcome as JSON: the value (text) or the error's code. */
export type PageResult =
  | { readonly ok: true; readonly value: string | null | boolean }
  | { readonly ok: false; readonly code: string; readonly message: string };

export interface PageTimers {
  readonly visibility: DocumentVisibilityState;
  /** Longest gap between two runs of a 100 ms page interval since `resetTimers`. */
  readonly pageTimerMaxGapMs: number;
  /** How far the node's clock (its last tick's Date.now()) is behind Date.now(). */
  readonly nodeClockLagMs: number;
}

export interface MeshkvPage {
  start(args: PageStartArgs): Promise<{ nodeId: string; joined: string }>;
  nodeId(): string;
  put(key: string, value: string, deadlineMs?: number): Promise<PageResult>;
  get(key: string, deadlineMs?: number): Promise<PageResult>;
  /** `node.takeLeadership(partition)`: asks the partition's leader to hand it over. */
  takeLeadership(partition: number): Promise<PageResult>;
  /** `node.status()` trimmed to what the tests look at. */
  status(): StatusView;
  crash(): Promise<void>;
  restart(): Promise<{ nodeId: string; joined: string }>;
  setIsolated(isolated: boolean): void;
  setDropPercent(percent: number): void;
  faults(): FaultState;
  /** The node's mesh links by peer (state, failed attempts, the last failure's reason). */
  links(): { [peer: string]: LinkState };
  /** The node's signaling: connection state, refused and ignored signals (null if stopped). */
  signaling(): SignalingStatus | null;
  /**
   * What a browser that lost this node's data leaves (crashed first): its IndexedDB
   * database and OPFS journal deleted, the profile's note that it existed kept.
   */
  loseStorage(): Promise<void>;
  leave(): Promise<PageResult>;
  resetTimers(): void;
  timers(): PageTimers;
}

declare global {
  interface Window {
    meshkvPage: MeshkvPage;
  }
}

let node: BrowserNode | null = null;
let clusterId = '';
let lastPageTimerMs = performance.now();
let pageTimerMaxGapMs = 0;

setInterval(() => {
  const now = performance.now();
  pageTimerMaxGapMs = Math.max(pageTimerMaxGapMs, now - lastPageTimerMs);
  lastPageTimerMs = now;
}, 100);

function running(): BrowserNode {
  if (node === null) throw new Error('the page has not started its node');
  return node;
}

async function outcome(call: () => Promise<string | null | boolean>): Promise<PageResult> {
  try {
    return { ok: true, value: await call() };
  } catch (error) {
    const e = error as { code?: string; message?: string };
    return { ok: false, code: e.code ?? 'THROWN', message: String(e.message ?? error) };
  }
}

window.meshkvPage = {
  async start(args) {
    clusterId = args.clusterId;
    node = await startBrowserNode({
      signalingUrl: args.signalingUrl,
      token: args.token,
      clusterId: args.clusterId,
    });
    return { nodeId: node.nodeId, joined: node.joined };
  },
  nodeId: () => running().nodeId,
  put: (key, value, deadlineMs) =>
    outcome(() => running().node.put(key, value, deadlineMs === undefined ? {} : { deadlineMs })),
  get: (key, deadlineMs) =>
    outcome(async () => {
      const value = await running().node.get(key, deadlineMs === undefined ? {} : { deadlineMs });
      return value === null ? null : new TextDecoder().decode(value);
    }),
  takeLeadership: (partition) =>
    outcome(async () => {
      running().node.takeLeadership(partition);
      return true;
    }),
  status: () => statusView(running().node.status()),
  crash: () => running().crash(),
  async restart() {
    await running().restart();
    return { nodeId: running().nodeId, joined: running().joined };
  },
  setIsolated: (isolated) => running().setIsolated(isolated),
  setDropPercent: (percent) => running().setDropPercent(percent),
  faults: () => running().faults(),
  links: () => Object.fromEntries(running().links()),
  signaling: () => running().signaling(),
  async loseStorage() {
    const dbName = indexedDbName(clusterId, running().nodeId);
    await deleteJournal(dbName);
    await new Promise<void>((resolve, reject) => {
      const request = indexedDB.deleteDatabase(dbName);
      request.onsuccess = () => resolve();
      request.onerror = () => reject(request.error);
    });
  },
  leave: () =>
    outcome(async () => {
      await running().leave({ deadlineMs: 60_000 });
      return true;
    }),
  resetTimers() {
    pageTimerMaxGapMs = 0;
    lastPageTimerMs = performance.now();
  },
  timers() {
    return {
      visibility: document.visibilityState,
      pageTimerMaxGapMs,
      nodeClockLagMs: Date.now() - running().node.nowMs,
    };
  },
};
