export * from './signaling-client.ts';
export * from './signaling-protocol.ts';
export type { LinkStats, PeerId, Transport, TransportHandlers } from './transport.ts';
