export type { RtcPeerConnectionClass } from './rtc-peer.ts';
export { MemorySignalRelay, type SignalChannel, type SignalData } from './signal-channel.ts';
export { SignalingChannel } from './signaling-channel.ts';
export * from './signaling-client.ts';
export * from './signaling-protocol.ts';
export * from './sim-network.ts';
export {
  DEFAULT_MAX_FRAME_BYTES,
  type LinkStats,
  type PeerId,
  type Transport,
  type TransportHandlers,
} from './transport.ts';
export {
  type LinkState,
  type MeshStats,
  WebRtcMesh,
  type WebRtcMeshOptions,
} from './webrtc-mesh.ts';
