// `meshkv node` as a real process (cli.node.ts → peer.node.ts) against the real signaling
// server (its CLI), on a temporary data directory: it joins, leads every partition, refuses
// a second process on its directory, serves its HTTP API, stops cleanly on SIGTERM, and a
// restart rejoins under its id with its Raft state and data. Starts a WebRTC mesh: runs inside the private network
// namespace (`pnpm test` or scripts/netns-run.sh). Every process is stopped by pid.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '@meshkv/transport/test-support';
import { expect } from 'chai';
import {
  DEADLINE_MS,
  httpUrlOf,
  joinedAs,
  leaders,
  type Proc,
  ProcessSet,
  spawnPeer,
  startSignaling,
} from './support/processes.ts';

const PARTITIONS = 8;
const TOKEN = 'peer-test-token';

function httpUrl(output: string): string {
  const url = httpUrlOf(output);
  if (url === null) throw new Error(`no HTTP API address in the output: ${output}`);
  return url;
}

describe('meshkv node: the Node peer process', function () {
  this.timeout(5 * DEADLINE_MS);
  let dir: string;
  let signalingUrl: string;
  const processes = new ProcessSet();

  const startNode = (dataDir: string): Proc =>
    processes.track(spawnPeer({ signalingUrl, token: TOKEN, dataDir }));

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshkv-peer-'));
    const signaling = await startSignaling(
      { dataDir: join(dir, 'signaling'), token: TOKEN, partitions: PARTITIONS },
      processes.track,
    );
    signalingUrl = signaling.url;
  });

  after(async () => {
    await processes.killAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('joins and leads every partition, holds its data dir, stops on SIGTERM and rejoins with its state and data', async () => {
    const dataDir = join(dir, 'node-1');
    const first = startNode(dataDir);
    await waitFor(
      () => leaders(first.stdout).size === PARTITIONS || first.exitCode !== undefined,
      `the node to lead all ${PARTITIONS} partitions`,
      DEADLINE_MS,
      () => first.state(),
    );
    const joined = joinedAs(first.stdout);
    expect(joined, first.stdout).to.not.equal(null);
    expect(joined!.how).to.equal('new member');
    const before = leaders(first.stdout);
    for (const { leader } of before.values()) expect(leader).to.equal(joined!.id);
    const put = await fetch(`${httpUrl(first.stdout)}/kv/greeting`, {
      method: 'PUT',
      body: 'hello from before the restart',
    });
    expect(put.status, await put.clone().text()).to.equal(200);

    // A second process on the same directory is refused while the first lives.
    const second = startNode(dataDir);
    expect(await second.exited, JSON.stringify(second.state())).to.equal(1);
    expect(second.stderr).to.match(/in use by another live process/);
    expect(joinedAs(second.stdout)).to.equal(null);

    expect(await first.stop('SIGTERM'), JSON.stringify(first.state())).to.equal(0);
    expect(first.stdout).to.match(/^stopped$/m);

    const restarted = startNode(dataDir);
    await waitFor(
      () => leaders(restarted.stdout).size === PARTITIONS || restarted.exitCode !== undefined,
      `the restarted node to lead all ${PARTITIONS} partitions`,
      DEADLINE_MS,
      () => restarted.state(),
    );
    expect(joinedAs(restarted.stdout)).to.deep.equal({ id: joined!.id, how: 'rejoined' });
    // Its Raft state came back from the store: every group campaigned from its stored term
    // (a fresh store would start each partition again at the bootstrap's term).
    for (const [partition, { leader, term }] of leaders(restarted.stdout)) {
      expect(leader).to.equal(joined!.id);
      expect(term, `partition ${partition}`).to.be.greaterThan(before.get(partition)!.term);
    }
    const get = await fetch(`${httpUrl(restarted.stdout)}/kv/greeting`);
    expect(get.status).to.equal(200);
    expect(await get.text()).to.equal('hello from before the restart');
    expect(await restarted.stop('SIGINT'), JSON.stringify(restarted.state())).to.equal(0);
  });

  it('refuses an identity the registry does not accept, and sets a store without identity aside', async () => {
    const dataDir = join(dir, 'node-2');
    const first = startNode(dataDir);
    await waitFor(
      () => joinedAs(first.stdout) !== null || first.exitCode !== undefined,
      'the node to join',
      DEADLINE_MS,
      () => first.state(),
    );
    const id = joinedAs(first.stdout)!.id;
    expect(await first.stop('SIGTERM'), JSON.stringify(first.state())).to.equal(0);

    // wrong_secret: the peer exits with a message and leaves its data alone.
    const identityPath = join(dataDir, 'identity.json');
    const identity = JSON.parse(readFileSync(identityPath, 'utf8'));
    writeFileSync(identityPath, JSON.stringify({ ...identity, memberSecret: 'not-the-secret' }));
    const refused = startNode(dataDir);
    expect(await refused.exited, JSON.stringify(refused.state())).to.equal(1);
    expect(refused.stderr).to.match(/does not accept .* identity/);
    expect(readdirSync(dataDir).filter((name) => name.startsWith('store.set-aside'))).to.deep.equal(
      [],
    );

    // A store whose identity is gone may not vote under any id: a new member, store set aside.
    rmSync(identityPath);
    const fresh = startNode(dataDir);
    await waitFor(
      () => joinedAs(fresh.stdout) !== null || fresh.exitCode !== undefined,
      'the node to join again',
      DEADLINE_MS,
      () => fresh.state(),
    );
    const rejoined = joinedAs(fresh.stdout)!;
    expect(rejoined.how).to.equal('new member');
    expect(rejoined.id).to.not.equal(id);
    expect(fresh.stdout).to.match(/storage set aside .* \(it has no identity file\)/);
    expect(
      readdirSync(dataDir).filter((name) => name.startsWith('store.set-aside')),
    ).to.have.length(1);
    expect(JSON.parse(readFileSync(identityPath, 'utf8')).nodeId).to.equal(rejoined.id);
    expect(await fresh.stop('SIGTERM'), JSON.stringify(fresh.state())).to.equal(0);
  });
});
