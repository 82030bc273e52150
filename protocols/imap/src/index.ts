// RFC 9051 section 7.1.1 (OK greeting with CAPABILITY response code) and 7.2.2 (CAPABILITY),
// RFC 3501 section 6.2.1 (STARTTLS): the IMAP dialect plugin, its options and its limits.
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
import { ImapSession, type SessionConfig } from './session.js';

export { backendGreeting } from './backend-greeting.js';
export { type ImapErrorCode, ImapProtocolError, isImapProtocolError } from './errors.js';
/** The resolved per-connection settings `sessionConfig()` derives from a session context. */
export type { SessionConfig } from './session.js';

export interface ImapOptions {
  greeting: string;
  capabilities: string[];
  idResponse: string;
}

/** What a real Dovecot advertises before TLS (STARTTLS and LOGINDISABLED are always added). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'IMAP4rev1',
  'SASL-IR',
  'LOGIN-REFERRALS',
  'ID',
  'ENABLE',
  'IDLE',
  'LITERAL+',
];

const ATOM = /^[\x21\x23\x24\x26\x27\x2B-\x5B\x5E-\x7A\x7C-\x7E]+$/;

function capabilityProblem(value: unknown): string | undefined {
  if (!Array.isArray(value)) return 'expected a list of strings';
  for (const c of value) {
    if (typeof c !== 'string' || !ATOM.test(c)) return `"${String(c)}" is not an IMAP atom`;
    if (/^AUTH=/i.test(c)) return `"${c}": no AUTH= mechanism may be advertised before TLS`;
  }
  if (!value.some((c) => /^IMAP4rev[12]$/i.test(c as string))) {
    return 'must include IMAP4rev1 or IMAP4rev2 (RFC 9051 section 7.2.2)';
  }
  return undefined;
}

const options: Record<keyof ImapOptions, OptionSpec> = {
  greeting: {
    type: 'string',
    default: 'IMAP server ready.',
    description: 'Text of the "* OK [CAPABILITY ...]" greeting; "%h" is replaced by the host name.',
    pattern: /^(?!\[)[\x20-\x7e]+$/,
    problem: 'printable ASCII, not empty, not starting with "["',
  },
  capabilities: {
    type: 'string[]',
    default: [...DEFAULT_CAPABILITIES],
    description:
      'Capabilities before TLS; STARTTLS and LOGINDISABLED are always added, AUTH= never.',
    validate: capabilityProblem,
  },
  idResponse: {
    type: 'string',
    default: 'NIL',
    description: 'Payload of the "* ID" reply (RFC 2971): NIL or a parenthesised list.',
    pattern: /^(?:NIL|\([\x20-\x7e]*\))$/,
    problem: 'NIL or a parenthesised list of printable ASCII',
  },
};

const limits: Record<
  keyof Omit<SessionConfig, 'greeting' | 'capabilities' | 'idResponse'>,
  LimitSpec
> = {
  maxLineLength: {
    default: 8192,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Longest command line in octets, literal data not counted; longer: "* BYE Command line too long." and close (as Dovecot).',
    source:
      'RFC 7162 section 4 (servers should accept at least 8192 octets); Dovecot imap-login MAX_IMAP_LINE 8192',
  },
  maxLiteralSize: {
    default: 4096,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Largest literal before TLS; over it a {n} gets BAD [TOOBIG], a {n+} gets BAD and BYE.',
    source: 'RFC 7888 section 4 (LITERAL- caps non-synchronizing literals at 4096 octets)',
  },
  maxCommandSize: {
    default: 65536,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Largest command in octets, lines and literals together; a line over it: "* BYE" and close, a {n} literal: BAD [TOOBIG].',
    source: "Dovecot's imap_max_line_length default (64 KiB)",
  },
  maxCommands: {
    default: 50,
    unit: 'count',
    phase: 'preamble',
    description: 'Commands before STARTTLS; then "* BYE" and close.',
    source: 'tlsproxy: real clients send 1-4 (CAPABILITY, ID, STARTTLS)',
  },
  maxBadCommands: {
    default: 10,
    unit: 'count',
    phase: 'preamble',
    description: 'BAD answers before "* BYE Too many invalid IMAP commands." and close.',
    source:
      'Dovecot imap-login closes after 3 (CLIENT_MAX_BAD_COMMANDS); 10 leaves room for people typing',
  },
  idleTimeoutMs: {
    default: 60_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Silence before "* BYE Disconnected for inactivity." and close; 0 disables.',
    source:
      'RFC 9051 section 5.4 sets a 30-minute minimum only after login; Dovecot allows 3 minutes for the whole login',
  },
};

/** The capability string: defaults to Dovecot's pre-TLS set, STARTTLS + LOGINDISABLED forced. */
export function capabilityString(list: readonly string[]): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const c of [...list, 'STARTTLS', 'LOGINDISABLED']) {
    const upper = c.toUpperCase();
    // Defence in depth: the engine validates options, but a bad list must not leak AUTH=.
    if (upper.startsWith('AUTH=') || !ATOM.test(c) || seen.has(upper)) continue;
    seen.add(upper);
    out.push(c);
  }
  return out.join(' ');
}

