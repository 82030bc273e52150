// One error class for the package on the shared base (every code is listed in docs/errors.md).
import { TlsproxyError } from '@tlsproxy/dialect-kit';

export type BackendErrorCode =
  | 'TLSPROXY_ERR_BACKEND_CLOSED'
  | 'TLSPROXY_ERR_BACKEND_PEER'
  | 'TLSPROXY_ERR_BACKEND_CONTROL'
  | 'TLSPROXY_ERR_BACKEND_SYSTEMD';

export class BackendError extends TlsproxyError<BackendErrorCode> {
  constructor(code: BackendErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'BackendError';
  }
}
