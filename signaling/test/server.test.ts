import { createHash } from 'node:crypto';
import { link, mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { DEFAULT_SETTINGS } from '@meshkv/ring';
import { SignalingClient, type SignalingError } from '@meshkv/transport/signaling-client';
import { rejection, waitFor } from '@meshkv/transport/test-support';
import { expect } from 'chai';
import type { Socket } from 'socket.io-client';
import { isLoopbackRequest, MAX_URL_BYTES } from '../src/http.ts';
import { RegistryFileError, registryFilePath } from '../src/registry-file.ts';
import {
  CLUSTER,
  Fixture,
  handshakeAuth,
  joinPayload,
  ManualClock,
  request,
  TOKEN,
} from './support.ts';

/** Makes a bare socket answer probes, as a live SignalingClient does. */
function answerProbes(socket: Socket): void {
  socket.on('probe', (_request: unknown, ack: (reply: unknown) => void) => ack({}));
}

function stateOf(registry: { members: readonly { nodeId: string; state: string }[] }, id: string) {
  return registry.members.find((member) => member.nodeId === id)?.state;
}

describe('signaling server: joining', () => {
  const fx = new Fixture();
  afterEach(() => fx.cleanup());

  it('assigns a fresh node id when none is requested and registers it up at epoch 1', async () => {
    const server = await fx.server();
    const client = await fx.client(server, { kind: 'browser' });
    expect(client.nodeId).to.match(/^[A-Za-z0-9._:-]{1,64}$/);
    expect(client.registry.epoch).to.equal(1);
    expect(client.registry.members).to.deep.equal([
      { nodeId: client.nodeId, kind: 'browser', state: 'up', joinedAtEpoch: 1, changedAtEpoch: 1 },
    ]);
    expect(client.registry.settings).to.deep.equal({
      clusterId: CLUSTER,
      ...DEFAULT_SETTINGS,
    });
    expect(server.registry()).to.deep.equal(client.registry);
  });

  it('registers a requested id and pushes each join to the members already there', async () => {
    const server = await fx.server();
    const a = await fx.client(server, { nodeId: 'a' });
    const epochs: number[] = [];
    a.on('registry', (registry) => epochs.push(registry.epoch));
    const b = await fx.client(server, { nodeId: 'b', httpAddress: 'http://127.0.0.1:9000' });
    expect(b.nodeId).to.equal('b');
    await waitFor(() => epochs.length === 1, 'the push of b joining');
    expect(epochs).to.deep.equal([2]);
    expect(a.registry.members.map((member) => member.nodeId)).to.deep.equal(['a', 'b']);
    expect(a.registry.members[1]!.httpAddress).to.equal('http://127.0.0.1:9000');
  });

  it('refuses a wrong or missing token with a clear reason', async () => {
    const server = await fx.server();
    const wrong = await rejection(fx.client(server, { token: 'not-the-token' }));
    expect(wrong.code).to.equal('unauthorized');
    expect(wrong.message).to.equal('wrong cluster token');
    const missing = await rejection(fx.client(server, { token: '' }));
    expect(missing.code).to.equal('unauthorized');
    expect(missing.message).to.equal('missing cluster token');
    expect(server.stats().refused.unauthorized).to.equal(2);
    expect(server.registry().epoch).to.equal(0);
  });

  it('refuses in the handshake another cluster id, another version, a malformed auth', async () => {
    const server = await fx.server();
    const refusal = (auth: object | null) =>
      fx.socket(server, auth).then(
        () => expect.fail('the handshake was accepted'),
        (error: { data: unknown }) => error.data,
      );
    expect(await refusal(handshakeAuth({ clusterId: 'other' }))).to.deep.equal({
      code: 'wrong_cluster',
      message: `this server hosts cluster '${CLUSTER}', not 'other'`,
    });
    expect(await refusal(handshakeAuth({ protocolVersion: 1 }))).to.deep.equal({
      code: 'incompatible_version',
      message: 'protocol version 1; this server speaks 2',
    });
    expect(await refusal(null)).to.have.property('code', 'incompatible_version');
    expect(await refusal(handshakeAuth({ token: 5 }))).to.deep.equal({
      code: 'invalid',
      message: 'token must be a string',
    });
    // The join too names its cluster.
    const socket = await fx.socket(server);
    expect(await request(socket, 'join', joinPayload({ clusterId: 'other' }))).to.deep.equal({
      ok: false,
      error: {
        code: 'wrong_cluster',
        message: `this server hosts cluster '${CLUSTER}', not 'other'`,
      },
    });
    expect(server.stats().connections).to.equal(1);
    expect(server.registry().epoch).to.equal(0);
  });

  it('refuses malformed node ids', async () => {
    const server = await fx.server();
    const socket = await fx.socket(server);
    for (const nodeId of ['', 'a#1', 'a b', 'x'.repeat(65), 'é', 7]) {
      const reply = (await request(socket, 'join', joinPayload({ nodeId }))) as {
        error: { code: string };
      };
      expect(reply.error.code, JSON.stringify(nodeId)).to.equal('invalid');
    }
    expect(server.stats().refused.invalid).to.equal(6);
  });

  it('refuses an id connected elsewhere and reclaims it once that one is gone', async () => {
    const server = await fx.server();
    const first = await fx.client(server, { nodeId: 'x' });
    const { memberSecret } = first;
    const duplicate = await rejection(fx.client(server, { nodeId: 'x', memberSecret }));
    expect(duplicate.code).to.equal('duplicate_id');
    expect(duplicate.message).to.contain("'x'");
    await first.close();
    await waitFor(() => server.connectedMembers().length === 0, 'the server to notice');
    const again = await fx.client(server, { nodeId: 'x', memberSecret });
    expect(again.nodeId).to.equal('x');
    expect(again.memberSecret).to.equal(memberSecret);
    // Reclaiming an `up` id is not a membership change.
    expect(server.registry().epoch).to.equal(1);
  });

  it('binds an id to the member secret of its first join: no takeover without it', async () => {
    const server = await fx.server();
    const alice = await fx.client(server, { nodeId: 'alice' });
    const address = 'http://127.0.0.1:7002';
    const bob = await fx.client(server, { nodeId: 'bob', httpAddress: address });
    expect(bob.memberSecret).to.match(/^[0-9a-f]{64}$/);
    expect(alice.memberSecret).to.not.equal(bob.memberSecret);
    await bob.close();
    await waitFor(() => !server.connectedMembers().includes('bob'), 'bob to be gone');
    // Another member with the token, within bob's grace period, asks for bob's id.
    const mallory = { nodeId: 'bob', httpAddress: 'http://127.0.0.1:6666' };
    const none = await rejection(fx.client(server, mallory));
    expect(none.code).to.equal('wrong_secret');
    expect(none.message).to.equal(
      "node id 'bob' is bound to a member secret and this join has none: join with the secret kept with its data, or under a new id",
    );
    const guessed = await rejection(
      fx.client(server, { ...mallory, memberSecret: 'f'.repeat(64) }),
    );
    expect(guessed.code).to.equal('wrong_secret');
    expect(guessed.message).to.equal(
      "wrong member secret for node id 'bob': the id belongs to other storage; join under a new id",
    );
    expect(server.stats().refused.wrong_secret).to.equal(2);
    // Nothing of bob's moved: his address, and signals meant for him are not delivered.
    expect(server.registry().members.find((m) => m.nodeId === 'bob')?.httpAddress).to.equal(
      address,
    );
    expect((await rejection(alice.sendSignal('bob', { type: 'offer' }))).code).to.equal(
      'target_unavailable',
    );
    const back = await fx.client(server, {
      nodeId: 'bob',
      httpAddress: address,
      memberSecret: bob.memberSecret,
    });
    const offers: unknown[] = [];
    back.on('signal', (from, payload) => offers.push({ from, payload }));
    await alice.sendSignal('bob', { type: 'offer' });
    await waitFor(() => offers.length === 1, 'the offer to reach bob');
    expect(server.registry().epoch).to.equal(2);
  });

  it('keeps only a hash of each member secret, in the registry file', async () => {
    const dataDir = await fx.dataDir();
    const server = await fx.server({ dataDir });
    const a = await fx.client(server, { nodeId: 'a' });
    const file = JSON.parse(await readFile(registryFilePath(dataDir), 'utf8')) as {
      version: number;
      secretHashes: Record<string, string>;
    };
    expect(file.version).to.equal(2);
    expect(file.secretHashes).to.deep.equal({
      a: createHash('sha256').update(a.memberSecret).digest('hex'),
    });
    expect(JSON.stringify(file)).to.not.contain(a.memberSecret);
    await a.close();
    await server.close();
    // After a restart the id is still bound.
    const restarted = await fx.server({ dataDir });
    expect((await rejection(fx.client(restarted, { nodeId: 'a' }))).code).to.equal('wrong_secret');
    await fx.client(restarted, { nodeId: 'a', memberSecret: a.memberSecret });
  });

  it('lets the same session take its id over from a connection not noticed dead', async () => {
    const server = await fx.server();
    const old = await fx.socket(server);
    answerProbes(old);
    const joined = (await request(old, 'join', joinPayload({ nodeId: 'x' }))) as {
      sessionKey: string;
      memberSecret: string;
    };
    const { memberSecret } = joined;
    const fresh = await fx.socket(server);
    const refused = (await request(fresh, 'join', joinPayload({ nodeId: 'x', memberSecret }))) as {
      error: { code: string };
    };
    expect(refused.error.code).to.equal('duplicate_id');
    const wrongKey = (await request(
      fresh,
      'join',
      joinPayload({ nodeId: 'x', memberSecret, sessionKey: 'guess' }),
    )) as { error: { code: string } };
    expect(wrongKey.error.code).to.equal('duplicate_id');
    // The session key alone is not enough: the id's secret comes first.
    const keyOnly = (await request(
      fresh,
      'join',
      joinPayload({ nodeId: 'x', sessionKey: joined.sessionKey }),
    )) as { error: { code: string } };
    expect(keyOnly.error.code).to.equal('wrong_secret');
    const taken = (await request(
      fresh,
      'join',
      joinPayload({ nodeId: 'x', memberSecret, sessionKey: joined.sessionKey }),
    )) as { ok: boolean; nodeId: string };
    expect(taken).to.include({ ok: true, nodeId: 'x' });
    await waitFor(() => !old.connected, 'the old connection to be closed');
    expect(server.connectedMembers()).to.deep.equal(['x']);
    expect(server.registry().epoch).to.equal(1);
  });

  it('answers a repeated join on one connection the same, and refuses a different one', async () => {
    const server = await fx.server();
    const socket = await fx.socket(server);
    const first = await request(socket, 'join', joinPayload({ nodeId: 'x' }));
    expect(await request(socket, 'join', joinPayload({ nodeId: 'x' }))).to.deep.equal(first);
    expect(await request(socket, 'join', joinPayload())).to.deep.equal(first);
    const other = (await request(socket, 'join', joinPayload({ nodeId: 'y' }))) as {
      error: { code: string; message: string };
    };
    expect(other.error).to.deep.equal({
      code: 'invalid',
      message: "this connection already joined as 'x'",
    });
    const browser = (await request(
      socket,
      'join',
      joinPayload({ nodeId: 'x', kind: 'browser' }),
    )) as {
      error: { code: string };
    };
    expect(browser.error.code).to.equal('invalid');
    expect(server.registry().epoch).to.equal(1);
  });

  it('replaces a holder of the id that does not answer a probe (dead, not noticed)', async () => {
    const server = await fx.server({ probeTimeoutMs: 200 });
    const observer = await fx.client(server, { nodeId: 'observer' });
    const presence: string[] = [];
    observer.on('presence', (nodeId, online) => presence.push(`${nodeId} ${online}`));
    const silent = await fx.socket(server); // joins, then never answers anything
    const { memberSecret } = (await request(silent, 'join', joinPayload({ nodeId: 'x' }))) as {
      memberSecret: string;
    };
    // Without the secret it is refused before any probe: the holder is not disturbed.
    expect((await rejection(fx.client(server, { nodeId: 'x' }))).code).to.equal('wrong_secret');
    expect(silent.connected).to.equal(true);
    const reloaded = await fx.client(server, { nodeId: 'x', memberSecret });
    expect(reloaded.nodeId).to.equal('x');
    await waitFor(() => !silent.connected, 'the silent connection to be closed');
    await waitFor(() => presence.length === 3, 'presence of x: on, off, on');
    expect(presence).to.deep.equal(['x true', 'x false', 'x true']);
    expect(server.connectedMembers()).to.deep.equal(['observer', 'x']);
    expect(server.registry().epoch).to.equal(2);
  });

  it('disconnects a connection that does not join in time', async () => {
    const clock = new ManualClock();
    const server = await fx.server({ clock, joinTimeoutMs: 5_000 });
    const socket = await fx.socket(server);
    const notices: unknown[] = [];
    socket.on('protocol_error', (notice) => notices.push(notice));
    clock.advance(4_999);
    expect(socket.connected).to.equal(true);
    clock.advance(1);
    await waitFor(() => !socket.connected, 'the disconnection');
    expect(notices).to.deep.equal([
      { error: { code: 'not_joined', message: 'no join within 5000 ms' } },
    ]);
  });

  it('refuses new ids beyond maxMembers while known ids may come back', async () => {
    const server = await fx.server({ limits: { maxMembers: 2 } });
    await fx.client(server, { nodeId: 'a' });
    const b = await fx.client(server, { nodeId: 'b' });
    const full = await rejection(fx.client(server, { nodeId: 'c' }));
    expect(full.code).to.equal('cluster_full');
    await b.close();
    await waitFor(() => server.connectedMembers().length === 1, 'b to be gone');
    await fx.client(server, { nodeId: 'b', memberSecret: b.memberSecret });
  });

  it('refuses connections beyond maxConnections', async () => {
    const server = await fx.server({ limits: { maxConnections: 2 } });
    await fx.socket(server);
    await fx.socket(server);
    const third = await rejection(fx.client(server));
    expect(third.code).to.equal('server_full');
    expect(server.stats().refused.server_full).to.equal(1);
    expect(server.stats().connections).to.equal(2);
  });

  it('counts only connections that passed the handshake against maxConnections', async () => {
    const server = await fx.server({ limits: { maxConnections: 2 } });
    const attempts = [null, handshakeAuth({ token: '' }), handshakeAuth({ token: 'guess' })];
    const outcomes = await Promise.allSettled(
      Array.from({ length: 21 }, (_, i) => fx.socket(server, attempts[i % 3])),
    );
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).to.have.length(0);
    expect(server.stats().connections).to.equal(0);
    expect(server.stats().refused).to.deep.equal({ incompatible_version: 7, unauthorized: 14 });
    const member = await fx.client(server, { nodeId: 'real' });
    expect(member.state).to.equal('joined');
    await fx.client(server, { nodeId: 'other' });
    expect(server.stats().connections).to.equal(2);
  });
});

