// RFC 4511 section 4.1.1 and 4.4.1: a client that breaks the BER or LDAP rules gets the Notice
// of Disconnection (protocolError) and the session ends. As in h11's RemoteProtocolError, the
// error carries the octets the server sends, so handlers throw and the session turns the error
// into actions in one place.

const BRAND = Symbol.for('tlsproxy.error');

export type LdapErrorCode =
  | 'TLSPROXY_ERR_LDAP_MALFORMED'
  | 'TLSPROXY_ERR_LDAP_UNKNOWN_REQUEST'
  | 'TLSPROXY_ERR_LDAP_TOO_MANY_PDUS'
  | 'TLSPROXY_ERR_LDAP_TOO_MANY_BAD';

/** The client broke the protocol. `reply` is the complete BER reply (an LDAPMessage). */
export class LdapProtocolError extends Error {
  readonly code: LdapErrorCode;
  readonly reply: Uint8Array;
  /** True when the connection must close after the reply (always, for a Notice). */
  readonly fatal: boolean;
  readonly [BRAND] = true;

  constructor(
    code: LdapErrorCode,
    message: string,
    reply: Uint8Array,
    options: { fatal?: boolean } = {},
  ) {
    super(message);
    this.name = 'LdapProtocolError';
    this.code = code;
    this.reply = reply;
    this.fatal = options.fatal ?? true;
  }
}

export function isLdapProtocolError(err: unknown): err is LdapProtocolError {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as Record<symbol, unknown>)[BRAND] === true &&
    typeof (err as { code?: unknown }).code === 'string' &&
    (err as { code: string }).code.startsWith('TLSPROXY_ERR_LDAP_')
  );
}
