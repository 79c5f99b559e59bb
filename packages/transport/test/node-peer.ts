// A Node mesh peer in its own process, for the cross-environment tests and the benchmark:
//   node --import tsx node-peer.ts '{"url":…,"token":…,"clusterId":…,"nodeId":…}'
// It joins signaling, echoes every frame back to its sender, and prints one JSON line per
// event on stdout: {"event":"ready","memberSecret":…}, {"event":"up","peer":…},
// {"event":"down",…}.
// SIGTERM closes it cleanly; tests also SIGKILL it to play a crash.
import { SignalingChannel } from '../src/signaling-channel.ts';
import { SignalingClient } from '../src/signaling-client.ts';
import { createNodeWebRtcMesh } from '../src/webrtc.node.ts';

export interface PeerArgs {
  readonly url: string;
  readonly token: string;
  readonly clusterId: string;
  readonly nodeId: string;
  /** The secret of `nodeId`'s first join, to run it again after a kill. */
  readonly memberSecret?: string;
}

const args = JSON.parse(process.argv[2] ?? '{}') as PeerArgs;
const print = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);

const client = await SignalingClient.connect({ ...args, kind: 'node' });
const mesh = createNodeWebRtcMesh({ localId: client.nodeId, signal: new SignalingChannel(client) });
mesh.on('frame', (from, frame) => mesh.send(from, frame));
mesh.on('peerUp', (peer) => print({ event: 'up', peer }));
mesh.on('peerDown', (peer, reason) => print({ event: 'down', peer, reason }));
process.once('SIGTERM', () => {
  void Promise.all([mesh.close(), client.close()]).then(() => process.exit(0));
});
print({ event: 'ready', memberSecret: client.memberSecret });
