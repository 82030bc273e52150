const BRAND = Symbol.for('tlsproxy.error');

export type PoolErrorCode =
  | 'TLSPROXY_ERR_POOL_CONFIG'
  | 'TLSPROXY_ERR_POOL_HANDSHAKE'
  | 'TLSPROXY_ERR_POOL_TIMEOUT'
  | 'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED'
  | 'TLSPROXY_ERR_POOL_CLIENT_CERT'
  | 'TLSPROXY_ERR_POOL_UNKNOWN_KEY'
  | 'TLSPROXY_ERR_POOL_CONTROL'
  | 'TLSPROXY_ERR_POOL_TLS13_RENEGOTIATE';

export class PoolError extends Error {
  readonly code: PoolErrorCode;
  readonly [BRAND] = true;
  constructor(code: PoolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PoolError';
    this.code = code;
  }
}