describe('signaling server: grace period and leave', () => {
  const fx = new Fixture();
  afterEach(() => fx.cleanup());
  const gracePeriodMs = 1_000;

  /** A server with a manual clock, member `a` and an observer recording pushed epochs. */
  async function setup() {
    const clock = new ManualClock();
    const server = await fx.server({ clock, gracePeriodMs });
    const a = await fx.client(server, { nodeId: 'a' });
    const observer = await fx.client(server, { nodeId: 'observer' });
    const pushed: number[] = [];
    observer.on('registry', (registry) => pushed.push(registry.epoch));
    expect(server.registry().epoch).to.equal(2);
    return { clock, server, a, observer, pushed };
  }

  it('does not mark down a member back within the grace period', async () => {
    const { clock, server, a, pushed } = await setup();
    await a.close();
    await waitFor(() => !server.connectedMembers().includes('a'), 'the disconnection');
    clock.advance(gracePeriodMs - 1);
    await fx.client(server, { nodeId: 'a', memberSecret: a.memberSecret });
    clock.advance(10 * gracePeriodMs);
    expect(server.registry().epoch).to.equal(2);
    expect(stateOf(server.registry(), 'a')).to.equal('up');
    expect(pushed).to.deep.equal([]);
  });

  it('marks down after the grace period, once, pushed; a return marks it up', async () => {
    const { clock, server, a, observer, pushed } = await setup();
    await a.close();
    await waitFor(() => !server.connectedMembers().includes('a'), 'the disconnection');
    clock.advance(gracePeriodMs);
    await waitFor(() => pushed.length === 1, 'the push of a down');
    expect(pushed).to.deep.equal([3]);
    expect(stateOf(observer.registry, 'a')).to.equal('down');
    expect(observer.registry.members.find((m) => m.nodeId === 'a')!.changedAtEpoch).to.equal(3);
    clock.advance(10 * gracePeriodMs);
    await fx.client(server, { nodeId: 'a', memberSecret: a.memberSecret });
    await waitFor(() => pushed.length === 2, 'the push of a up again');
    expect(pushed).to.deep.equal([3, 4]);
    expect(stateOf(server.registry(), 'a')).to.equal('up');
    expect(server.registry().members.find((m) => m.nodeId === 'a')!.joinedAtEpoch).to.equal(1);
  });

  it('marks a graceful leave left, once, pushed, and never down afterwards', async () => {
    const { clock, server, a, observer, pushed } = await setup();
    const toA: unknown[] = [];
    a.on('signal', (_from, payload) => toA.push(payload));
    await a.leave();
    expect(a.state).to.equal('left');
    await waitFor(() => pushed.length === 1, 'the push of a left');
    expect(pushed).to.deep.equal([3]);
    expect(stateOf(observer.registry, 'a')).to.equal('left');
    // Until it closes, the left member's hand-off can still open links: signals flow.
    await a.sendSignal('observer', { from: 'a' });
    await observer.sendSignal('a', { to: 'a' });
    await waitFor(() => toA.length === 1, 'a signal to the left member');
    await a.leave(); // Idempotent: nothing more happens.
    await a.close();
    await waitFor(() => !server.connectedMembers().includes('a'), 'the disconnection');
    clock.advance(10 * gracePeriodMs);
    expect(server.registry().epoch).to.equal(3);
    expect(stateOf(server.registry(), 'a')).to.equal('left');
    expect(await rejection(a.sendSignal('observer', {}))).to.have.property('code', 'closed');
    expect(await rejection(observer.sendSignal('a', {}))).to.have.property(
      'code',
      'target_unavailable',
    );
  });
});

