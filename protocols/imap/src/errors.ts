// RFC 9051 section 7.1 (Status Responses): a peer error is answered with BAD (or BYE when the
// connection cannot go on). As in h11's RemoteProtocolError, the error carries the reply the
// server sends, so handlers throw and the session turns the error into actions in one place.

import { DialectError, isErrorWithPrefix } from '@tlsproxy/dialect-kit';

export type ImapErrorCode =
  | 'TLSPROXY_ERR_IMAP_SYNTAX'
  | 'TLSPROXY_ERR_IMAP_BAD_TAG'
  | 'TLSPROXY_ERR_IMAP_UNKNOWN_COMMAND'
  | 'TLSPROXY_ERR_IMAP_NOT_ALLOWED'
  | 'TLSPROXY_ERR_IMAP_LINE_TOO_LONG'
  | 'TLSPROXY_ERR_IMAP_LITERAL_TOO_BIG'
  | 'TLSPROXY_ERR_IMAP_TOO_MANY_BAD'
  | 'TLSPROXY_ERR_IMAP_TOO_MANY_COMMANDS'
  | 'TLSPROXY_ERR_IMAP_TIMEOUT';

/**
 * The client broke the protocol. `replyText` is the complete reply, CRLF included (`reply` holds
 * its octets); `fatal`: the connection closes after the reply.
 */
export class ImapProtocolError extends DialectError<ImapErrorCode> {
  constructor(code: ImapErrorCode, reply: string, options: { fatal?: boolean } = {}) {
    super(code, reply.trimEnd(), { reply, fatal: options.fatal ?? false });
    this.name = 'ImapProtocolError';
  }
}

export function isImapProtocolError(err: unknown): err is ImapProtocolError {
  return isErrorWithPrefix(err, 'TLSPROXY_ERR_IMAP_');
}
