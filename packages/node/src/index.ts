export { ErrorCode, isMeshKvError, MeshKvError, type MeshKvErrorDetails } from './errors.ts';
