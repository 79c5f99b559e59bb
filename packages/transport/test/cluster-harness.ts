// Node-only harness of the cross-environment tests and the transport benchmark: a real
// signaling server (its CLI, in a child process), Node mesh peers in child processes
// (node-peer.ts), and Chromium pages (puppeteer-core) running browser-peer.ts. Everything
// binds 127.0.0.1 port 0 and is stopped by pid/handle in `close()`.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { chromiumArgs, chromiumPath } from '../../../scripts/chromium.mjs';
import type { BrowserPeerArgs } from './browser-peer.ts';
import type { MeshProbe } from './mesh-helpers.ts';
import type { PeerArgs } from './node-peer.ts';
import { SignalingProcess } from './signaling-server.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const NODE_PEER = fileURLToPath(new URL('./node-peer.ts', import.meta.url));
const BROWSER_PEER = fileURLToPath(new URL('./browser-peer.ts', import.meta.url));
const START_DEADLINE_MS = 60_000;

/**
 * Like waitFor, for conditions that must be asked asynchronously (a page, a process); on
 * timeout the error carries `describe()`, the state a diagnosis needs.
 */
export async function waitForAsync(
  condition: () => Promise<boolean>,
  what: string,
  deadlineMs = 60_000,
  describe?: () => Promise<string>,
): Promise<void> {
  const start = Date.now();
  while (!(await condition())) {
    if (Date.now() - start > deadlineMs) {
      const state =
        describe === undefined
          ? ''
          : `; ${await describe().catch((error) => `state unavailable: ${String(error)}`)}`;
      throw new Error(`timed out waiting for ${what}${state}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Calls `method` of the MeshProbe in a page (browser-peer.ts) with JSON arguments. */
export function inPage<T>(page: Page, method: keyof MeshProbe, ...args: unknown[]): Promise<T> {
  return page.evaluate(
    (m, a) => {
      const probe = window.meshPeer.probe as unknown as Record<string, (...x: unknown[]) => T>;
      return probe[m]!(...a);
    },
    method,
    args,
  ) as Promise<T>;
}

/** A node-peer.ts child process and the events it printed. */
export class NodePeerProcess {
  readonly events: { event: string; peer?: string; reason?: string; memberSecret?: string }[] = [];
  readonly exited: Promise<void>;

  constructor(
    readonly nodeId: string,
    readonly child: ChildProcess,
  ) {
    let buffered = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        this.events.push(JSON.parse(buffered.slice(0, newline)));
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf('\n');
      }
    });
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  isUp(peer: string): boolean {
    const last = this.events.filter((e) => e.peer === peer).at(-1);
    return last?.event === 'up';
  }

  downs(peer: string): number {
    return this.events.filter((e) => e.event === 'down' && e.peer === peer).length;
  }

  async kill(signal: NodeJS.Signals): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill(signal);
      await this.exited;
    }
  }
}

export class Cluster {
  readonly token = 'transport-tests';
  readonly clusterId = 'transport-tests';
  private readonly dataDir = mkdtempSync(join(tmpdir(), 'meshkv-transport-'));
  private signaling: SignalingProcess | undefined;
  private signalingPort = 0;
  private readonly peers = new Set<NodePeerProcess>();
  /** Member secrets by node id: a restarted peer or reopened tab joins under its old id. */
  private readonly secrets = new Map<string, string>();
  private browser: Browser | undefined;
  private http: Server | undefined;
  private pageUrl = '';
  url = '';

  /** Starts the signaling server; after a stop, on the same port and registry file. */
  async startSignaling(): Promise<void> {
    this.signaling = await SignalingProcess.start({
      port: this.signalingPort,
      dataDir: this.dataDir,
      token: this.token,
      args: ['--cluster-id', this.clusterId],
    });
    this.url = this.signaling.url;
    this.signalingPort = this.signaling.port;
  }

  async stopSignaling(): Promise<void> {
    const signaling = this.signaling;
    this.signaling = undefined;
    await signaling?.stop();
  }

  /** Starts a node-peer.ts child joined as `nodeId`. */
  async startNodePeer(nodeId: string): Promise<NodePeerProcess> {
    const args: PeerArgs = {
      url: this.url,
      token: this.token,
      clusterId: this.clusterId,
      nodeId,
      memberSecret: this.secrets.get(nodeId),
    };
    const child = spawn(process.execPath, ['--import', 'tsx', NODE_PEER, JSON.stringify(args)], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const peer = new NodePeerProcess(nodeId, child);
    this.peers.add(peer);
    await waitForAsync(
      async () => {
        if (child.exitCode !== null) throw new Error(`node peer ${nodeId} exited`);
        return peer.events.some((e) => e.event === 'ready');
      },
      `node peer ${nodeId} ready`,
      START_DEADLINE_MS,
    );
    const secret = peer.events.find((e) => e.event === 'ready')?.memberSecret;
    if (secret !== undefined) this.secrets.set(nodeId, secret);
    return peer;
  }

  /** Opens a Chromium tab running a browser peer joined as `nodeId`. */
  async openPage(nodeId: string, echo: boolean): Promise<Page> {
    const browser = await this.launchBrowser();
    const page = await browser.newPage();
    page.on('pageerror', (error) => console.error(`page ${nodeId}:`, error));
    await page.goto(this.pageUrl);
    const args: BrowserPeerArgs = {
      url: this.url,
      token: this.token,
      clusterId: this.clusterId,
      nodeId,
      echo,
      memberSecret: this.secrets.get(nodeId),
    };
    this.secrets.set(nodeId, await page.evaluate((a) => window.meshPeer.start(a), args));
    return page;
  }

  async close(): Promise<void> {
    await this.browser?.close();
    this.browser = undefined;
    await new Promise((resolve) => (this.http ? this.http.close(resolve) : resolve(undefined)));
    for (const peer of this.peers) await peer.kill('SIGKILL');
    await this.stopSignaling();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  private async launchBrowser(): Promise<Browser> {
    if (this.browser !== undefined) return this.browser;
    const bundle = await build({
      entryPoints: [BROWSER_PEER],
      bundle: true,
      format: 'iife',
      platform: 'browser',
      target: 'es2022',
      write: false,
    });
    const script = bundle.outputFiles[0]!.text;
    this.http = createServer((request, response) => {
      if (request.url === '/peer.js') {
        response.writeHead(200, { 'content-type': 'text/javascript' }).end(script);
      } else {
        response
          .writeHead(200, { 'content-type': 'text/html' })
          .end('<!doctype html><script src="/peer.js"></script>');
      }
    });
    const http = this.http;
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const address = http.address();
    if (address === null || typeof address === 'string') throw new Error('no http address');
    this.pageUrl = `http://127.0.0.1:${address.port}/`;
    this.browser = await puppeteer.launch({
      executablePath: chromiumPath,
      headless: true,
      args: [
        ...chromiumArgs,
        // Several tabs share one window here; none may be throttled as a hidden tab is
        // (that case is the heartbeat settings' business, not these tests').
        '--disable-background-timer-throttling',
        '--disable-renderer-backgrounding',
        '--disable-backgrounding-occluded-windows',
      ],
    });
    return this.browser;
  }
}
