// The page side of the cross-environment tests, bundled by esbuild into one script:
// `window.meshPeer.start(...)` joins signaling and runs a mesh with a MeshProbe that the
// test drives through page.evaluate.
import { SignalingChannel } from '../src/signaling-channel.ts';
import { SignalingClient } from '../src/signaling-client.ts';
import { WebRtcMesh } from '../src/webrtc-mesh.ts';
import { MeshProbe } from './mesh-helpers.ts';

export interface BrowserPeerArgs {
  readonly url: string;
  readonly token: string;
  readonly clusterId: string;
  readonly nodeId: string;
  readonly echo: boolean;
  /** The mesh's peerTimeoutMs; default if undefined. */
  readonly peerTimeoutMs?: number;
}

declare global {
  interface Window {
    meshPeer: { start(args: BrowserPeerArgs): Promise<void>; probe?: MeshProbe };
  }
}

window.meshPeer = {
  async start(args) {
    const { echo, peerTimeoutMs, ...join } = args;
    const client = await SignalingClient.connect({ ...join, kind: 'browser' });
    const mesh = new WebRtcMesh({
      localId: client.nodeId,
      signal: new SignalingChannel(client),
      ...(peerTimeoutMs === undefined ? {} : { peerTimeoutMs }),
    });
    this.probe = new MeshProbe(mesh, echo);
  },
};
