// Errors of this package that are not the engine contract's own: handshake and control errors
// are PoolErrors with the same codes as the node:tls engine, so callers need not care which
// engine runs.
const BRAND = Symbol.for('tlsproxy.error');

export type NativeEngineErrorCode =
  | 'TLSPROXY_ERR_NATIVE_LOAD'
  | 'TLSPROXY_ERR_NATIVE_OPENSSL'
  | 'TLSPROXY_ERR_NATIVE_BUSY';

export class NativeEngineError extends Error {
  readonly code: NativeEngineErrorCode;
  readonly [BRAND] = true;
  constructor(code: NativeEngineErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NativeEngineError';
    this.code = code;
  }
}
