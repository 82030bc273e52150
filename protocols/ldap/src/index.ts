// RFC 4511 section 4.14 (StartTLS operation), RFC 4513 section 3 (StartTLS in LDAP sessions):
// the LDAP dialect plugin, its options and its limits.
import {
  type Dialect,
  type LimitSpec,
  type OptionSpec,
  readLimits,
  readOptions,
  type SessionContext,
} from '@tlsproxy/dialect-kit';
import { client } from './client.js';
import { noticeOfDisconnection, RESULT } from './messages.js';
import { LdapSession, type SessionConfig } from './session.js';

export { isLdapProtocolError, type LdapErrorCode, LdapProtocolError } from './errors.js';
export { OID, RESULT } from './messages.js';
/** The resolved per-connection settings `sessionConfig()` derives from a session context. */
export type { SessionConfig } from './session.js';

export interface LdapOptions {
  namingContexts: string[];
  startTlsResponseName: boolean;
}

function dnListProblem(value: unknown): string | undefined {
  if (!Array.isArray(value)) return 'expected a list of DNs';
  for (const dn of value) {
    // RFC 4514 strings; we only refuse what cannot be a DN at all.
    if (typeof dn !== 'string' || dn === '' || /[\0-\x1f\x7f]/.test(dn)) {
      return `"${String(dn)}" is not a DN`;
    }
  }
  return undefined;
}

const options: Record<keyof LdapOptions, OptionSpec> = {
  namingContexts: {
    type: 'string[]',
    default: [],
    description: 'namingContexts of the root DSE answered before TLS (e.g. dc=example,dc=com).',
    validate: dnListProblem,
  },
  startTlsResponseName: {
    type: 'boolean',
    default: true,
    description:
      'Put responseName 1.3.6.1.4.1.1466.20037 into StartTLS responses (RFC 4511 4.14.2 allows it; slapd omits it).',
  },
};

const limits: Record<
  keyof Omit<SessionConfig, 'namingContexts' | 'startTlsResponseName'>,
  LimitSpec
> = {
  maxPduSize: {
    default: 262_143,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Largest LDAPMessage contents in octets; a longer length is a Notice of Disconnection before any of it is buffered.',
    source: 'OpenLDAP slapd sockbuf_max_incoming for anonymous sessions (262143)',
  },
  maxDepth: {
    default: 32,
    unit: 'count',
    phase: 'preamble',
    description: 'Deepest BER nesting in a PDU (LDAPMessage = 1); deeper is malformed.',
    source:
      'tlsproxy: an LDAPMessage needs 4 levels outside search filters; 32 leaves 28 for and/or/not',
  },
  maxPdus: {
    default: 50,
    unit: 'count',
    phase: 'preamble',
    description:
      'Requests before StartTLS; then Notice of Disconnection (adminLimitExceeded) and close.',
    source: 'tlsproxy: real clients send 1-3 (root DSE search, StartTLS)',
  },
  maxBadPdus: {
    default: 10,
    unit: 'count',
    phase: 'preamble',
    description:
      'Refused requests (any non-success answer) before Notice of Disconnection (adminLimitExceeded) and close.',
    source: 'Dovecot imap-login closes after 3 bad commands; 10 as in the other tlsproxy dialects',
  },
  idleTimeoutMs: {
    default: 60_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Silence before the connection is closed (no Notice, as slapd); 0 disables.',
    source: 'slapd idletimeout is off by default; tlsproxy bounds every preamble to one minute',
  },
};

export function sessionConfig(context: SessionContext<Partial<LdapOptions>>): SessionConfig {
  // Defence in depth: the engine refused bad options already (resolveOptions); a session made
  // by hand gets the default for each bad one, judged by the same schema.
  const o = readOptions<LdapOptions>(options, context.options);
  return {
    namingContexts: [...o.namingContexts],
    startTlsResponseName: o.startTlsResponseName,
    ...readLimits(limits, context.limits),
  };
}

export const dialect: Dialect<Partial<LdapOptions>> = {
  name: 'ldap',
  description:
    'LDAPv3 (RFC 4511, RFC 4513) pre-TLS preamble: root DSE, StartTLS extended operation',
  defaultPorts: { starttls: 389, implicit: 636 },
  options,
  limits,
  create: (context) => new LdapSession(sessionConfig(context)),
  client,
  // RFC 4511 §4.4.1: the Notice of Disconnection's unavailable (52) says the server is going away.
  // Which limit: per address (Postfix's "too many connections from …") or the whole listener.
  busy: ({ limit }) =>
    noticeOfDisconnection(
      RESULT.unavailable,
      `too many connections${limit === 'maxConnectionsPerAddress' ? ' from your address' : ''}, try again later`,
    ),
};

export default dialect;
