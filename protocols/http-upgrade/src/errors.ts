// RFC 9110 section 15.5 (Client Error 4xx) and 15.6 (Server Error 5xx): a peer error is answered
// with a status code and the connection closes (RFC 9112 section 9.6: a server that refuses a
// request it cannot frame must not read further requests from that connection). As in h11's
// RemoteProtocolError, the error carries the status the server answers with, so the framer and
// the request checks throw, and the session turns the error into one response in one place.

import { DialectError, isErrorWithPrefix } from '@tlsproxy/dialect-kit';

export type HttpErrorCode =
  | 'TLSPROXY_ERR_HTTP_SYNTAX'
  | 'TLSPROXY_ERR_HTTP_OBS_FOLD'
  | 'TLSPROXY_ERR_HTTP_BAD_HOST'
  | 'TLSPROXY_ERR_HTTP_BAD_LENGTH'
  | 'TLSPROXY_ERR_HTTP_LENGTH_REQUIRED'
  | 'TLSPROXY_ERR_HTTP_BODY_TOO_LARGE'
  | 'TLSPROXY_ERR_HTTP_LINE_TOO_LONG'
  | 'TLSPROXY_ERR_HTTP_HEADER_TOO_LARGE'
  | 'TLSPROXY_ERR_HTTP_EXPECTATION'
  | 'TLSPROXY_ERR_HTTP_VERSION'
  | 'TLSPROXY_ERR_HTTP_UPGRADE_REQUIRED'
  | 'TLSPROXY_ERR_HTTP_UPGRADE_METHOD'
  | 'TLSPROXY_ERR_HTTP_TIMEOUT';

/** The client broke the protocol (or asked for something refused): answer `status`, close. */
export class HttpProtocolError extends DialectError<HttpErrorCode> {
  /** The status code of the response, e.g. 400. */
  readonly status: number;

  constructor(code: HttpErrorCode, status: number, message: string) {
    // The response is built from `status` in one place (responses.ts), so no reply octets here.
    super(code, message, { fatal: true });
    this.name = 'HttpProtocolError';
    this.status = status;
  }
}

export function isHttpProtocolError(err: unknown): err is HttpProtocolError {
  return isErrorWithPrefix(err, 'TLSPROXY_ERR_HTTP_');
}
