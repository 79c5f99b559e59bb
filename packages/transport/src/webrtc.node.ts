/**
 * Node entry of the WebRTC mesh (`@meshkv/transport/node`): node-datachannel 0.33.4's
 * standard RTCPeerConnection (libdatachannel), injected into the isomorphic mesh.
 *
 * Why node-datachannel and not @roamhq/wrtc: both install here (node-datachannel ships its
 * binary as an npm package), but @roamhq/wrtc moves ~9k small messages/s, segfaults on
 * process exit, silently closes a channel on a message above 256 KiB and never fires
 * `bufferedamountlow`; node-datachannel exits cleanly (figures in bench/README.md).
 *
 * Why it makes the offer to browsers (`offerRank` 1): answering a Firefox ESR 140 offer
 * (Firefox the controlling ICE agent, libjuice the controlled one), most connections never
 * came up. In the network namespace, 12 connections each way between one Firefox page and
 * one node-datachannel peer: with node-datachannel offering, all open within 11-58 ms; with
 * Firefox offering, 9 of 12 fail (Firefox stays in ICE `checking` while libjuice reports
 * `connected`) and 3 open after 7 s, past the mesh's connect timeout; the same with ICE bound
 * to 198.18.0.1 or unbound, and with Firefox's default prefs (mDNS host names, no loopback
 * candidates: 5 of 5 open within 90 ms offering, 0 of 5 answering). Chromium opens either
 * way (12-72 ms offering, ~190 ms answering).
 * In a cluster, the smaller id offering left a Firefox node's links to the Node peers with
 * larger ids failing attempt after attempt.
 */
import { RTCPeerConnection } from 'node-datachannel/polyfill';
import type { RtcPeerConnectionClass } from './rtc-peer.ts';
import { WebRtcMesh, type WebRtcMeshOptions } from './webrtc-mesh.ts';

export const nodeRTCPeerConnection = RTCPeerConnection as unknown as RtcPeerConnectionClass;

/** A mesh whose links use node-datachannel; it offers to every browser (see above). */
export function createNodeWebRtcMesh(options: WebRtcMeshOptions): WebRtcMesh {
  return new WebRtcMesh({ RTCPeerConnection: nodeRTCPeerConnection, offerRank: 1, ...options });
}
