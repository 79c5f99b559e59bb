// Helpers for the signaling server tests.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignalingClient, type SignalingClientOptions } from '@meshkv/transport/signaling-client';
import {
  type HandshakeAuth,
  type MemberKind,
  PROTOCOL_VERSION,
} from '@meshkv/transport/signaling-protocol';
import { io, type Socket } from 'socket.io-client';
import type { Clock } from '../src/clock.ts';
import { SignalingServer, type SignalingServerOptions } from '../src/server.ts';

export const TOKEN = 'test-token';
export const CLUSTER = 'test-cluster';

/**
 * A clock that moves only when told: grace periods and rate limits become exact, and no
 * test sleeps for them.
 */
export class ManualClock implements Clock {
  private nowMs = 0;

  /** `startWallClockMs`: the wall clock at the start (a restarted server's clock goes on). */
  constructor(private readonly startWallClockMs = 0) {}

  wallClockMs(): number {
    return this.startWallClockMs + this.nowMs;
  }

  private nextId = 0;
  private readonly timers = new Map<number, { atMs: number; callback: () => void }>();

  now(): number {
    return this.nowMs;
  }

  setTimer(delayMs: number, callback: () => void): () => void {
    const id = this.nextId++;
    this.timers.set(id, { atMs: this.nowMs + delayMs, callback });
    return () => this.timers.delete(id);
  }

  /** Moves time forward, running the timers that come due, in order. */
  advance(ms: number): void {
    const endMs = this.nowMs + ms;
    for (;;) {
      const due = [...this.timers.entries()]
        .filter(([, timer]) => timer.atMs <= endMs)
        .sort(([a, x], [b, y]) => x.atMs - y.atMs || a - b)[0];
      if (due === undefined) break;
      this.timers.delete(due[0]);
      this.nowMs = due[1].atMs;
      due[1].callback();
    }
    this.nowMs = endMs;
  }
}

/** Servers, clients, sockets and directories a test made; `cleanup` stops them all. */
export class Fixture {
  readonly servers: SignalingServer[] = [];
  readonly clients: SignalingClient[] = [];
  readonly sockets: Socket[] = [];
  readonly dirs: string[] = [];

  async dataDir(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'meshkv-signaling-'));
    this.dirs.push(dir);
    return dir;
  }

  async server(options: Partial<SignalingServerOptions> = {}): Promise<SignalingServer> {
    const server = await SignalingServer.start({
      dataDir: options.dataDir ?? (await this.dataDir()),
      token: TOKEN,
      settings: { clusterId: CLUSTER },
      ...options,
    });
    this.servers.push(server);
    return server;
  }

  async client(
    server: SignalingServer,
    options: Partial<SignalingClientOptions> & { kind?: MemberKind } = {},
  ): Promise<SignalingClient> {
    const client = await SignalingClient.connect({
      url: server.url,
      token: TOKEN,
      clusterId: CLUSTER,
      kind: 'node',
      connectTimeoutMs: 20_000,
      reconnectDelayMs: 50,
      reconnectDelayMaxMs: 200,
      ...options,
    });
    this.clients.push(client);
    return client;
  }

  /**
   * A bare Socket.IO connection, for sending what the client never would; its handshake
   * carries `auth` (default: the right one; null: none). Rejects with the handshake's
   * refusal.
   */
  async socket(server: SignalingServer, auth: object | null = handshakeAuth()): Promise<Socket> {
    const socket = io(server.url, {
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      ...(auth === null ? {} : { auth }),
    });
    this.sockets.push(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    return socket;
  }

  async cleanup(): Promise<void> {
    for (const client of this.clients) await client.close();
    for (const socket of this.sockets) socket.disconnect();
    for (const server of this.servers) await server.close();
    for (const dir of this.dirs) await rm(dir, { recursive: true, force: true });
    this.clients.length = 0;
    this.sockets.length = 0;
    this.servers.length = 0;
    this.dirs.length = 0;
  }
}

/** Emits `event` with `payload` and resolves with the acknowledgement. */
export function request(socket: Socket, event: string, payload: unknown): Promise<unknown> {
  return socket.timeout(20_000).emitWithAck(event, payload);
}

/** A join payload for a bare socket. */
export function joinPayload(fields: Record<string, unknown> = {}): Record<string, unknown> {
  return { clusterId: CLUSTER, kind: 'node', ...fields };
}

/** A handshake `auth` for a bare socket. */
export function handshakeAuth(fields: Partial<Record<keyof HandshakeAuth, unknown>> = {}) {
  return { protocolVersion: PROTOCOL_VERSION, clusterId: CLUSTER, token: TOKEN, ...fields };
}
