// The WebRTC mesh across environments, through the real signaling server: Node↔Node
// (this process and a child), Chromium↔Node and Chromium↔Chromium (tabs of a puppeteer-
// driven Chromium); crashes (SIGKILL), closed tabs, restarts, and a signaling restart.
// Runs inside the private network namespace (`pnpm test` or scripts/netns-run.sh).
import { expect } from 'chai';
import { SignalingChannel } from '../src/signaling-channel.ts';
import { SignalingClient } from '../src/signaling-client.ts';
import { createNodeWebRtcMesh } from '../src/webrtc.node.ts';
import type { WebRtcMesh } from '../src/webrtc-mesh.ts';
import { Cluster, inPage, waitForAsync } from './cluster-harness.ts';
import { MeshProbe } from './mesh-helpers.ts';
import { waitFor } from './support.ts';

// Every mesh here runs with the default timing (peerTimeoutMs 10 s), bulk echoes included.
const SIZES = [1, 64 * 1024, 4 * 1024 * 1024, 1];
const SMALL_FRAMES = 10_000;

describe('WebRTC mesh across processes and Chromium (real signaling server)', function () {
  this.timeout(300_000);
  let cluster: Cluster;
  let client: SignalingClient;
  let mesh: WebRtcMesh;
  let local: MeshProbe;

  before(async () => {
    cluster = new Cluster();
    await cluster.startSignaling();
    client = await SignalingClient.connect({
      url: cluster.url,
      token: cluster.token,
      clusterId: cluster.clusterId,
      nodeId: 'node-local',
      kind: 'node',
      reconnectDelayMaxMs: 1_000,
    });
    mesh = createNodeWebRtcMesh({
      localId: client.nodeId,
      signal: new SignalingChannel(client),
    });
    local = new MeshProbe(mesh, false);
  });

  after(async () => {
    await mesh?.close();
    await client?.close();
    await cluster?.close();
  });

  /** Sends the sized frames and then 10k small ones to an echoing peer; checks the echoes. */
  async function checkEchoes(
    send: (sizes: readonly number[] | number) => Promise<void>,
    received: (question: 'matchesPatterns' | 'matchesIndexed', arg: unknown) => Promise<boolean>,
    reset: () => Promise<void>,
    stateOf: () => Promise<string>,
  ): Promise<void> {
    await send(SIZES);
    await waitForAsync(
      () => received('matchesPatterns', SIZES),
      'echoes of 1 B, 64 KiB, 4 MiB',
      undefined,
      stateOf,
    );
    await reset();
    await send(SMALL_FRAMES);
    await waitForAsync(
      () => received('matchesIndexed', SMALL_FRAMES),
      '10k echoes in order',
      undefined,
      stateOf,
    );
  }

  it('Node↔Node (two processes): echoes 1 B/64 KiB/4 MiB and 10k frames, in order', async () => {
    await cluster.startNodePeer('node-echo');
    await checkEchoes(
      async (what) => {
        if (typeof what === 'number') local.sendIndexed('node-echo', what);
        else local.sendPatterns('node-echo', what);
      },
      async (question, arg) =>
        question === 'matchesPatterns'
          ? local.matchesPatterns('node-echo', arg as number[])
          : local.matchesIndexed('node-echo', arg as number),
      async () => local.reset('node-echo'),
      async () => local.describe('node-echo'),
    );
    expect(mesh.stats('node-echo')).to.include({ framesDropped: 0, malformedReceived: 0 });
  });

  it('Chromium↔Node: echoes 1 B/64 KiB/4 MiB and 10k frames, in order', async () => {
    const page = await cluster.openPage('tab-1', false);
    await checkEchoes(
      async (what) => {
        if (typeof what === 'number') await inPage(page, 'sendIndexed', 'node-echo', what);
        else await inPage(page, 'sendPatterns', 'node-echo', what);
      },
      (question, arg) => inPage<boolean>(page, question, 'node-echo', arg),
      () => inPage(page, 'reset', 'node-echo'),
      () => inPage<string>(page, 'describe', 'node-echo'),
    );
  });

  it('Chromium↔Chromium (two tabs): echoes 1 B/64 KiB/4 MiB and 10k frames, in order', async () => {
    await cluster.openPage('tab-echo', true);
    const page = await cluster.openPage('tab-2', false);
    await checkEchoes(
      async (what) => {
        if (typeof what === 'number') await inPage(page, 'sendIndexed', 'tab-echo', what);
        else await inPage(page, 'sendPatterns', 'tab-echo', what);
      },
      (question, arg) => inPage<boolean>(page, question, 'tab-echo', arg),
      () => inPage(page, 'reset', 'tab-echo'),
      () => inPage<string>(page, 'describe', 'tab-echo'),
    );
  });

  it('a SIGKILLed Node peer is reported down by Node and Chromium; it comes back', async () => {
    const victim = await cluster.startNodePeer('node-victim');
    const page = await cluster.openPage('tab-3', false);
    local.sendPatterns('node-victim', [1]);
    await inPage(page, 'sendPatterns', 'node-victim', [1]);
    await waitFor(() => local.isUp('node-victim'), 'Node link up');
    await waitForAsync(() => inPage(page, 'isUp', 'node-victim'), 'Chromium link up');

    await victim.kill('SIGKILL');
    await waitFor(() => local.downs('node-victim') === 1, 'Node survivor reports down');
    await waitForAsync(
      async () => (await inPage<number>(page, 'downs', 'node-victim')) === 1,
      'Chromium survivor reports down',
    );

    await cluster.startNodePeer('node-victim');
    // Links still wanted (used within linkIdleTimeoutMs) are re-signalled by themselves.
    await waitFor(() => local.isUp('node-victim'), 'Node link back', 120_000);
    await waitForAsync(() => inPage(page, 'isUp', 'node-victim'), 'Chromium link back', 120_000);
    local.reset('node-victim');
    local.sendPatterns('node-victim', [100]);
    await waitFor(() => local.matchesPatterns('node-victim', [100]), 'echo over the new link');
  });

  it('a closed tab is reported down by Node and Chromium; a reopened one links', async () => {
    const survivor = await cluster.openPage('tab-4', false);
    let doomed = await cluster.openPage('tab-doomed', true);
    local.sendPatterns('tab-doomed', [1]);
    await inPage(survivor, 'sendPatterns', 'tab-doomed', [1]);
    await waitFor(() => local.matchesPatterns('tab-doomed', [1]), 'Node link used');
    await waitForAsync(
      () => inPage(survivor, 'matchesPatterns', 'tab-doomed', [1]),
      'tab link used',
    );

    await doomed.close();
    await waitFor(() => local.downs('tab-doomed') === 1, 'Node survivor reports down');
    await waitForAsync(
      async () => (await inPage<number>(survivor, 'downs', 'tab-doomed')) === 1,
      'Chromium survivor reports down',
    );

    doomed = await cluster.openPage('tab-doomed', true);
    await waitFor(() => local.isUp('tab-doomed'), 'Node link back', 120_000);
    local.reset('tab-doomed');
    local.sendPatterns('tab-doomed', [5]);
    await waitFor(() => local.matchesPatterns('tab-doomed', [5]), 'echo from the reopened tab');
  });

  it('survives a signaling restart: links keep working, the registry comes back, members rejoin', async () => {
    const page = await cluster.openPage('tab-5', false);
    await inPage(page, 'sendPatterns', 'node-echo', [1]);
    await waitForAsync(() => inPage(page, 'matchesPatterns', 'node-echo', [1]), 'link up');
    // The Node↔Node link may have closed as idle during the earlier tests: use it now.
    local.reset('node-echo');
    local.sendPatterns('node-echo', [1]);
    await waitFor(() => local.matchesPatterns('node-echo', [1]), 'Node↔Node link up');
    const membersBefore = client.registry.members.map((member) => member.nodeId);

    await cluster.stopSignaling();
    await waitFor(() => client.state === 'reconnecting', 'client notices the server is gone');
    // Established links do not need the server.
    local.reset('node-echo');
    local.sendIndexed('node-echo', 1_000);
    await waitFor(() => local.matchesIndexed('node-echo', 1_000), 'Node↔Node while down');
    await inPage(page, 'reset', 'node-echo');
    await inPage(page, 'sendIndexed', 'node-echo', 1_000);
    await waitForAsync(
      () => inPage(page, 'matchesIndexed', 'node-echo', 1_000),
      'Chromium↔Node while down',
    );

    await cluster.startSignaling();
    await waitFor(() => client.state === 'joined', 'client rejoined');
    // The registry came back from disk: every member known before is still known,
    // including tabs that closed and never came back.
    const membersAfter = client.registry.members.map((member) => member.nodeId);
    expect(membersAfter).to.include.members(membersBefore);
    expect(membersBefore).to.include('tab-1');
    // New links are negotiated through the restarted server.
    await cluster.startNodePeer('node-late');
    local.sendPatterns('node-late', [9]);
    await waitFor(() => local.matchesPatterns('node-late', [9]), 'new link after the restart');
  });
});
