// The signaling client in Chromium against the server that signaling/wtr-plugin.mjs runs.
import { executeServerCommand } from '@web/test-runner-commands';
import { expect } from 'chai';
import { SignalingClient, SignalingError } from '../src/signaling-client.ts';
import { waitFor } from './support.ts';

interface SignalingServerInfo {
  readonly url: string;
  readonly token: string;
  readonly clusterId: string;
}

/** Unique per page load: the server is shared by the whole browser run. */
const RUN = Math.random().toString(36).slice(2, 10);

describe('signaling client in a browser', () => {
  let server: SignalingServerInfo;
  const clients: SignalingClient[] = [];

  before(async () => {
    server = await executeServerCommand<SignalingServerInfo, undefined>('meshkv-signaling');
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) await client.close();
  });

  async function connect(nodeId: string, memberSecret?: string): Promise<SignalingClient> {
    const client = await SignalingClient.connect({
      url: server.url,
      token: server.token,
      clusterId: server.clusterId,
      nodeId: `${nodeId}-${RUN}`,
      kind: 'browser',
      ...(memberSecret === undefined ? {} : { memberSecret }),
    });
    clients.push(client);
    return client;
  }

  it('joins, relays a signal between two members and leaves', async () => {
    const a = await connect('a');
    const b = await connect('b');
    expect(b.registry.members.map((member) => member.nodeId)).to.include(a.nodeId);
    const received: unknown[] = [];
    a.on('signal', (from, payload) => received.push({ from, payload }));
    await b.sendSignal(a.nodeId, { type: 'offer', sdp: 'v=0' });
    await waitFor(() => received.length === 1, 'the signal');
    expect(received).to.deep.equal([{ from: b.nodeId, payload: { type: 'offer', sdp: 'v=0' } }]);
    const epochs: number[] = [];
    a.on('registry', (registry) => epochs.push(registry.epoch));
    await b.leave();
    await waitFor(() => epochs.length === 1, 'the push of b leaving');
    const leaver = a.registry.members.find((member) => member.nodeId === b.nodeId);
    expect(leaver?.state).to.equal('left');
  });

  it('re-joins as the same node only with its member secret', async () => {
    const a = await connect('secret');
    const { memberSecret } = a;
    await a.close();
    let error: unknown;
    try {
      await connect('secret');
    } catch (caught) {
      error = caught;
    }
    expect(error).to.be.instanceOf(SignalingError);
    expect((error as SignalingError).code).to.equal('wrong_secret');
    const again = await connect('secret', memberSecret);
    expect(again.memberSecret).to.equal(memberSecret);
  });

  it('refuses a wrong token with unauthorized', async () => {
    let error: unknown;
    try {
      await SignalingClient.connect({
        url: server.url,
        token: 'wrong',
        clusterId: server.clusterId,
        kind: 'browser',
      });
    } catch (caught) {
      error = caught;
    }
    expect(error).to.be.instanceOf(SignalingError);
    expect((error as SignalingError).code).to.equal('unauthorized');
  });
});
