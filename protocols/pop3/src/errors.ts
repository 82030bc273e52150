// RFC 1939 section 3 (Basic Operation): every refusal is a "-ERR" status line, and RFC 2449
// section 8 / RFC 3206 add the bracketed response codes. As in h11's RemoteProtocolError, a peer
// error carries the reply the server sends, so handlers throw and the session turns the error
// into actions in one place.

const BRAND = Symbol.for('tlsproxy.error');

export type Pop3ErrorCode =
  | 'TLSPROXY_ERR_POP3_SYNTAX'
  | 'TLSPROXY_ERR_POP3_UNKNOWN_COMMAND'
  | 'TLSPROXY_ERR_POP3_NOT_ALLOWED'
  | 'TLSPROXY_ERR_POP3_LINE_TOO_LONG'
  | 'TLSPROXY_ERR_POP3_TOO_MANY_BAD'
  | 'TLSPROXY_ERR_POP3_TOO_MANY_COMMANDS'
  | 'TLSPROXY_ERR_POP3_TIMEOUT';

/** The client broke the protocol. `reply` is the complete "-ERR" line, CRLF included. */
export class Pop3ProtocolError extends Error {
  readonly code: Pop3ErrorCode;
  readonly reply: string;
  /** True when the connection must close after the reply. */
  readonly fatal: boolean;
  readonly [BRAND] = true;

  constructor(code: Pop3ErrorCode, reply: string, options: { fatal?: boolean } = {}) {
    super(reply.trimEnd());
    this.name = 'Pop3ProtocolError';
    this.code = code;
    this.reply = reply;
    this.fatal = options.fatal ?? false;
  }
}

export function isPop3ProtocolError(err: unknown): err is Pop3ProtocolError {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as Record<symbol, unknown>)[BRAND] === true &&
    typeof (err as { code?: unknown }).code === 'string' &&
    (err as { code: string }).code.startsWith('TLSPROXY_ERR_POP3_')
  );
}
