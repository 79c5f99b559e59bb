// The signaling client against the signaling server CLI in a child process.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import {
  SignalingClient,
  type SignalingClientOptions,
  SignalingError,
} from '../src/signaling-client.ts';
import { SignalingProcess } from './signaling-server.ts';
import { rejection, waitFor } from './support.ts';

const TOKEN = 'client-test-token';
const CLUSTER = 'client-test';

describe('signaling client with a server process', () => {
  const processes: SignalingProcess[] = [];
  const clients: SignalingClient[] = [];
  let dataDir: string;

  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'meshkv-signaling-client-'));
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) await client.close();
    for (const server of processes.splice(0)) await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  async function server(options: { port?: number; token?: string } = {}) {
    const started = await SignalingProcess.start({
      dataDir,
      token: options.token ?? TOKEN,
      ...(options.port === undefined ? {} : { port: options.port }),
      args: ['--cluster-id', CLUSTER],
    });
    processes.push(started);
    return started;
  }

  async function client(url: string, options: Partial<SignalingClientOptions> = {}) {
    const joined = await SignalingClient.connect({
      url,
      token: TOKEN,
      clusterId: CLUSTER,
      kind: 'node',
      connectTimeoutMs: 30_000,
      reconnectDelayMs: 50,
      reconnectDelayMaxMs: 250,
      ...options,
    });
    clients.push(joined);
    return joined;
  }

  it('joins, learns members and presence, and relays signals', async () => {
    const { url } = await server();
    const a = await client(url, { nodeId: 'a' });
    const joined: string[] = [];
    a.on('presence', (nodeId, online) => online && joined.push(nodeId));
    const epochs: number[] = [];
    a.on('registry', (registry) => epochs.push(registry.epoch));
    const b = await client(url, { kind: 'browser' });
    await waitFor(() => joined.length === 1 && epochs.length === 1, 'b to appear at a');
    expect(joined).to.deep.equal([b.nodeId]);
    expect(epochs).to.deep.equal([2]);
    expect(a.registry.members.map((member) => member.nodeId)).to.include(b.nodeId);
    const received: unknown[] = [];
    a.on('signal', (from, payload) => received.push({ from, payload }));
    await b.sendSignal('a', { type: 'answer', sdp: 'v=0' });
    await waitFor(() => received.length === 1, 'the signal');
    expect(received).to.deep.equal([{ from: b.nodeId, payload: { type: 'answer', sdp: 'v=0' } }]);
    expect((await rejection(b.sendSignal('nobody', {}))).code).to.equal('unknown_target');
  });

  it('holds the signals that arrive before anyone listens and gives them, in order, to the first listener', async () => {
    const { url } = await server();
    const a = await client(url, { nodeId: 'a' });
    const b = await client(url, { nodeId: 'b' });
    // a has no `signal` listener yet (as a node between its join and its mesh).
    await b.sendSignal('a', { type: 'offer', sdp: 'first' });
    await b.sendSignal('a', { candidate: 'second' });
    await waitFor(() => a.stats().heldSignals === 2, 'both signals held at a');
    const received: unknown[] = [];
    a.on('signal', (from, payload) => received.push({ from, payload }));
    expect(received, 'delivered after on() returns').to.deep.equal([]);
    await b.sendSignal('a', { candidate: 'third' });
    await waitFor(() => received.length === 3, 'all three signals');
    expect(received).to.deep.equal([
      { from: 'b', payload: { type: 'offer', sdp: 'first' } },
      { from: 'b', payload: { candidate: 'second' } },
      { from: 'b', payload: { candidate: 'third' } },
    ]);
    expect(a.stats().heldSignals).to.equal(0);
  });

  it('refuses a bad token with a typed error and a clear reason', async () => {
    const { url } = await server();
    const error = await rejection(client(url, { token: 'wrong' }));
    expect(error.code).to.equal('unauthorized');
    expect(error.message).to.equal('wrong cluster token');
  });

  it('uses a registered id again only with its member secret (typed wrong_secret)', async () => {
    const { url } = await server();
    const first = await client(url, { nodeId: 'a' });
    const { memberSecret } = first;
    expect(memberSecret).to.match(/^[0-9a-f]{64}$/);
    await first.close();
    // Storage that lost the secret (or never had it) cannot be node a.
    const refused = await rejection(client(url, { nodeId: 'a' }));
    expect(refused).to.be.instanceOf(SignalingError);
    expect(refused.code).to.equal('wrong_secret');
    const again = await client(url, { nodeId: 'a', memberSecret });
    expect(again.memberSecret).to.equal(memberSecret);
    expect(again.registry.epoch).to.equal(1);
    expect((await rejection(client(url, { memberSecret }))).code).to.equal('invalid');
  });

  it('reconnects by itself after a server restart and re-joins with its id', async () => {
    const first = await server();
    const a = await client(first.url, { nodeId: 'a' });
    const b = await client(first.url, { nodeId: 'b' });
    const c = await client(first.url, { nodeId: 'c' });
    await c.leave();
    expect(c.state).to.equal('left');
    const before = a.registry;
    expect(before.epoch).to.equal(4);
    expect(await first.stop('SIGTERM')).to.equal(0);
    await waitFor(() => a.state === 'reconnecting' && b.state === 'reconnecting', 'reconnecting');
    expect((await rejection(a.sendSignal('b', {}))).code).to.equal('disconnected');
    const second = await server({ port: first.port });
    await waitFor(() => a.state === 'joined' && b.state === 'joined', 'both to re-join');
    expect(a.nodeId).to.equal('a');
    expect(a.stats().rejoins).to.equal(1);
    // Restored from disk: same epoch, same members; reconnecting changed nothing.
    expect(a.registry).to.deep.equal(before);
    const status = (await (await fetch(`${second.url}/status`)).json()) as {
      epoch: number;
      members: { nodeId: string; state: string; connected: boolean }[];
    };
    expect(status.epoch).to.equal(4);
    // The member that left closed when the connection dropped: a rejoin would make it up.
    expect(c.state).to.equal('closed');
    expect(status.members.find((m) => m.nodeId === 'c')).to.include({ state: 'left' });
    await waitFor(() => b.online.has('a'), 'a online at b');
    const received: string[] = [];
    b.on('signal', (from) => received.push(from));
    await a.sendSignal('b', { after: 'restart' });
    await waitFor(() => received.length === 1, 'a signal after the restart');
  });

  it('reports a refused re-join as an error and closes', async () => {
    const first = await server();
    const a = await client(first.url, { nodeId: 'a' });
    const errors: SignalingError[] = [];
    a.on('error', (error) => errors.push(error));
    await first.stop();
    await server({ port: first.port, token: 'rotated' });
    await waitFor(() => a.state === 'closed', 'the client to give up');
    expect(errors.map((error) => error.code)).to.deep.equal(['unauthorized']);
    expect((await rejection(a.sendSignal('b', {}))).code).to.equal('closed');
  });

  it('fails connect with timeout when no server answers', async () => {
    const first = await server();
    const { url } = first;
    await first.stop();
    const error = await rejection(client(url, { connectTimeoutMs: 500 }));
    expect(error.code).to.equal('timeout');
    expect(error.message).to.contain(url);
  });
});