describe('signaling server: retirement of down members', () => {
  const fx = new Fixture();
  afterEach(() => fx.cleanup());

  it('retires a member down for the retirement period: dead tabs do not fill the cluster', async () => {
    const clock = new ManualClock();
    const server = await fx.server({
      clock,
      gracePeriodMs: 1_000,
      retirementPeriodMs: 60_000,
      limits: { maxMembers: 2 },
    });
    const observer = await fx.client(server, { nodeId: 'observer' });
    const pushed: string[] = [];
    observer.on('registry', (registry) =>
      pushed.push(`${registry.epoch} ${stateOf(registry, 'tab-1')}`),
    );
    const tab = await fx.client(server, { nodeId: 'tab-1', kind: 'browser' });
    await tab.close();
    await waitFor(() => server.connectedMembers().length === 1, 'the tab to be gone');
    clock.advance(1_000);
    await waitFor(() => stateOf(server.registry(), 'tab-1') === 'down', 'the tab down');
    expect((await rejection(fx.client(server, { kind: 'browser' }))).code).to.equal('cluster_full');
    clock.advance(59_999);
    expect(stateOf(server.registry(), 'tab-1')).to.equal('down');
    clock.advance(1);
    await waitFor(() => stateOf(server.registry(), 'tab-1') === 'retired', 'the tab retired');
    await waitFor(() => pushed.length === 3, 'the pushes');
    expect(pushed).to.deep.equal(['2 up', '3 down', '4 retired']);
    const next = await fx.client(server, { kind: 'browser' });
    expect(next.registry.members.map((m) => `${m.nodeId} ${m.state}`)).to.deep.equal(
      [`${next.nodeId} up`, 'observer up', 'tab-1 retired'].sort(),
    );
  });

  it('retries a retirement it could not persist after a grace period', async () => {
    const dataDir = await fx.dataDir();
    const clock = new ManualClock();
    const server = await fx.server({
      dataDir,
      clock,
      gracePeriodMs: 1_000,
      retirementPeriodMs: 5_000,
    });
    const a = await fx.client(server, { nodeId: 'a' });
    await a.close();
    await waitFor(() => server.connectedMembers().length === 0, 'a to be gone');
    clock.advance(1_000);
    await waitFor(() => stateOf(server.registry(), 'a') === 'down', 'a down');
    const blocker = join(dataDir, 'registry.json.tmp');
    await mkdir(blocker);
    clock.advance(5_000);
    await waitFor(() => server.stats().persistFailures === 1, 'the failed retirement');
    expect(stateOf(server.registry(), 'a')).to.equal('down');
    await rmdir(blocker);
    clock.advance(999);
    expect(stateOf(server.registry(), 'a')).to.equal('down');
    clock.advance(1);
    await waitFor(() => stateOf(server.registry(), 'a') === 'retired', 'a retired on the retry');
  });

  it('counts the retirement period from the persisted down time, across restarts', async () => {
    const dataDir = await fx.dataDir();
    const firstClock = new ManualClock();
    const first = await fx.server({ dataDir, clock: firstClock, gracePeriodMs: 1_000 });
    const a = await fx.client(first, { nodeId: 'a' });
    await a.close();
    await waitFor(() => first.connectedMembers().length === 0, 'a to be gone');
    // The first server's clock marks a down at wall-clock 1000.
    firstClock.advance(1_000);
    await waitFor(() => stateOf(first.registry(), 'a') === 'down', 'a down');
    await first.close();
    const clock = new ManualClock(4_000);
    const second = await fx.server({ dataDir, clock, retirementPeriodMs: 5_000 });
    clock.advance(1_999);
    expect(stateOf(second.registry(), 'a')).to.equal('down');
    clock.advance(1);
    await waitFor(() => stateOf(second.registry(), 'a') === 'retired', 'a retired at 6000');
    // Its storage may still come back under its id.
    const back = await fx.client(second, { nodeId: 'a', memberSecret: a.memberSecret });
    expect(stateOf(back.registry, 'a')).to.equal('up');
  });
});

