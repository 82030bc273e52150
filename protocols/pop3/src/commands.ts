// RFC 1939 sections 4-7 (AUTHORIZATION state: USER, PASS, APOP, QUIT; TRANSACTION state: STAT,
// LIST, RETR, DELE, NOOP, RSET, TOP, UIDL), RFC 2449 section 5 (CAPA), RFC 2595 section 4
// (STLS), RFC 5034 (AUTH), RFC 3206 section 4 ([AUTH]).
//
// The command table is data: one row per keyword with what it answers before TLS. A peer error
// is thrown as a Pop3ProtocolError carrying its -ERR reply; session.ts turns errors into
// actions in one place (and counts them towards maxBadCommands).
import { Pop3ProtocolError } from './errors.js';
import type { Command } from './parse.js';

export interface ReplyConfig {
  /** The complete multi-line CAPA reply, "+OK" line to "." line, CRLFs included. */
  capa: string;
}

export type Outcome =
  | { kind: 'reply'; text: string }
  | { kind: 'close'; text: string; reason: string }
  | { kind: 'starttls' };

const reply = (text: string): Outcome => ({ kind: 'reply', text });

/**
 * RFC 3206 section 4: [AUTH] says the failure is about the credentials or "an attempt to
 * authenticate in violation of policy", which is what plaintext authentication before TLS is;
 * [SYS/PERM] is for system problems, and would tell the client to give up for good instead of
 * using STLS. The text is Dovecot's (AUTH_PLAINTEXT_DISABLED_MSG), which clients already show.
 */
export const AUTH_REFUSED =
  '-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n';

function noArguments(c: Command): void {
  if (c.args.length > 0) {
    throw new Pop3ProtocolError(
      'TLSPROXY_ERR_POP3_SYNTAX',
      `-ERR ${c.name} takes no arguments.\r\n`,
    );
  }
}

type Handler = (command: Command, config: ReplyConfig) => Outcome;

// A Map, never a plain object: the client's command name selects the handler, and a plain
// object would also answer to `constructor`, `__proto__`, `toString`… (issue 14).
const SPECS = new Map<string, Handler>(
  Object.entries({
    CAPA: (c, cfg) => {
      noArguments(c);
      return reply(cfg.capa);
    },
    STLS: (c) => {
      noArguments(c);
      return { kind: 'starttls' };
    },
    QUIT: (c) => {
      noArguments(c);
      // RFC 1939 section 5: QUIT in the AUTHORIZATION state ends the session, no UPDATE state.
      return { kind: 'close', reason: 'client quit', text: '+OK Logging out.\r\n' };
    },
  } satisfies Record<string, Handler>),
);

/**
 * Authentication commands: refused with [AUTH] whatever their arguments (RFC 1939 lets PASS
 * carry spaces, so its argument syntax is not checked). Not counted as bad commands.
 */
const AUTHENTICATION: readonly string[] = ['USER', 'PASS', 'APOP', 'AUTH'];

/**
 * TRANSACTION-state commands (RFC 1939 sections 5 and 7, LAST from RFC 1725): not valid in the
 * AUTHORIZATION state, so -ERR. NOOP is among them: RFC 1939 allows it only after login.
 */
const AFTER_LOGIN: readonly string[] = [
  'STAT',
  'LIST',
  'RETR',
  'DELE',
  'NOOP',
  'RSET',
  'TOP',
  'UIDL',
  'LAST',
];

function notAllowed(name: string): Pop3ProtocolError {
  return new Pop3ProtocolError(
    'TLSPROXY_ERR_POP3_NOT_ALLOWED',
    `-ERR ${name} is not allowed before authentication.\r\n`,
  );
}

function unknown(): Pop3ProtocolError {
  return new Pop3ProtocolError('TLSPROXY_ERR_POP3_UNKNOWN_COMMAND', '-ERR Unknown command.\r\n');
}

/** The answer to a parsed command; throws Pop3ProtocolError for a bad one. */
export function execute(command: Command, config: ReplyConfig): Outcome {
  const run = SPECS.get(command.name);
  if (run) return run(command, config);
  if (AUTHENTICATION.includes(command.name)) return reply(AUTH_REFUSED);
  if (AFTER_LOGIN.includes(command.name)) throw notAllowed(command.name);
  throw unknown();
}

/**
 * The answer to a line the grammar refused (control characters, two spaces, a trailing space,
 * an empty line): an authentication command is still refused for the real reason; for the
 * others, the unknown or out-of-state name comes first, as servers do.
 */
export function refuseUnparsed(name: string | null): Outcome {
  if (name === null) {
    throw new Pop3ProtocolError('TLSPROXY_ERR_POP3_SYNTAX', '-ERR Invalid command line.\r\n');
  }
  if (AUTHENTICATION.includes(name)) return reply(AUTH_REFUSED);
  if (AFTER_LOGIN.includes(name)) throw notAllowed(name);
  if (!SPECS.has(name)) throw unknown();
  throw new Pop3ProtocolError(
    'TLSPROXY_ERR_POP3_SYNTAX',
    `-ERR Syntax error in ${name} arguments.\r\n`,
  );
}

/** Keywords this dialect recognises (for tests and docs). */
export const KNOWN_COMMANDS: readonly string[] = [
  ...SPECS.keys(),
  ...AUTHENTICATION,
  ...AFTER_LOGIN,
];