/**
 * What a session derives from its context, built once per (options, limits, hostname) and shared
 * by every session of a listener: the engine resolves a listener's options and limits once and
 * passes the same two objects to each of its connections (new ones after a configuration
 * update), so validating them and building the greeting per connection was repeated work on
 * every accept. Keyed by object identity, so the contexts' objects must not be changed in place
 * after a session was created from them (the engine never does; its limits are frozen). The
 * result is frozen: one session cannot alter what the others read.
 */
const shared = new WeakMap<object, WeakMap<object, Map<unknown, Readonly<SessionConfig>>>>();
/** Stands for an absent options or limits object (a session made by hand) as a WeakMap key. */
const ABSENT = Object.freeze({});
/** Host names kept per (options, limits): one per listener in the engine; a bound for callers
 * that vary it. */
const MAX_HOSTS = 16;

export function sessionConfig(
  context: SessionContext<Partial<ImapOptions>>,
): Readonly<SessionConfig> {
  const options = keyOf(context.options);
  const limits = keyOf(context.limits);
  // Not an object: nothing to key by (the schema gives defaults anyway); derive, unshared.
  if (options === null || limits === null) return deriveConfig(context);
  let byLimits = shared.get(options);
  if (byLimits === undefined) {
    byLimits = new WeakMap();
    shared.set(options, byLimits);
  }
  let byHost = byLimits.get(limits);
  if (byHost === undefined) {
    byHost = new Map();
    byLimits.set(limits, byHost);
  }
  let config = byHost.get(context.hostname);
  if (config === undefined) {
    config = deriveConfig(context);
    if (byHost.size >= MAX_HOSTS) byHost.clear();
    byHost.set(context.hostname, config);
  }
  return config;
}

function keyOf(value: unknown): object | null {
  if (value === undefined || value === null) return ABSENT;
  return typeof value === 'object' ? value : null;
}

function deriveConfig(context: SessionContext<Partial<ImapOptions>>): Readonly<SessionConfig> {
  // Defence in depth: the engine refused bad options already (resolveOptions); a session made
  // by hand gets the default for each bad one, judged by the same schema.
  const { greeting, capabilities, idResponse } = readOptions<ImapOptions>(options, context.options);
  const host = (context.hostname ?? '').replace(/[^A-Za-z0-9.-]/g, '');
  const caps = capabilityString(capabilities);
  // Every field is a string or a number, so freezing the object freezes all of it.
  return Object.freeze({
    greeting: `* OK [CAPABILITY ${caps}] ${greeting.replaceAll('%h', host)}\r\n`,
    capabilities: caps,
    idResponse,
    ...readLimits(limits, context.limits),
  });
}

export const dialect: Dialect<Partial<ImapOptions>> = {
  name: 'imap',
  description: 'IMAP4 (RFC 9051, RFC 3501) pre-TLS preamble: greeting, CAPABILITY, STARTTLS',
  defaultPorts: { starttls: 143, implicit: 993 },
  options,
  limits,
  create: (context) => new ImapSession(sessionConfig(context)),
  backendGreeting,
  client,
  // Dovecot says `* BYE Maximum number of connections…`; RFC 9051 §7.1.5 BYE, §7.1 UNAVAILABLE.
  // Which limit: per address (Postfix's "too many connections from …") or the whole listener.
  busy: ({ limit }) =>
    new TextEncoder().encode(
      `* BYE [UNAVAILABLE] Too many connections${limit === 'maxConnectionsPerAddress' ? ' from your address' : ''}, try again later.\r\n`,
    ),
};

export default dialect;
