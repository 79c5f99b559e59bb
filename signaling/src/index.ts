export { type Clock, systemClock } from './clock.ts';
export { DEFAULT_RETIREMENT_PERIOD_MS } from './registry.ts';
export { RegistryFileError, registryFilePath } from './registry-file.ts';
export {
  DEFAULT_GRACE_PERIOD_MS,
  DEFAULT_JOIN_TIMEOUT_MS,
  DEFAULT_LIMITS,
  DEFAULT_PING_INTERVAL_MS,
  DEFAULT_PING_TIMEOUT_MS,
  DEFAULT_PROBE_TIMEOUT_MS,
  type SignalingLimits,
  SignalingServer,
  type SignalingServerOptions,
  type SignalingServerStats,
} from './server.ts';
