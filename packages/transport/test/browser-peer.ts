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
  /** The secret of `nodeId`'s first join, to open it again in a new tab. */
  readonly memberSecret?: string;
}

declare global {
  interface Window {
    /** `start` resolves with the member secret of the join. */
    meshPeer: { start(args: BrowserPeerArgs): Promise<string>; probe?: MeshProbe };
  }
}

window.meshPeer = {
  async start(args) {
    const { echo, ...join } = args;
    const client = await SignalingClient.connect({ ...join, kind: 'browser' });
    const mesh = new WebRtcMesh({ localId: client.nodeId, signal: new SignalingChannel(client) });
    this.probe = new MeshProbe(mesh, echo);
    return client.memberSecret;
  },
};
