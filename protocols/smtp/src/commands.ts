// RFC 5321 section 4.1.1 (Command Semantics), 4.2 (Replies) and 4.3.2 (Command-Reply Sequences);
// RFC 3207 section 4 (STARTTLS: 530 before TLS, 501 with a parameter); RFC 2034 / RFC 3463
// (enhanced status codes: on every reply except the greeting and EHLO/HELO replies).
//
// The command table is data: one row per command word saying what it answers before TLS, in each
// `plaintext` mode. A peer error is thrown as an SmtpProtocolError carrying its reply; session.ts
// turns errors into actions in one place. Wording follows Postfix smtpd, which clients and
// operators know.
import { SmtpProtocolError } from './errors.js';
import type { Command, Verb } from './parse.js';

export type PlaintextMode = 'refuse' | 'handoff';

export interface ReplyConfig {
  /** Host name for replies, already sanitised. */
  host: string;
  /** The complete EHLO reply (multi-line 250), CRLF included. */
  ehloReply: string;
  plaintext: PlaintextMode;
}

/** What the session knows about the client so far. */
export interface HelloState {
  /** Name given with the last EHLO or HELO, null before either. */
  ehlo: string | null;
  /** True if that was EHLO (service extensions apply), false for HELO or none. */
  esmtp: boolean;
}

export type Outcome =
  | { kind: 'reply'; text: string }
  | { kind: 'close'; text: string; reason: string }
  | { kind: 'starttls' }
  | { kind: 'plaintext' }
  /** A refused BDAT: reply, then discard its `size` octets of chunk data (RFC 3030 section 2). */
  | { kind: 'skip'; text: string; size: number };

const reply = (text: string): Outcome => ({ kind: 'reply', text });

export const TLS_REQUIRED = '530 5.7.0 Must issue a STARTTLS command first\r\n';

function error(code: SmtpProtocolError['code'], text: string): SmtpProtocolError {
  return new SmtpProtocolError(code, text);
}
const tlsRequired = () => error('TLSPROXY_ERR_SMTP_TLS_REQUIRED', TLS_REQUIRED);
const badSequence = (what: string) =>
  error('TLSPROXY_ERR_SMTP_BAD_SEQUENCE', `503 5.5.1 Error: ${what}\r\n`);

interface CommandSpec {
  /** Reply to give before the line is even parsed (Postfix checks TLS before syntax). */
  before?(config: ReplyConfig): SmtpProtocolError | null;
  /** Text of the 501 reply when the arguments do not parse. */
  syntax: string;
  run(command: Command, config: ReplyConfig, state: HelloState): Outcome;
}

