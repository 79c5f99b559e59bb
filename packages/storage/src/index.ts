/**
 * @meshkv/storage: the durable storage contract and its isomorphic parts. The disk backend
 * is `@meshkv/storage/node`, the IndexedDB backend `@meshkv/storage/browser`.
 */
export { FORMAT_VERSION } from './codec.ts';
export type { Engine, EngineOp, EnginePage } from './engine.ts';
export { StorageError, type StorageErrorCode } from './errors.ts';
export { MemoryDisk, type MemoryDiskOptions } from './memory.ts';
export * from './storage.ts';
export { type EngineStorageOptions, openEngineStorage } from './store.ts';
