// One error class for the package, with a stable `code` (undici's pattern): the brand makes
// isTlsProxyError() work across duplicate installs where instanceof would not.
const BRAND = Symbol.for('tlsproxy.error');

export type CoreErrorCode =
  | 'TLSPROXY_ERR_DIALECT_SHAPE'
  | 'TLSPROXY_ERR_DIALECT_OPTIONS'
  | 'TLSPROXY_ERR_DIALECT_NOT_FOUND'
  | 'TLSPROXY_ERR_LISTEN'
  | 'TLSPROXY_ERR_BACKEND'
  | 'TLSPROXY_ERR_CONFIG';

export class CoreError extends Error {
  readonly code: CoreErrorCode;
  readonly [BRAND] = true;
  constructor(code: CoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CoreError';
    this.code = code;
  }
}

export function isTlsProxyError(err: unknown): err is Error & { code: string } {
  return (
    typeof err === 'object' && err !== null && (err as Record<symbol, unknown>)[BRAND] === true
  );
}
