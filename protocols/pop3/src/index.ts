// RFC 1939 section 4 (greeting), RFC 2449 section 5 (CAPA) and section 4 (lengths), RFC 2595
// section 4 (STLS): the POP3 dialect plugin, its options and its limits.
import {
  type Dialect,
  type LimitSpec,
  type OptionSpec,
  readLimits,
  readOptions,
  type SessionContext,
} from '@tlsproxy/dialect-kit';
import { backendGreeting } from './backend-greeting.js';
import { client } from './client.js';
import { Pop3Session, type SessionConfig } from './session.js';

export { backendGreeting } from './backend-greeting.js';
export { AUTH_REFUSED, KNOWN_COMMANDS } from './commands.js';
export { isPop3ProtocolError, type Pop3ErrorCode, Pop3ProtocolError } from './errors.js';
/** The resolved per-connection settings `sessionConfig()` derives from a session context. */
export type { SessionConfig } from './session.js';
export { GO_AHEAD, UNAVAILABLE } from './session.js';

export interface Pop3Options {
  greeting: string;
  capabilities: string[];
}

/**
 * Exactly what Dovecot 2.3's pop3-login lists before TLS with plaintext authentication disabled
 * (checked against a live Dovecot 2.3.19.1), in its order. USER is left out and SASL carries no
 * mechanism: the list says what is "present and permitted in the current state" (RFC 2595
 * section 4, for STLS; RFC 2449 section 5 lets the lists differ before and after login), and
 * USER, PASS and AUTH are refused here until TLS. After STLS the client must CAPA again (RFC 2595
 * section 4) and the backend lists USER and its SASL mechanisms.
 */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAPA',
  'TOP',
  'UIDL',
  'RESP-CODES',
  'PIPELINING',
  'AUTH-RESP-CODE',
  'STLS',
  'SASL',
];

/** RFC 2449 section 5: capa-tag followed by optional parameters, printable ASCII, single SP. */
const CAPABILITY = /^[\x21-\x7e]+( [\x21-\x7e]+)*$/;

/** Why a capability line must not be sent before TLS, or undefined if it may. */
function refusedBeforeTls(line: string): string | undefined {
  // A line starting with "." would need byte-stuffing, and "." alone would end the list.
  if (line.startsWith('.')) return 'must not start with "."';
  const [tag, ...params] = line.toUpperCase().split(' ');
  if (tag === 'USER') return 'USER must not be advertised before TLS';
  if (tag === 'SASL' && params.length > 0) {
    return 'SASL must list no mechanism before TLS (authentication is refused until STLS)';
  }
  return undefined;
}

function capabilityProblem(value: unknown): string | undefined {
  if (!Array.isArray(value)) return 'expected a list of strings';
  for (const c of value) {
    if (typeof c !== 'string' || !CAPABILITY.test(c)) {
      return `"${String(c)}" is not a POP3 capability line (printable ASCII words, single spaces)`;
    }
    const why = refusedBeforeTls(c);
    if (why) return `"${c}": ${why}`;
  }
  return undefined;
}

const options: Record<keyof Pop3Options, OptionSpec> = {
  greeting: {
    type: 'string',
    default: 'POP3 server ready.',
    description: 'Text of the "+OK" greeting; "%h" is replaced by the host name.',
    pattern: /^[\x20-\x3b\x3d\x3f-\x7e]{1,200}$/,
    problem: 'printable ASCII, 1-200 characters, without "<" or ">" (no APOP timestamp)',
  },
  capabilities: {
    type: 'string[]',
    default: [...DEFAULT_CAPABILITIES],
    description:
      'CAPA lines before TLS; STLS is added if missing; USER and SASL mechanisms are refused.',
    validate: capabilityProblem,
  },
};

const limits: Record<keyof Omit<SessionConfig, 'greeting' | 'capa'>, LimitSpec> = {
  maxLineLength: {
    default: 255,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Longest command line in octets, CRLF included; longer: "-ERR Command line too long." and close (as Dovecot).',
    source:
      'RFC 2449 section 4: "The maximum length of a command is increased ... to 255 octets, including the terminating CRLF"',
  },
  maxCommands: {
    default: 50,
    unit: 'count',
    phase: 'preamble',
    description: 'Commands before STLS; then "-ERR" and close.',
    source: 'tlsproxy: real clients send 1-3 (CAPA, STLS)',
  },
  maxBadCommands: {
    default: 10,
    unit: 'count',
    phase: 'preamble',
    description:
      'Bad commands in a row (a +OK answer resets the count, as Dovecot) before "-ERR Too many bad commands." and close.',
    source:
      'Dovecot pop3-login closes after 3 (CLIENT_MAX_BAD_COMMANDS); 10 leaves room for people typing',
  },
  idleTimeoutMs: {
    default: 600_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Silence before the connection is closed (without a reply); 0 disables.',
    source: 'RFC 1939 section 3: an autologout timer "MUST be of at least 10 minutes\' duration"',
  },
};

/**
 * The CAPA reply, as Dovecot sends it: a bare "+OK", the lines, ".". STLS is appended when the
 * list lacks it; lines refused before TLS are dropped (defence in depth: the engine validates
 * options first).
 */
export function capaReply(list: readonly string[]): string {
  const seen = new Set<string>();
  const lines: string[] = [];
  const withStls = list.some((c) => c.toUpperCase() === 'STLS') ? list : [...list, 'STLS'];
  for (const c of withStls) {
    const tag = c.split(' ')[0]!.toUpperCase();
    if (!CAPABILITY.test(c) || refusedBeforeTls(c) || seen.has(tag)) continue;
    seen.add(tag);
    lines.push(`${c}\r\n`);
  }
  return `+OK\r\n${lines.join('')}.\r\n`;
}

export function sessionConfig(context: SessionContext<Partial<Pop3Options>>): SessionConfig {
  // Defence in depth: the engine refused bad options already (resolveOptions); a session made
  // by hand gets the default for each bad one, judged by the same schema.
  const { greeting, capabilities } = readOptions<Pop3Options>(options, context.options);
  const host = (context.hostname ?? '').replace(/[^A-Za-z0-9.-]/g, '').slice(0, 253);
  return {
    greeting: `+OK ${greeting.replaceAll('%h', host)}\r\n`,
    capa: capaReply(capabilities),
    ...readLimits(limits, context.limits),
  };
}

export const dialect: Dialect<Partial<Pop3Options>> = {
  name: 'pop3',
  description: 'POP3 (RFC 1939, RFC 2449, RFC 2595) pre-TLS preamble: greeting, CAPA, STLS',
  defaultPorts: { starttls: 110, implicit: 995 },
  options,
  limits,
  create: (context) => new Pop3Session(sessionConfig(context)),
  backendGreeting,
  client,
  // RFC 3206 §4: SYS/TEMP is a temporary system problem; the client should try later.
  // Which limit: per address (Postfix's "too many connections from …") or the whole listener.
  busy: ({ limit }) =>
    new TextEncoder().encode(
      `-ERR [SYS/TEMP] Too many connections${limit === 'maxConnectionsPerAddress' ? ' from your address' : ''}, try again later.\r\n`,
    ),
};

export default dialect;
