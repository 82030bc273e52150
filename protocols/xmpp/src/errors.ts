// https://xmpp.org/rfcs/rfc6120.html#streams-error (RFC 6120 section 4.9): a peer error closes
// the stream with a stream error. As in h11's RemoteProtocolError, the error carries what the
// server sends: the defined condition and an optional text, turned into bytes in one place.

import { DialectError, isErrorWithPrefix } from '@tlsproxy/dialect-kit';

export type XmppErrorCode =
  | 'TLSPROXY_ERR_XMPP_NOT_WELL_FORMED'
  | 'TLSPROXY_ERR_XMPP_RESTRICTED_XML'
  | 'TLSPROXY_ERR_XMPP_BAD_NAMESPACE_PREFIX'
  | 'TLSPROXY_ERR_XMPP_UNSUPPORTED_ENCODING'
  | 'TLSPROXY_ERR_XMPP_INVALID_NAMESPACE'
  | 'TLSPROXY_ERR_XMPP_UNSUPPORTED_VERSION'
  | 'TLSPROXY_ERR_XMPP_IMPROPER_ADDRESSING'
  | 'TLSPROXY_ERR_XMPP_HOST_UNKNOWN'
  | 'TLSPROXY_ERR_XMPP_TLS_REQUIRED'
  | 'TLSPROXY_ERR_XMPP_UNSUPPORTED_STANZA_TYPE'
  | 'TLSPROXY_ERR_XMPP_TOO_MANY_BAD'
  | 'TLSPROXY_ERR_XMPP_TOO_BIG'
  | 'TLSPROXY_ERR_XMPP_TOO_DEEP'
  | 'TLSPROXY_ERR_XMPP_TOO_MANY_ATTRIBUTES'
  | 'TLSPROXY_ERR_XMPP_TIMEOUT';

/** RFC 6120 section 4.9.3 defined conditions this dialect sends. */
export type StreamCondition =
  | 'bad-namespace-prefix'
  | 'connection-timeout'
  | 'host-unknown'
  | 'improper-addressing'
  | 'internal-server-error'
  | 'invalid-namespace'
  | 'not-authorized'
  | 'not-well-formed'
  | 'policy-violation'
  | 'restricted-xml'
  | 'unsupported-encoding'
  | 'unsupported-stanza-type'
  | 'unsupported-version';

/** The client broke the protocol; the stream is closed with `condition` (and `text`). */
export class XmppStreamError extends DialectError<XmppErrorCode> {
  readonly condition: StreamCondition;
  readonly text: string | undefined;
  /** Extra child of <stream:error/> (e.g. <stanza-too-big xmlns='urn:xmpp:errors'/>). */
  readonly extra: string | undefined;

  constructor(
    code: XmppErrorCode,
    condition: StreamCondition,
    options: { text?: string; extra?: string; detail?: string } = {},
  ) {
    // The stream error is serialised in one place (session.ts), which knows whether a stream
    // header was sent yet, so no reply octets here.
    super(
      code,
      `${condition}${options.detail ? `: ${options.detail}` : options.text ? `: ${options.text}` : ''}`,
      { fatal: true },
    );
    this.name = 'XmppStreamError';
    this.condition = condition;
    this.text = options.text;
    this.extra = options.extra;
  }
}

export function isXmppStreamError(err: unknown): err is XmppStreamError {
  return isErrorWithPrefix(err, 'TLSPROXY_ERR_XMPP_');
}
