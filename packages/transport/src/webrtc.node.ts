/**
 * Node entry of the WebRTC mesh (`@meshkv/transport/node`): node-datachannel 0.33.4's
 * standard RTCPeerConnection (libdatachannel), injected into the isomorphic mesh.
 *
 * Why node-datachannel and not @roamhq/wrtc: both install here (node-datachannel ships its
 * binary as an npm package), but @roamhq/wrtc moves ~9k small messages/s, segfaults on
 * process exit, silently closes a channel on a message above 256 KiB and never fires
 * `bufferedamountlow`; node-datachannel exits cleanly (figures in bench/README.md).
 */
import { RTCPeerConnection } from 'node-datachannel/polyfill';
import type { RtcPeerConnectionClass } from './rtc-peer.ts';
import { WebRtcMesh, type WebRtcMeshOptions } from './webrtc-mesh.ts';

export const nodeRTCPeerConnection = RTCPeerConnection as unknown as RtcPeerConnectionClass;

/** A mesh whose links use node-datachannel. */
export function createNodeWebRtcMesh(options: WebRtcMeshOptions): WebRtcMesh {
  return new WebRtcMesh({ RTCPeerConnection: nodeRTCPeerConnection, ...options });
}