describe('signaling server: registry pushes', () => {
  const fx = new Fixture();
  afterEach(() => fx.cleanup());

  it('keeps every member’s copy equal to the registry, pruned records included', async () => {
    const server = await fx.server({ limits: { maxLeftMembers: 1 } });
    const observer = await fx.client(server, { nodeId: 'observer' });
    let pushes = 0;
    observer.on('registry', () => pushes++);
    for (const nodeId of ['a', 'b', 'c']) {
      const member = await fx.client(server, { nodeId });
      await member.leave();
      await member.close(); // A left member's connection holds its id until it closes.
    }
    await waitFor(() => server.connectedMembers().join() === 'observer', 'the left ones gone');
    await fx.client(server, { nodeId: 'b', kind: 'browser' });
    await waitFor(() => pushes === 7, 'seven pushes');
    expect(observer.registry).to.deep.equal(server.registry());
    expect(server.registry().members.map((m) => `${m.nodeId} ${m.state}`)).to.deep.equal([
      'b up',
      'c left',
      'observer up',
    ]);
    expect(observer.stats().malformedReceived).to.equal(0);
  });
});

describe('signaling server: relay', () => {
  const fx = new Fixture();
  afterEach(() => fx.cleanup());

  it('relays a signal between members with the authenticated sender id', async () => {
    const server = await fx.server();
    const a = await fx.client(server, { nodeId: 'a' });
    const b = await fx.client(server, { nodeId: 'b' });
    const received: unknown[] = [];
    b.on('signal', (from, payload) => received.push({ from, payload }));
    const offer = { type: 'offer', sdp: 'v=0\r\n', nested: { list: [1, 'two', null, true] } };
    await a.sendSignal('b', offer);
    await waitFor(() => received.length === 1, 'the signal');
    expect(received).to.deep.equal([{ from: 'a', payload: offer }]);
    expect(server.stats().signalsRelayed).to.equal(1);
  });

  it('answers an unknown target, an absent one and oneself with errors', async () => {
    const server = await fx.server();
    const a = await fx.client(server, { nodeId: 'a' });
    const b = await fx.client(server, { nodeId: 'b' });
    const unknown = await rejection(a.sendSignal('nobody', {}));
    expect(unknown.code).to.equal('unknown_target');
    await b.close();
    await waitFor(() => server.connectedMembers().length === 1, 'b to be gone');
    const absent = await rejection(a.sendSignal('b', {}));
    expect(absent.code).to.equal('target_unavailable');
    expect((await rejection(a.sendSignal('a', {}))).code).to.equal('invalid');
    expect(server.stats().signalsRelayed).to.equal(0);
  });

  it('relays nothing for a connection that has not joined, or for another cluster', async () => {
    const server = await fx.server();
    const b = await fx.client(server, { nodeId: 'b' });
    const received: unknown[] = [];
    b.on('signal', (from) => received.push(from));
    const socket = await fx.socket(server);
    const signal = { clusterId: CLUSTER, to: 'b', payload: {} };
    const early = (await request(socket, 'signal', signal)) as { error: { code: string } };
    expect(early.error.code).to.equal('not_joined');
    const bad = (await request(socket, 'join', joinPayload({ nodeId: 'r', kind: 'x' }))) as {
      error: { code: string };
    };
    expect(bad.error.code).to.equal('invalid');
    const stillEarly = (await request(socket, 'signal', signal)) as { error: { code: string } };
    expect(stillEarly.error.code).to.equal('not_joined');
    await request(socket, 'join', joinPayload({ nodeId: 'r' }));
    const other = (await request(socket, 'signal', { ...signal, clusterId: 'other' })) as {
      error: { code: string };
    };
    expect(other.error.code).to.equal('wrong_cluster');
    expect(await request(socket, 'signal', signal)).to.deep.equal({ ok: true });
    await waitFor(() => received.length === 1, 'the one valid signal');
    expect(received).to.deep.equal(['r']);
  });

  it('tells members when others come online and go offline', async () => {
    const server = await fx.server();
    const a = await fx.client(server, { nodeId: 'a' });
    const events: string[] = [];
    a.on('presence', (nodeId, online) => events.push(`${nodeId} ${online}`));
    const b = await fx.client(server, { nodeId: 'b' });
    expect([...b.online].sort()).to.deep.equal(['a', 'b']);
    await waitFor(() => events.length === 1, 'b online');
    expect(a.online.has('b')).to.equal(true);
    await b.close();
    await waitFor(() => events.length === 2, 'b offline');
    expect(events).to.deep.equal(['b true', 'b false']);
    expect(a.online.has('b')).to.equal(false);
    expect(server.registry().epoch).to.equal(2);
  });
});

