// RFC 9110 section 15.5 (Client Error 4xx) and 15.6 (Server Error 5xx): a peer error is answered
// with a status code and the connection closes (RFC 9112 section 9.6: a server that refuses a
// request it cannot frame must not read further requests from that connection). As in h11's
// RemoteProtocolError, the error carries the status the server answers with, so the framer and
// the request checks throw, and the session turns the error into one response in one place.

const BRAND = Symbol.for('tlsproxy.error');

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
export class HttpProtocolError extends Error {
  readonly code: HttpErrorCode;
  /** The status code of the response, e.g. 400. */
  readonly status: number;
  readonly [BRAND] = true;

  constructor(code: HttpErrorCode, status: number, message: string) {
    super(message);
    this.name = 'HttpProtocolError';
    this.code = code;
    this.status = status;
  }
}

export function isHttpProtocolError(err: unknown): err is HttpProtocolError {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as Record<symbol, unknown>)[BRAND] === true &&
    typeof (err as { code?: unknown }).code === 'string' &&
    (err as { code: string }).code.startsWith('TLSPROXY_ERR_HTTP_')
  );
}
