// RFC 5321 section 4.1.1.1 (EHLO) and 4.3.1 (greeting), RFC 3207 (STARTTLS), RFC 2920
// (PIPELINING), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 2034 (ENHANCEDSTATUSCODES): the SMTP
// dialect plugin, its options and its limits.
import {
  type Dialect,
  type LimitSpec,
  type OptionSpec,
  readLimits,
  readOptions,
  type SessionContext,
} from '@tlsproxy/dialect-kit';
import { backendGreeting } from './backend-greeting.js';
import { backendReplay } from './backend-replay.js';
import { client } from './client.js';
import type { PlaintextMode } from './commands.js';
import { type SessionConfig, SmtpSession } from './session.js';

export { backendGreeting } from './backend-greeting.js';
export { backendReplay } from './backend-replay.js';
export type { PlaintextMode } from './commands.js';
export { isSmtpProtocolError, type SmtpErrorCode, SmtpProtocolError } from './errors.js';
/** The resolved per-connection settings `sessionConfig()` derives from a session context. */
export type { SessionConfig } from './session.js';

export interface SmtpOptions {
  greeting: string;
  extensions: string[];
  plaintext: PlaintextMode;
  greetDelayMs: number;
  bareLf: 'accept' | 'reject';
}

/** What Postfix advertises before TLS, trimmed to what a front end can promise; STARTTLS is added. */
export const DEFAULT_EXTENSIONS: readonly string[] = [
  'PIPELINING',
  'SIZE 10240000',
  '8BITMIME',
  'ENHANCEDSTATUSCODES',
];

// ehlo-line = ehlo-keyword *( SP ehlo-param ) (RFC 5321 section 4.1.1.1)
const EHLO_LINE = /^[A-Za-z0-9][A-Za-z0-9-]*( [\x21-\x7e]+)*$/;

function extensionProblem(value: unknown): string | undefined {
  if (!Array.isArray(value)) return 'expected a list of strings';
  for (const e of value) {
    if (typeof e !== 'string' || !EHLO_LINE.test(e)) {
      return `"${String(e)}" is not an EHLO keyword with parameters (RFC 5321 section 4.1.1.1)`;
    }
    if (/^AUTH([ =]|$)/i.test(e)) return `"${e}": no AUTH may be advertised before TLS`;
  }
  return undefined;
}

const PRINTABLE = /^[\x20-\x7e]*$/;

const options: Record<keyof SmtpOptions, OptionSpec> = {
  greeting: {
    type: 'string',
    default: 'Service ready',
    description: 'Text after "220 <host> ESMTP" in the greeting; "%h" becomes the host name.',
    pattern: PRINTABLE,
    problem: 'printable ASCII',
  },
  extensions: {
    type: 'string[]',
    default: [...DEFAULT_EXTENSIONS],
    description:
      'EHLO extensions before TLS (keyword and parameters); STARTTLS is always added, AUTH never.',
    validate: extensionProblem,
  },
  plaintext: {
    type: 'string',
    default: 'refuse',
    description:
      'Clients that send MAIL without STARTTLS: "refuse" (530) or "handoff" (MX mode: the backend gets the connection in plaintext).',
    oneOf: ['refuse', 'handoff'],
    problem: 'expected "refuse" or "handoff"',
  },
  greetDelayMs: {
    type: 'number',
    default: 0,
    description:
      'Wait this long before the greeting; a client that talks first gets 554 and is closed (0: greet at once).',
    min: 0,
    max: 60_000,
  },
  bareLf: {
    type: 'string',
    default: 'accept',
    description:
      'A command line ending in LF without CR: "accept" it as a line end, or "reject" it (521 and close).',
    oneOf: ['accept', 'reject'],
    problem: 'expected "accept" or "reject"',
  },
};

type LimitName = 'maxLineLength' | 'maxCommands' | 'maxBadCommands' | 'idleTimeoutMs';

const limits: Record<LimitName, LimitSpec> = {
  maxLineLength: {
    default: 512,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Longest command line in octets, CRLF included; longer: "500 5.5.2 Line too long", rest of the line discarded.',
    source: 'RFC 5321 section 4.5.3.1.4 (command line: 512 octets including CRLF)',
  },
  maxCommands: {
    default: 100,
    unit: 'count',
    phase: 'preamble',
    description: 'Commands before STARTTLS (or the MX hand-off); then 421 and close.',
    source: 'Postfix smtpd_junk_command_limit (100); real clients send 2-3 (EHLO, STARTTLS)',
  },
  maxBadCommands: {
    default: 20,
    unit: 'count',
    phase: 'preamble',
    description: 'Error replies (4yz/5yz) before "421 4.7.0 Error: too many errors" and close.',
    source: 'Postfix smtpd_hard_error_limit (20)',
  },
  idleTimeoutMs: {
    default: 300_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Silence before "421 4.4.2 Error: timeout exceeded" and close; 0 disables.',
    source:
      'RFC 5321 section 4.5.3.2.7 (server timeout: at least 5 minutes); Postfix smtpd_timeout 300s',
  },
};

/** The complete EHLO reply: host line, the extensions, STARTTLS (added unless listed), no AUTH. */
export function ehloReply(host: string, extensions: readonly string[]): string {
  const seen = new Set<string>();
  const lines = [host];
  for (const e of [...extensions, 'STARTTLS']) {
    const keyword = e.split(' ')[0]!.toUpperCase();
    // Defence in depth: the engine validates options, but a bad list must not leak AUTH.
    if (
      keyword === 'AUTH' ||
      keyword.startsWith('AUTH=') ||
      !EHLO_LINE.test(e) ||
      seen.has(keyword)
    ) {
      continue;
    }
    seen.add(keyword);
    lines.push(e);
  }
  return lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}\r\n`).join('');
}

export function sessionConfig(context: SessionContext<Partial<SmtpOptions>>): SessionConfig {
  // Defence in depth: the engine refused bad options already (resolveOptions); a session made
  // by hand gets the default for each bad one, judged by the same schema.
  const o = readOptions<SmtpOptions>(options, context.options);
  const { greeting, extensions } = o;
  const host = (context.hostname ?? '').replace(/[^A-Za-z0-9.-]/g, '') || 'localhost';
  const text = greeting.replaceAll('%h', host);
  return {
    host,
    greeting: `220 ${host} ESMTP${text ? ` ${text}` : ''}\r\n`,
    ehloReply: ehloReply(host, extensions),
    plaintext: o.plaintext,
    greetDelayMs: o.greetDelayMs,
    bareLf: o.bareLf,
    ...readLimits(limits, context.limits),
  };
}

export const dialect: Dialect<Partial<SmtpOptions>> = {
  name: 'smtp',
  description: 'SMTP (RFC 5321, RFC 3207) pre-TLS preamble: greeting, EHLO, STARTTLS; MX mode',
  defaultPorts: { starttls: 25, implicit: 465 },
  options,
  limits,
  create: (context) => new SmtpSession(sessionConfig(context)),
  backendGreeting,
  backendReplay,
  client,
  // RFC 5321 §3.8: a server that cannot serve answers the connection with 421 (Postfix: too many connections).
  // Which limit: per address (Postfix: "too many connections from …") or the whole listener.
  busy: ({ hostname, limit }) =>
    new TextEncoder().encode(
      `421 4.7.0 ${hostname} Error: too many connections${limit === 'maxConnectionsPerAddress' ? ' from your address' : ''}, try again later\r\n`,
    ),
};

export default dialect;