describe('signaling server: limits and malformed input', () => {
  const fx = new Fixture();
  afterEach(() => fx.cleanup());

  it('refuses an oversized message with too_large and counts it', async () => {
    const server = await fx.server({ limits: { maxMessageBytes: 1_024 } });
    const a = await fx.client(server, { nodeId: 'a' });
    const b = await fx.client(server, { nodeId: 'b' });
    const received: unknown[] = [];
    b.on('signal', (_from, payload) => received.push(payload));
    const error = await rejection(a.sendSignal('b', { blob: 'x'.repeat(2_000) }));
    expect(error.code).to.equal('too_large');
    expect(server.stats().refused.too_large).to.equal(1);
    await a.sendSignal('b', { small: true });
    await waitFor(() => received.length === 1, 'the small signal');
    expect(received).to.deep.equal([{ small: true }]);
  });

  it('closes a connection sending a frame above maxFrameBytes and serves the others', async () => {
    const server = await fx.server({ limits: { maxMessageBytes: 1_024, maxFrameBytes: 8_192 } });
    const a = await fx.client(server, { nodeId: 'a' });
    const b = await fx.client(server, { nodeId: 'b' });
    const socket = await fx.socket(server);
    socket.emit('signal', { blob: 'x'.repeat(20_000) });
    await waitFor(() => !socket.connected, 'the oversized connection to be closed');
    const received: unknown[] = [];
    b.on('signal', (from) => received.push(from));
    await a.sendSignal('b', {});
    await waitFor(() => received.length === 1, 'a signal after the oversized frame');
  });

  it('refuses a signal flood beyond the per-member rate and counts it', async () => {
    // Frozen time: the bucket holds exactly `signalBurst` and refills only when told.
    const clock = new ManualClock();
    const server = await fx.server({ clock, limits: { signalsPerSecond: 10, signalBurst: 5 } });
    const a = await fx.client(server, { nodeId: 'a' });
    await fx.client(server, { nodeId: 'b' });
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => a.sendSignal('b', { i })),
    );
    expect(results.filter((result) => result.status === 'fulfilled')).to.have.length(5);
    const codes = results.flatMap((result) =>
      result.status === 'rejected' ? [(result.reason as SignalingError).code] : [],
    );
    expect(codes).to.deep.equal(['rate_limited', 'rate_limited', 'rate_limited']);
    expect(server.stats().refused.rate_limited).to.equal(3);
    clock.advance(100);
    await a.sendSignal('b', { refilled: true });
  });

  it('survives a flood of malformed messages and members are not affected', async () => {
    const server = await fx.server();
    const a = await fx.client(server, { nodeId: 'a' });
    const b = await fx.client(server, { nodeId: 'b' });
    const received: unknown[] = [];
    b.on('signal', (from) => received.push(from));
    const socket = await fx.socket(server);
    const notices: unknown[] = [];
    socket.on('protocol_error', (notice) => notices.push(notice));
    let deep: unknown = {};
    for (let i = 0; i < 50; i++) deep = { deep };
    const payloads: unknown[] = [
      null,
      42,
      'text',
      [],
      {},
      { clusterId: 5 },
      { clusterId: CLUSTER, to: 'b', payload: deep },
      { clusterId: CLUSTER, to: 'b', payload: new Uint8Array(16) },
      { clusterId: CLUSTER, to: 'b', payload: [1, 2] },
      { clusterId: CLUSTER, to: 'b', payload: {}, extra: 1 },
      joinPayload({ kind: 'cat' }),
      joinPayload({ protocolVersion: '1' }),
      joinPayload({ httpAddress: 'ftp://x' }),
      joinPayload({ token: 5 }),
    ];
    let acked = 0;
    const answers: Promise<unknown>[] = [];
    for (let round = 0; round < 5; round++) {
      for (const event of ['join', 'signal', 'leave', 'bogus', 'registry']) {
        for (const payload of payloads) {
          answers.push(request(socket, event, payload).then((reply) => reply));
          socket.emit(event, payload); // no acknowledgement: answered with a notice
          acked++;
        }
        socket.emit(event); // no payload at all
        socket.emit(event, 1, 2); // too many
      }
    }
    const replies = (await Promise.all(answers)) as { ok: boolean; error: { code: string } }[];
    expect(replies).to.have.length(acked);
    for (const reply of replies) {
      expect(reply.ok).to.equal(false);
      expect(['invalid', 'not_joined', 'rate_limited']).to.include(reply.error.code);
    }
    await waitFor(() => notices.length === acked + 50, 'a notice for each unacknowledged one');
    // Raw Engine.IO garbage: Socket.IO's parser refuses it and closes that connection.
    socket.io.engine.write('2{{{{not a packet');
    await waitFor(() => !socket.connected, 'the garbage connection to be closed');
    await a.sendSignal('b', {});
    await waitFor(() => received.length === 1, 'a signal after the flood');
    const { refused } = server.stats();
    expect(
      (refused.invalid ?? 0) + (refused.not_joined ?? 0) + (refused.rate_limited ?? 0),
    ).to.equal(2 * acked + 50);
    expect(server.registry().epoch).to.equal(2);
  });
});

