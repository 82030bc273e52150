// RFC 4511 section 4.1.1 and 4.4.1: a client that breaks the BER or LDAP rules gets the Notice
// of Disconnection (protocolError) and the session ends. As in h11's RemoteProtocolError, the
// error carries the octets the server sends, so handlers throw and the session turns the error
// into actions in one place.

import { DialectError, isErrorWithPrefix } from '@tlsproxy/dialect-kit';

export type LdapErrorCode =
  | 'TLSPROXY_ERR_LDAP_MALFORMED'
  | 'TLSPROXY_ERR_LDAP_UNKNOWN_REQUEST'
  | 'TLSPROXY_ERR_LDAP_TOO_MANY_PDUS'
  | 'TLSPROXY_ERR_LDAP_TOO_MANY_BAD';

/** The client broke the protocol. `reply` is the complete BER reply (an LDAPMessage). */
export class LdapProtocolError extends DialectError<LdapErrorCode> {
  constructor(
    code: LdapErrorCode,
    message: string,
    reply: Uint8Array,
    options: { fatal?: boolean } = {},
  ) {
    // Fatal by default: a Notice of Disconnection always ends the session.
    super(code, message, { reply, fatal: options.fatal ?? true });
    this.name = 'LdapProtocolError';
  }
}

export function isLdapProtocolError(err: unknown): err is LdapProtocolError {
  return isErrorWithPrefix(err, 'TLSPROXY_ERR_LDAP_');
}
