// RFC 2817 (Upgrading to TLS Within HTTP/1.1), RFC 9110 section 7.8 (Upgrade) and RFC 9112
// (HTTP/1.1): the HTTP Upgrade dialect plugin, its options and its limits.
import {
  type Dialect,
  type LimitSpec,
  type OptionSpec,
  readLimits,
  readOptions,
  type SessionContext,
} from '@tlsproxy/dialect-kit';
import { client } from './client.js';
import { errorResponse } from './responses.js';
import { HttpUpgradeSession, type SessionConfig } from './session.js';

export { type HttpErrorCode, HttpProtocolError, isHttpProtocolError } from './errors.js';
/** The resolved per-connection settings `sessionConfig()` derives from a session context. */
export type { RequestState, SessionConfig } from './session.js';

export interface HttpUpgradeOptions {
  plaintext: 'refuse' | 'handoff';
  rawRequest: boolean;
  upgradeMethods: string[];
}

/** RFC 9110 section 9.1: method = token (section 5.6.2). */
const METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

const options: Record<keyof HttpUpgradeOptions, OptionSpec> = {
  plaintext: {
    type: 'string',
    default: 'refuse',
    description:
      'A request without "Upgrade: TLS/1.x": "refuse" answers 426 Upgrade Required (RFC 2817 ' +
      'section 4.2) and closes; "handoff" gives the connection to the backend in plaintext.',
    oneOf: ['refuse', 'handoff'],
    problem: '"refuse" or "handoff"',
  },
  upgradeMethods: {
    type: 'string[]',
    default: ['OPTIONS'],
    description:
      'Methods whose requests may upgrade to TLS. RFC 2817 section 3.2 upgrades with "OPTIONS *": ' +
      'with any other method the request (and its content) has crossed the network in plaintext ' +
      'and the backend must answer it from pre-TLS state. Others with "Upgrade: TLS" get 400. ' +
      'Methods are case-sensitive (RFC 9110 section 9.1).',
    validate: (v) => {
      if (!Array.isArray(v) || v.length === 0) return 'a non-empty list of methods';
      for (const m of v) {
        if (typeof m !== 'string' || !METHOD.test(m)) return `"${String(m)}" is not a method token`;
      }
      return new Set(v).size === v.length ? undefined : 'a method is listed twice';
    },
  },
  rawRequest: {
    type: 'boolean',
    default: false,
    description:
      'Also put the exact request octets (base64) in the hand-off state as "raw"; they count ' +
      'against maxHandoffStateBytes.',
  },
};

const limits: Record<keyof Omit<SessionConfig, keyof HttpUpgradeOptions>, LimitSpec> = {
  maxRequestLineLength: {
    default: 8192,
    unit: 'bytes',
    phase: 'preamble',
    description: 'Longest request line in octets (CRLF not counted); longer: 414 URI Too Long.',
    source:
      'RFC 9112 section 3 (support at least 8000 octets); Apache LimitRequestLine 8190; nginx ' +
      'large_client_header_buffers 8k (414 when the request line does not fit)',
  },
  maxFieldLineLength: {
    default: 8192,
    unit: 'bytes',
    phase: 'preamble',
    description: 'Longest field line in octets; longer: 431 Request Header Fields Too Large.',
    source: 'Apache LimitRequestFieldSize 8190; nginx large_client_header_buffers 8k',
  },
  maxHeaderSize: {
    default: 16384,
    unit: 'bytes',
    phase: 'preamble',
    description: 'Request line and field lines together, line ends included; more: 431.',
    source: "Node's --max-http-header-size (16 KiB); h11's 16 KiB incomplete-event cap",
  },
  maxHeaderFields: {
    default: 100,
    unit: 'count',
    phase: 'preamble',
    description: 'Field lines in one request; more: 431.',
    source: 'Apache LimitRequestFields 100; Node http maxHeadersCount 2000 is the lax end',
  },
  maxBodySize: {
    default: 4096,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Content (Content-Length) of an upgrade request, read before the 101 and handed to the ' +
      'backend; more: 413 Content Too Large.',
    source:
      'tlsproxy: the content travels base64 in the JSON hand-off header; RFC 2817 upgrades ' +
      'are typically OPTIONS * with no content (CUPS)',
  },
  maxHandoffStateBytes: {
    default: 12288,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'JSON size of the hand-off state (request line, fields, content, raw); over it: 431 ' +
      '(head) or 413 (content), so the hand-off cannot fail after the TLS handshake.',
    source:
      '@tlsproxy/fdpass MAX_HEADER_BYTES (32 KiB for the whole hand-off message) and the 16 KiB dialect-state cap in core, less room ' +
      'for the rest of the hand-off info (addresses, TLS, client certificate)',
  },
  requestTimeoutMs: {
    default: 60_000,
    unit: 'ms',
    phase: 'preamble',
    description:
      'From connect to a complete request (head and content); then 408 and close; 0 disables.',
    source: 'Node http.Server headersTimeout 60 s; nginx client_header_timeout 60 s',
  },
};

export function sessionConfig(context: SessionContext<Partial<HttpUpgradeOptions>>): SessionConfig {
  // Defence in depth: the engine refused bad options already (resolveOptions); a session made
  // by hand gets the default for each bad one, judged by the same schema.
  const o = readOptions<HttpUpgradeOptions>(options, context.options);
  return {
    plaintext: o.plaintext,
    rawRequest: o.rawRequest,
    upgradeMethods: [...o.upgradeMethods],
    ...readLimits(limits, context.limits),
  };
}

export const dialect: Dialect<Partial<HttpUpgradeOptions>> = {
  name: 'http-upgrade',
  description: 'HTTP/1.1 Upgrade to TLS (RFC 2817): 101 Switching Protocols, else 426',
  // RFC 2817 section 3 upgrades on the http port; IPP (CUPS) does the same on 631.
  defaultPorts: { starttls: 80, implicit: 443 },
  options,
  limits,
  create: (context) => new HttpUpgradeSession(sessionConfig(context)),
  client,
  // RFC 9110 §15.6.4: 503 for an overloaded server (with Connection: close).
  // Which limit: per address (Postfix's "too many connections from …") or the whole listener.
  busy: ({ now, limit }) =>
    errorResponse(503, {
      now,
      ...(limit === 'maxConnectionsPerAddress' ? { code: 'TLSPROXY_BUSY_PER_ADDRESS' } : {}),
    }),
};

export default dialect;
