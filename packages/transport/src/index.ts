export type { LinkStats, PeerId, Transport, TransportHandlers } from './transport.ts';