describe('signaling CLI', () => {
  it('prints its usage with --help and exits 0', async () => {
    const outcome = await SignalingProcess.run(['--help']);
    expect(outcome.code).to.equal(0);
    expect(outcome.stdout).to.contain('--grace-period-ms');
    expect(outcome.stdout).to.contain('MESHKV_TOKEN');
  });

  it('exits 2 for an unknown flag', async () => {
    const outcome = await SignalingProcess.run(['--token', 't', '--partitons', '8']);
    expect(outcome.code).to.equal(2);
    expect(outcome.stderr).to.contain("Unknown option '--partitons'");
  });

  it('exits 2 with the reason when the token is missing', async () => {
    const outcome = await SignalingProcess.run(['--port', '0']);
    expect(outcome.code).to.equal(2);
    expect(outcome.stderr).to.contain('a cluster token is required');
  });

  /** Runs `test` with a fresh data dir, removed afterwards. */
  async function withDataDir(test: (dataDir: string) => Promise<void>): Promise<void> {
    const dataDir = await mkdtemp(join(tmpdir(), 'meshkv-signaling-cli-'));
    try {
      await test(dataDir);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }

  /** Runs the CLI on `dataDir` to its end: for start-up errors. */
  const runOn = (dataDir: string) =>
    SignalingProcess.run(['--port', '0', '--data-dir', dataDir, '--token', 't']);

  it('exits 1 while another server holds the data dir; a SIGKILLed one holds it no more', () =>
    withDataDir(async (dataDir) => {
      const first = await SignalingProcess.start({ dataDir, token: 't' });
      const second = await runOn(dataDir);
      expect(second.code).to.equal(1);
      expect(second.stderr).to.contain(`data dir ${dataDir} is in use by another signaling server`);
      // The kernel closes a killed process's sockets: its lock is dead, and is taken over.
      expect(await first.stop('SIGKILL')).to.equal(null);
      const third = await SignalingProcess.start({ dataDir, token: 't' });
      expect(await third.stop()).to.equal(0);
    }));

  it('exits 1 naming the file when the registry is corrupt', () =>
    withDataDir(async (dataDir) => {
      await writeFile(join(dataDir, 'registry.json'), 'not json');
      const outcome = await runOn(dataDir);
      expect(outcome.code).to.equal(1);
      expect(outcome.stderr).to.contain(
        `registry file ${join(dataDir, 'registry.json')} is corrupt`,
      );
    }));
});
