// @tlsproxy/engine-native: the TLS engine in C around the OpenSSL inside Node.

export type { NativeEngineOptions, NativeIdentity } from './engine.js';
export {
  DEFAULT_CIPHERS,
  defaultThreads,
  identityFromCertificate,
  NativeIdentities,
  NativeTlsEngine,
} from './engine.js';
export type { NativeEngineErrorCode } from './errors.js';
export { NativeEngineError } from './errors.js';
export { checkNative, mallocBytes, opensslVersion } from './probe.js';
