// RFC 5321 section 4.2 (SMTP Replies) and RFC 3463 (Enhanced Mail System Status Codes): a peer
// error is answered with a 4yz/5yz reply. As in h11's RemoteProtocolError, the error carries the
// reply the server sends, so handlers throw and the session turns errors into actions in one place.

import { DialectError, isErrorWithPrefix } from '@tlsproxy/dialect-kit';

export type SmtpErrorCode =
  | 'TLSPROXY_ERR_SMTP_SYNTAX'
  | 'TLSPROXY_ERR_SMTP_UNKNOWN_COMMAND'
  | 'TLSPROXY_ERR_SMTP_TLS_REQUIRED'
  | 'TLSPROXY_ERR_SMTP_BAD_SEQUENCE'
  | 'TLSPROXY_ERR_SMTP_LINE_TOO_LONG'
  | 'TLSPROXY_ERR_SMTP_BARE_LF'
  | 'TLSPROXY_ERR_SMTP_HTTP'
  | 'TLSPROXY_ERR_SMTP_EARLY_TALKER'
  | 'TLSPROXY_ERR_SMTP_TOO_MANY_BAD'
  | 'TLSPROXY_ERR_SMTP_TOO_MANY_COMMANDS'
  | 'TLSPROXY_ERR_SMTP_TIMEOUT';

/**
 * The client broke the protocol. `replyText` is the complete reply, CRLF included (`reply` holds
 * its octets); `fatal`: the connection closes after the reply.
 */
export class SmtpProtocolError extends DialectError<SmtpErrorCode> {
  constructor(code: SmtpErrorCode, reply: string, options: { fatal?: boolean } = {}) {
    super(code, reply.trimEnd(), { reply, fatal: options.fatal ?? false });
    this.name = 'SmtpProtocolError';
  }
}

export function isSmtpProtocolError(err: unknown): err is SmtpProtocolError {
  return isErrorWithPrefix(err, 'TLSPROXY_ERR_SMTP_');
}
