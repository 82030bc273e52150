// RFC 9051 section 7.1 (Status Responses): a peer error is answered with BAD (or BYE when the
// connection cannot go on). As in h11's RemoteProtocolError, the error carries the reply the
// server sends, so handlers throw and the session turns the error into actions in one place.

const BRAND = Symbol.for('tlsproxy.error');

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

/** The client broke the protocol. `reply` is the complete response, CRLF included. */
export class ImapProtocolError extends Error {
  readonly code: ImapErrorCode;
  readonly reply: string;
  /** True when the connection must close after the reply (the stream cannot be resynchronised). */
  readonly fatal: boolean;
  readonly [BRAND] = true;

  constructor(code: ImapErrorCode, reply: string, options: { fatal?: boolean } = {}) {
    super(reply.trimEnd());
    this.name = 'ImapProtocolError';
    this.code = code;
    this.reply = reply;
    this.fatal = options.fatal ?? false;
  }
}

export function isImapProtocolError(err: unknown): err is ImapProtocolError {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as Record<symbol, unknown>)[BRAND] === true &&
    typeof (err as { code?: unknown }).code === 'string' &&
    (err as { code: string }).code.startsWith('TLSPROXY_ERR_IMAP_')
  );
}
