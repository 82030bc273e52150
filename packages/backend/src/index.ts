// @tlsproxy/backend: accept() for connections handed over by tlsproxy.

export type { BackendErrorCode } from './errors.js';
export { BackendError } from './errors.js';
export type {
  BackendFeatures,
  ClientIdentity,
  ControlOp,
  HandoffInfo,
  TlsInfo,
} from './protocol.js';
export {
  backendProtocol,
  PROTOCOL_NAME,
  PROTOCOL_VERSION,
  parseHandoffInfo,
  readBackendFeatures,
} from './protocol.js';
export type { Accepted, BackendServerEvents, ListenOptions } from './server.js';
export { BackendServer, Control, listen } from './server.js';
