// RFC 1939 section 3 (Basic Operation): every refusal is a "-ERR" status line, and RFC 2449
// section 8 / RFC 3206 add the bracketed response codes. As in h11's RemoteProtocolError, a peer
// error carries the reply the server sends, so handlers throw and the session turns the error
// into actions in one place.

import { DialectError, isErrorWithPrefix } from '@tlsproxy/dialect-kit';

export type Pop3ErrorCode =
  | 'TLSPROXY_ERR_POP3_SYNTAX'
  | 'TLSPROXY_ERR_POP3_UNKNOWN_COMMAND'
  | 'TLSPROXY_ERR_POP3_NOT_ALLOWED'
  | 'TLSPROXY_ERR_POP3_LINE_TOO_LONG'
  | 'TLSPROXY_ERR_POP3_TOO_MANY_BAD'
  | 'TLSPROXY_ERR_POP3_TOO_MANY_COMMANDS'
  | 'TLSPROXY_ERR_POP3_TIMEOUT';

/**
 * The client broke the protocol. `replyText` is the complete reply, CRLF included (`reply` holds
 * its octets); `fatal`: the connection closes after the reply.
 */
export class Pop3ProtocolError extends DialectError<Pop3ErrorCode> {
  constructor(code: Pop3ErrorCode, reply: string, options: { fatal?: boolean } = {}) {
    super(code, reply.trimEnd(), { reply, fatal: options.fatal ?? false });
    this.name = 'Pop3ProtocolError';
  }
}

export function isPop3ProtocolError(err: unknown): err is Pop3ProtocolError {
  return isErrorWithPrefix(err, 'TLSPROXY_ERR_POP3_');
}