describe('signaling server: persistence and restart', () => {
  const fx = new Fixture();
  afterEach(() => fx.cleanup());

  it('restores the registry from disk, and members re-join by themselves', async () => {
    const dataDir = await fx.dataDir();
    const first = await fx.server({ dataDir });
    const a = await fx.client(first, { nodeId: 'a' });
    const b = await fx.client(first, { nodeId: 'b', kind: 'browser' });
    await a.leave();
    const c = await fx.client(first, { nodeId: 'c' });
    const before = first.registry();
    expect(before.epoch).to.equal(4);
    await first.close();
    await waitFor(() => b.state === 'reconnecting' && c.state === 'reconnecting', 'reconnecting');
    const second = await fx.server({ dataDir, port: first.port });
    expect(second.registry()).to.deep.equal(before);
    await waitFor(
      () => second.connectedMembers().join() === 'b,c' && b.state === 'joined',
      'b and c to re-join',
    );
    expect(b.stats().rejoins).to.equal(1);
    expect(second.registry()).to.deep.equal(before);
    const received: unknown[] = [];
    c.on('signal', (from) => received.push(from));
    await b.sendSignal('c', {});
    await waitFor(() => received.length === 1, 'a signal after the restart');
  });

  it('marks down after the grace period the members that do not come back', async () => {
    const dataDir = await fx.dataDir();
    const first = await fx.server({ dataDir });
    const a = await fx.client(first, { nodeId: 'a' });
    await a.close();
    await first.close();
    const clock = new ManualClock();
    const second = await fx.server({ dataDir, clock, gracePeriodMs: 1_000 });
    expect(stateOf(second.registry(), 'a')).to.equal('up');
    clock.advance(1_000);
    await waitFor(() => second.registry().epoch === 2, 'a to be marked down');
    expect(stateOf(second.registry(), 'a')).to.equal('down');
  });

  it('refuses to start with settings that differ from the stored ones', async () => {
    const dataDir = await fx.dataDir();
    const first = await fx.server({ dataDir, settings: { clusterId: CLUSTER, partitions: 16 } });
    await first.close();
    let error: unknown;
    await fx
      .server({ dataDir, settings: { clusterId: CLUSTER, partitions: 32, replicationFactor: 3 } })
      .catch((e: unknown) => {
        error = e;
      });
    expect(error).to.be.instanceOf(RegistryFileError);
    expect((error as Error).message).to.contain(registryFilePath(dataDir));
    expect((error as Error).message).to.contain('partitions 32 (stored: 16)');
    // Settings not given are taken from the file.
    const again = await fx.server({ dataDir, settings: {} });
    expect(again.registry().settings.partitions).to.equal(16);
  });

  it('refuses to start on a corrupt registry file, naming the file', async () => {
    const dataDir = await fx.dataDir();
    await writeFile(join(dataDir, 'registry.json'), '{"format": "meshkv-registry", "vers');
    let error: unknown;
    await fx.server({ dataDir }).catch((e: unknown) => {
      error = e;
    });
    expect(error).to.be.instanceOf(RegistryFileError);
    expect((error as Error).message).to.contain(
      `registry file ${registryFilePath(dataDir)} is corrupt`,
    );
  });

  it('refuses a change it cannot persist with unavailable, changing nothing', async () => {
    const dataDir = await fx.dataDir();
    const clock = new ManualClock();
    const server = await fx.server({ dataDir, clock, gracePeriodMs: 1_000 });
    const a = await fx.client(server, { nodeId: 'a' });
    // A directory where the temporary file goes makes every registry write fail.
    const blocker = join(dataDir, 'registry.json.tmp');
    await mkdir(blocker);
    const refused = await rejection(fx.client(server, { nodeId: 'b' }));
    expect(refused.code).to.equal('unavailable');
    expect(server.stats().persistFailures).to.equal(1);
    await a.close();
    await waitFor(() => server.connectedMembers().length === 0, 'a to be gone');
    clock.advance(1_000);
    await waitFor(() => server.stats().persistFailures === 2, 'the failed down-marking');
    expect(server.registry().epoch).to.equal(1);
    expect(stateOf(server.registry(), 'a')).to.equal('up');
    // Writable again: the next grace period marks it down.
    await rmdir(blocker);
    clock.advance(1_000);
    await waitFor(() => stateOf(server.registry(), 'a') === 'down', 'a down on the retry');
    expect(server.registry().epoch).to.equal(2);
    await fx.client(server, { nodeId: 'b' });
  });

  it('keeps only the registry and its lock in the data dir, and removes the lock', async () => {
    const dataDir = await fx.dataDir();
    const server = await fx.server({ dataDir });
    await fx.client(server, { nodeId: 'a' });
    expect((await readdir(dataDir)).sort()).to.deep.equal(['registry.json', 'registry.lock.1']);
    await server.close();
    expect(await readdir(dataDir)).to.deep.equal(['registry.json']);
  });

  it('refuses a second server on the same data dir while the first lives', async () => {
    const dataDir = await fx.dataDir();
    const first = await fx.server({ dataDir });
    let error: unknown;
    await fx.server({ dataDir }).catch((e: unknown) => {
      error = e;
    });
    expect(error).to.be.instanceOf(RegistryFileError);
    expect((error as Error).message).to.equal(
      `data dir ${dataDir} is in use by another signaling server (its lock ${join(dataDir, 'registry.lock.1')} accepts connections); one server per data dir`,
    );
    await first.close();
    await fx.server({ dataDir });
  });

  it('is not blocked by a lock file naming a live process (pid 1, pid reuse)', async () => {
    const dataDir = await fx.dataDir();
    // Earlier versions wrote their pid there and refused to start while it was alive.
    for (const pid of [1, process.ppid, process.pid]) {
      await writeFile(join(dataDir, 'registry.lock'), `${pid}\n`);
      const server = await fx.server({ dataDir });
      expect(await readdir(dataDir)).to.not.include('registry.lock');
      await server.close();
    }
  });

  it('takes over the dead lock of a crashed server and removes it', async () => {
    const dataDir = await fx.dataDir();
    // A crashed server's lock: a socket file nobody listens on any more. Closing a socket
    // unlinks the name it listened on, so a second name keeps the dead file.
    const crashed = createServer();
    await new Promise<void>((resolve) => crashed.listen(join(dataDir, 'registry.lock.7'), resolve));
    await link(join(dataDir, 'registry.lock.7'), join(dataDir, 'registry.lock.3'));
    await new Promise((resolve) => crashed.close(resolve));
    await link(join(dataDir, 'registry.lock.3'), join(dataDir, 'registry.lock.7'));
    const server = await fx.server({ dataDir });
    expect((await readdir(dataDir)).sort()).to.deep.equal(['registry.json', 'registry.lock.8']);
    await server.close();
  });

  it('locks data dirs whose path is too long for a socket address, each its own', async () => {
    // Two dirs that differ only beyond the 108 bytes a socket address can hold.
    const parent = join(await fx.dataDir(), 'x'.repeat(120));
    const [one, two] = [join(parent, 'one'), join(parent, 'two')];
    const first = await fx.server({ dataDir: one });
    const second = await fx.server({ dataDir: two });
    let error: unknown;
    await fx.server({ dataDir: one }).catch((e: unknown) => {
      error = e;
    });
    expect((error as Error).message).to.contain(`data dir ${one} is in use`);
    await first.close();
    await second.close();
    expect(await readdir(one)).to.deep.equal(['registry.json']);
  });
});

