const BRAND = Symbol.for('tlsproxy.error');

export type BackendErrorCode =
  | 'TLSPROXY_ERR_BACKEND_CLOSED'
  | 'TLSPROXY_ERR_BACKEND_PEER'
  | 'TLSPROXY_ERR_BACKEND_CONTROL'
  | 'TLSPROXY_ERR_BACKEND_SYSTEMD';

export class BackendError extends Error {
  readonly code: BackendErrorCode;
  readonly [BRAND] = true;
  constructor(code: BackendErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BackendError';
    this.code = code;
  }
}
