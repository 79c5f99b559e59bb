// `meshkv status`'s text (formatStatus) from a gathered status document.
import { expect } from 'chai';
import { type ClusterStatus, formatStatus } from '../src/client.node.ts';
import { idleNodeStatus } from './support/node-status.ts';

const nodeStatus = (nodeId: string, peers: string[], unreachable: string[]) =>
  idleNodeStatus({ nodeId, epoch: 3, peers, unreachable });

describe('meshkv status: the members table', () => {
  it('names the members a peer has no link to in its PEERS column', () => {
    const doc: ClusterStatus = {
      members: ['a', 'b', 'c'].map((nodeId) => ({ nodeId, kind: 'node', state: 'up' })),
      epoch: 3,
      peers: [
        { endpoint: 'http://a', status: nodeStatus('a', ['b'], ['c']) },
        { endpoint: 'http://b', status: nodeStatus('b', ['a', 'c'], []) },
        { endpoint: 'http://c', error: 'connection refused' },
      ],
    };
    const lines = formatStatus(doc).split('\n');
    expect(lines.find((line) => line.startsWith('a '))).to.match(/ 1 \(no link to c\)$/);
    expect(lines.find((line) => line.startsWith('b '))).to.match(/ 2$/);
    expect(lines.find((line) => line.startsWith('c '))).to.match(/ -$/);
  });
});