describe('signaling server: HTTP', () => {
  const fx = new Fixture();
  afterEach(() => fx.cleanup());

  it('answers /health and /status', async () => {
    const server = await fx.server();
    await fx.client(server, { nodeId: 'a' });
    const health = await fetch(`${server.url}/health`);
    expect(health.status).to.equal(200);
    expect(await health.json()).to.deep.equal({ status: 'ok' });
    expect(health.headers.get('access-control-allow-origin')).to.equal('*');
    const status = (await (await fetch(`${server.url}/status`)).json()) as {
      settings: { clusterId: string };
      epoch: number;
      members: { nodeId: string; state: string; connected: boolean }[];
    };
    expect(status.settings.clusterId).to.equal(CLUSTER);
    expect(status.epoch).to.equal(1);
    expect(status.members).to.have.length(1);
    expect(status.members[0]).to.include({ nodeId: 'a', state: 'up', connected: true });
  });

  it('serves the static folder and nothing outside it', async () => {
    const staticDir = await fx.dataDir();
    await writeFile(join(staticDir, 'index.html'), '<h1>demo</h1>');
    await writeFile(join(staticDir, 'app.js'), 'export {};');
    const server = await fx.server({ staticDir });
    const index = await fetch(`${server.url}/`);
    expect(index.headers.get('content-type')).to.equal('text/html; charset=utf-8');
    expect(await index.text()).to.equal('<h1>demo</h1>');
    expect(await (await fetch(`${server.url}/app.js`)).text()).to.equal('export {};');
    expect((await fetch(`${server.url}/missing.js`)).status).to.equal(404);
    expect((await fetch(`${server.url}/%2e%2e/%2e%2e/etc/passwd`)).status).to.equal(404);
    expect((await fetch(`${server.url}/%E0%A4%A`)).status).to.equal(400);
    expect((await fetch(`${server.url}/health`, { method: 'POST' })).status).to.equal(405);
    expect(index.headers.get('cache-control')).to.equal('no-cache');
    expect(index.headers.get('x-content-type-options')).to.equal('nosniff');
    expect((await fetch(`${server.url}/${'a'.repeat(MAX_URL_BYTES)}`)).status).to.equal(414);
  });

  it('serves /demo-config.json (with the token) to loopback clients naming a loopback host', async () => {
    const server = await fx.server({ serveDemoConfig: true });
    const answer = await fetch(`${server.url}/demo-config.json`);
    expect(answer.status).to.equal(200);
    expect(answer.headers.get('cache-control')).to.equal('no-store');
    // No CORS header: a page of another origin cannot read the token.
    expect(answer.headers.get('access-control-allow-origin')).to.equal(null);
    expect(await answer.json()).to.deep.equal({
      clusterId: CLUSTER,
      signalingUrl: server.url,
      token: TOKEN,
    });
    // A rebinding name resolving to 127.0.0.1 sends its own Host: refused.
    const rebound = await new Promise<IncomingMessage>((resolve, reject) => {
      httpGet(
        `${server.url}/demo-config.json`,
        { headers: { host: `evil.example:${server.port}` } },
        resolve,
      ).on('error', reject);
    });
    rebound.resume();
    expect(rebound.statusCode).to.equal(403);
  });

  it('does not serve /demo-config.json unless asked to', async () => {
    const server = await fx.server();
    expect((await fetch(`${server.url}/demo-config.json`)).status).to.equal(404);
  });

  it('counts as loopback only a loopback peer address with a loopback Host', () => {
    const from = (remoteAddress: string, host: string) =>
      isLoopbackRequest({ socket: { remoteAddress }, headers: { host } } as IncomingMessage);
    expect(from('127.0.0.1', '127.0.0.1:7700')).to.equal(true);
    expect(from('::ffff:127.0.0.1', 'localhost:7700')).to.equal(true);
    expect(from('::1', '[::1]:7700')).to.equal(true);
    expect(from('127.0.0.1', 'localhost')).to.equal(true);
    expect(from('198.18.0.2', '127.0.0.1:7700')).to.equal(false);
    expect(from('::ffff:10.0.0.1', 'localhost:7700')).to.equal(false);
    expect(from('127.0.0.1', 'evil.example:7700')).to.equal(false);
    expect(from('127.0.0.1', '127.0.0.1.evil.example')).to.equal(false);
    expect(from('127.0.0.1', '')).to.equal(false);
  });
});

describe('signaling client: options', () => {
  it('refuses malformed ids before connecting', async () => {
    const error = await rejection(
      SignalingClient.connect({
        url: 'http://127.0.0.1:1',
        token: TOKEN,
        clusterId: 'bad id',
        kind: 'node',
      }),
    );
    expect(error.code).to.equal('invalid');
  });
});
