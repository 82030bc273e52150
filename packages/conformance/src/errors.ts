// One error class for the package with a stable `code` (undici's pattern), on the kit's
// TlsproxyError: its brand makes isTlsProxyError() recognise it across duplicate installs.
import { TlsproxyError } from '@tlsproxy/dialect-kit';

export type ConformanceErrorCode =
  | 'TLSPROXY_ERR_CONFORMANCE_TRANSCRIPT'
  | 'TLSPROXY_ERR_CONFORMANCE_USAGE'
  | 'TLSPROXY_ERR_CONFORMANCE_RECORD'
  | 'TLSPROXY_ERR_CONFORMANCE_ENGINE';

export class ConformanceError extends TlsproxyError<ConformanceErrorCode> {
  constructor(code: ConformanceErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'ConformanceError';
  }
}
