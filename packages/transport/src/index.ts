export * from './signaling-client.ts';
export * from './signaling-protocol.ts';
export * from './sim-network.ts';
export type { LinkStats, PeerId, Transport, TransportHandlers } from './transport.ts';
