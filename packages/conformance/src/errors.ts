// One error class for the package with a stable `code` (undici's pattern); the shared brand makes
// core's isTlsProxyError() recognise it across duplicate installs.
const BRAND = Symbol.for('tlsproxy.error');

export type ConformanceErrorCode =
  | 'TLSPROXY_ERR_CONFORMANCE_TRANSCRIPT'
  | 'TLSPROXY_ERR_CONFORMANCE_USAGE'
  | 'TLSPROXY_ERR_CONFORMANCE_RECORD'
  | 'TLSPROXY_ERR_CONFORMANCE_ENGINE';

export class ConformanceError extends Error {
  readonly code: ConformanceErrorCode;
  readonly [BRAND] = true;
  constructor(code: ConformanceErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ConformanceError';
    this.code = code;
  }
}
