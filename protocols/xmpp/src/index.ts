// https://xmpp.org/rfcs/rfc6120.html#tls (RFC 6120 section 5, STARTTLS negotiation) for
// client-to-server (`jabber:client`) and server-to-server (`jabber:server`) streams: the XMPP
// dialect plugin, its options and its limits.
import {
  type Dialect,
  type LimitSpec,
  type OptionSpec,
  readLimits,
  readOptions,
  type SessionContext,
} from '@tlsproxy/dialect-kit';
import { client } from './client.js';
import { DomainSet, normalizeDomain } from './domains.js';
import { type SessionConfig, XmppSession } from './session.js';

/** The resolved per-connection settings `sessionConfig()` derives from a session context. */
export type { SessionConfig } from './session.js';

import { escapeXml } from './xml.js';

export { DomainSet, normalizeDomain } from './domains.js';
export {
  isXmppStreamError,
  type StreamCondition,
  type XmppErrorCode,
  XmppStreamError,
} from './errors.js';
export type { StreamType, XmppState } from './session.js';

export interface XmppOptions {
  domains: string[];
  lang: string;
}

function domainsProblem(value: unknown): string | undefined {
  if (!Array.isArray(value)) return 'expected a list of domain names';
  for (const d of value) {
    const name = typeof d === 'string' && d.startsWith('*.') ? d.slice(2) : d;
    if (typeof name !== 'string' || normalizeDomain(name) === null) {
      return `"${String(d)}" is not a domain name (a "*." wildcard may lead)`;
    }
  }
  return undefined;
}

const options: Record<keyof XmppOptions, OptionSpec> = {
  domains: {
    type: 'string[]',
    default: [],
    description:
      'Domains served (stream `to`); "*.example.com" matches one label. Empty: the DNS names of the certificates.',
    validate: domainsProblem,
  },
  lang: {
    type: 'string',
    default: 'en',
    description:
      'xml:lang of our stream header when the client sent none (RFC 6120 section 4.7.4).',
    validate: (v) =>
      typeof v === 'string' && /^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$/.test(v)
        ? undefined
        : 'a language tag such as "en" (RFC 5646)',
  },
};

type LimitName =
  | 'maxStanzaSize'
  | 'maxDepth'
  | 'maxAttributes'
  | 'maxBadCommands'
  | 'idleTimeoutMs';

const limits: Record<LimitName, LimitSpec> = {
  maxStanzaSize: {
    default: 10_000,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Octets of one top-level element (or of the prolog and stream header); over it: policy-violation.',
    source:
      'RFC 6120 section 13.12 (servers must accept stanzas of at least 10000 bytes); Prosody answers an oversized stanza with policy-violation and <stanza-too-big/>',
  },
  maxDepth: {
    default: 16,
    unit: 'count',
    phase: 'preamble',
    description: 'Element nesting, the stream element counting as 1; deeper: policy-violation.',
    source: 'tlsproxy: the only pre-TLS element a client sends, <starttls/>, is at depth 2',
  },
  maxAttributes: {
    default: 32,
    unit: 'count',
    phase: 'preamble',
    description: 'Attributes on one element, xmlns declarations included; more: policy-violation.',
    source: 'tlsproxy: a stream header has about 7 (to, from, version, xml:lang, id, 2 xmlns)',
  },
  maxBadCommands: {
    default: 10,
    unit: 'count',
    phase: 'preamble',
    description:
      'Refused SASL auth elements before STARTTLS, each answered with the SASL failure encryption-required; the Nth is followed by policy-violation and close.',
    source:
      'tlsproxy: RFC 6120 section 6.4.5 keeps the stream open after a SASL failure and Prosody sets no bound before TLS; 10 as in the other tlsproxy dialects',
  },
  idleTimeoutMs: {
    default: 60_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Silence before the connection-timeout stream error and close; 0 disables.',
    source:
      'RFC 6120 section 4.6.1 leaves idle handling to the server; same as the other tlsproxy dialects',
  },
};

export function sessionConfig(context: SessionContext<Partial<XmppOptions>>): SessionConfig {
  // Defence in depth: the engine refused bad options already (resolveOptions); a session made
  // by hand gets the default for each bad one, judged by the same schema.
  const { domains: listed, lang } = readOptions<XmppOptions>(options, context.options);
  const domains = new DomainSet(listed.length > 0 ? listed : (context.serverNames ?? []));
  const host = normalizeDomain(context.hostname ?? '') ?? 'localhost';
  return {
    domains,
    defaultDomain: domains.first ?? host,
    // The engine's connection id is unique per connection and random (RFC 6120 section 4.7.3
    // wants the id unpredictable); the dialect itself draws no randomness.
    streamId: (context.connectionId ?? '').replace(/[^A-Za-z0-9._-]/g, '') || '0',
    lang,
    ...readLimits(limits, context.limits),
  };
}

export const dialect: Dialect<Partial<XmppOptions>> = {
  name: 'xmpp',
  description:
    'XMPP (RFC 6120) c2s and s2s pre-TLS stream: stream header, features with required STARTTLS, <proceed/>',
  defaultPorts: { starttls: 5222, implicit: 5223 },
  options,
  limits,
  create: (context) => new XmppSession(sessionConfig(context)),
  client,
  // RFC 6120 §4.9.3.17 resource-constraint; §4.9.1.2: open a stream header before the error.
  // Which limit: per address (Postfix's "too many connections from …") or the whole listener.
  busy: ({ hostname, limit }) =>
    new TextEncoder().encode(
      `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'` +
        ` from='${escapeXml(hostname)}' id='busy' version='1.0'><stream:error>` +
        `<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>` +
        `<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too many connections${limit === 'maxConnectionsPerAddress' ? ' from your address' : ''}</text>` +
        `</stream:error></stream:stream>`,
    ),
};

export default dialect;
