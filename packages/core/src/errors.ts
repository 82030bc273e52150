// One error class for the package, with a stable `code` (undici's pattern), on the shared base
// (@tlsproxy/dialect-kit's TlsproxyError, whose brand makes isTlsProxyError() work across
// duplicate installs where instanceof would not). Every code is listed in docs/errors.md.
import { TlsproxyError } from '@tlsproxy/dialect-kit';

export { isTlsProxyError } from '@tlsproxy/dialect-kit';

export type CoreErrorCode =
  | 'TLSPROXY_ERR_DIALECT_SHAPE'
  | 'TLSPROXY_ERR_DIALECT_OPTIONS'
  | 'TLSPROXY_ERR_DIALECT_NOT_FOUND'
  | 'TLSPROXY_ERR_LISTEN'
  | 'TLSPROXY_ERR_BACKEND'
  | 'TLSPROXY_ERR_CONFIG'
  | 'TLSPROXY_ERR_NO_CLIENT_ROLE';

export class CoreError extends TlsproxyError<CoreErrorCode> {
  constructor(code: CoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'CoreError';
  }
}
