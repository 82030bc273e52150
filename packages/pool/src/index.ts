// @tlsproxy/pool: the TLS engine (the "TLS Pool" role) on node:tls.

export type { ClientIdentity } from './client-identity.js';
export { clientIdentity, identityFromCertificate } from './client-identity.js';
export type { DaemonOptions } from './daemon.js';
export { type DaemonEngine, PoolDaemon } from './daemon.js';
export type {
  ClientCertPolicy,
  ConnectInfo,
  ConnectRequest,
  ConnectResult,
  ControlOp,
  EngineOptions,
  HandshakeRequest,
  HandshakeResult,
  NegotiatedInfo,
  ServerIdentity,
  SessionEndReason,
  TlsEngineApi,
} from './engine.js';
export { checkCa, connectRequestProblem, TlsEngine } from './engine.js';
export type { PoolErrorCode, VerifyReason } from './errors.js';
export { isResourceError, PoolError, VERIFY_REASONS } from './errors.js';
export type { ContextOptions, Identity, IdentityConfig } from './identities.js';
export { certificateNames, IdentityStore, TLS12_CIPHERS } from './identities.js';
export { poolProtocol } from './protocol.js';
export { randomKey } from './random.js';
export type { RemoteOptions } from './remote.js';
export { RemoteTlsEngine } from './remote.js';