const TABLE: Record<Verb, CommandSpec> = {
  EHLO: {
    // RFC 2034 section 3: no enhanced code on EHLO/HELO replies.
    syntax: '501 Syntax: EHLO hostname\r\n',
    run: (c, cfg, state) => {
      state.ehlo = c.arg;
      state.esmtp = true;
      return reply(cfg.ehloReply);
    },
  },
  HELO: {
    syntax: '501 Syntax: HELO hostname\r\n',
    run: (c, cfg, state) => {
      state.ehlo = c.arg;
      state.esmtp = false;
      return reply(`250 ${cfg.host}\r\n`);
    },
  },
  STARTTLS: {
    // RFC 3207 section 4: "501 Syntax error (no parameters allowed)".
    syntax: '501 5.5.4 Syntax: STARTTLS\r\n',
    run: () => ({ kind: 'starttls' }),
  },
  NOOP: { syntax: '501 5.5.4 Syntax: NOOP [text]\r\n', run: () => reply('250 2.0.0 Ok\r\n') },
  RSET: { syntax: '501 5.5.4 Syntax: RSET\r\n', run: () => reply('250 2.0.0 Ok\r\n') },
  HELP: {
    syntax: '501 5.5.4 Syntax: HELP [topic]\r\n',
    run: () => reply('214 2.0.0 Commands: EHLO HELO STARTTLS NOOP RSET HELP QUIT\r\n'),
  },
  QUIT: {
    syntax: '501 5.5.4 Syntax: QUIT\r\n',
    run: () => ({ kind: 'close', text: '221 2.0.0 Bye\r\n', reason: 'client quit' }),
  },
  MAIL: {
    before: (cfg) => (cfg.plaintext === 'refuse' ? tlsRequired() : null),
    syntax: '501 5.5.4 Syntax: MAIL FROM:<address>\r\n',
    run: (_c, _cfg, state) => {
      if (state.ehlo === null) throw badSequence('send HELO/EHLO first');
      return { kind: 'plaintext' };
    },
  },
  RCPT: {
    before: (cfg) =>
      cfg.plaintext === 'refuse' ? tlsRequired() : badSequence('need MAIL command'),
    syntax: '501 5.5.4 Syntax: RCPT TO:<address>\r\n',
    run: () => {
      throw tlsRequired();
    },
  },
  DATA: {
    before: (cfg) =>
      cfg.plaintext === 'refuse' ? tlsRequired() : badSequence('need RCPT command'),
    syntax: '501 5.5.4 Syntax: DATA\r\n',
    run: () => {
      throw tlsRequired();
    },
  },
  // BDAT is followed by its chunk, so it is parsed first: the size must be known to skip it.
  BDAT: {
    syntax: '501 5.5.4 Syntax: BDAT count [LAST]\r\n',
    run: (c, cfg) => ({
      kind: 'skip',
      text: cfg.plaintext === 'refuse' ? TLS_REQUIRED : '503 5.5.1 Error: need MAIL command\r\n',
      size: Number(c.arg),
    }),
  },
  AUTH: {
    before: tlsRequired,
    syntax: TLS_REQUIRED,
    run: () => {
      throw tlsRequired();
    },
  },
  VRFY: {
    before: tlsRequired,
    syntax: TLS_REQUIRED,
    run: () => {
      throw tlsRequired();
    },
  },
  EXPN: {
    before: tlsRequired,
    syntax: TLS_REQUIRED,
    run: () => {
      throw tlsRequired();
    },
  },
  ETRN: {
    before: tlsRequired,
    syntax: TLS_REQUIRED,
    run: () => {
      throw tlsRequired();
    },
  },
};

// Looked up through a Map, never the object: the client's command word selects the row, and an
// object would also answer to `constructor`, `__proto__`, `toString`… (issue 14).
const SPECS = new Map(Object.entries(TABLE) as [Verb, CommandSpec][]);

/** Commands this dialect recognises (for tests and docs). */
export const KNOWN_COMMANDS = [...SPECS.keys()];

const isKnown = (word: string): word is Verb => SPECS.has(word as Verb);

/** The answer to a line whose command word is `word`, before parsing; null to go on. */
export function precheck(word: string, config: ReplyConfig): SmtpProtocolError | null {
  if (!isKnown(word)) return null;
  return SPECS.get(word)!.before?.(config) ?? null;
}

/** The answer to a parsed command; throws SmtpProtocolError for 4yz/5yz replies. */
export function execute(command: Command, config: ReplyConfig, state: HelloState): Outcome {
  return SPECS.get(command.verb)!.run(command, config, state);
}

/** Why a line that failed to parse is refused: unknown word first, as servers do. */
export function syntaxError(word: string): SmtpProtocolError {
  if (word === '') return error('TLSPROXY_ERR_SMTP_SYNTAX', '500 5.5.2 Error: bad syntax\r\n');
  if (!isKnown(word)) {
    return error(
      'TLSPROXY_ERR_SMTP_UNKNOWN_COMMAND',
      '500 5.5.2 Error: command not recognized\r\n',
    );
  }
  return error('TLSPROXY_ERR_SMTP_SYNTAX', SPECS.get(word)!.syntax);
}

/** HTTP sent to an SMTP port (a browser or a proxy probe): Postfix smtpd_forbidden_commands. */
const HTTP_METHOD = /^(GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH) /i;
/** An HTTP (or mail) header line, `Name: value`: no SMTP command has a colon in its word. */
const HEADER = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+:/;

export function isHttp(line: string): boolean {
  return HTTP_METHOD.test(line) || HEADER.test(line);
}
