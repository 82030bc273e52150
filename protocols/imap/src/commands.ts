// RFC 9051 section 6.1 (Client Commands - Any State) and 6.2 (Not Authenticated State):
// CAPABILITY, NOOP, LOGOUT, STARTTLS, AUTHENTICATE, LOGIN; RFC 2971 (ID); RFC 5530 / RFC 9051
// section 7.1 ([PRIVACYREQUIRED]); RFC 3501 section 6.2.3 (LOGINDISABLED).
//
// The command table is data: one row per command name with whether it may carry a
// synchronizing literal (so we answer `+ OK`) and what it answers. A peer error is thrown as an
// ImapProtocolError carrying its BAD reply; session.ts turns errors into actions in one place.
import { ImapProtocolError } from './errors.js';
import type { Arg, Command } from './parse.js';

export interface ReplyConfig {
  /** Space-separated capability list, already checked (always STARTTLS and LOGINDISABLED). */
  capabilities: string;
  /** The `* ID` payload: NIL or a parenthesised list. */
  idResponse: string;
}

export type Outcome =
  | { kind: 'reply'; text: string }
  | { kind: 'close'; text: string; reason: string }
  | { kind: 'starttls'; tag: string };

interface CommandSpec {
  /** A synchronizing literal may follow (we send `+ OK` and read it before answering). */
  literals: boolean;
  /**
   * The answer to a synchronizing literal this command may never get: sent INSTEAD of `+ OK`,
   * so the client does not send the literal (LOGIN: its password, in the clear).
   */
  refuseLiteral?: (tag: string) => Outcome;
  run(command: Command, config: ReplyConfig): Outcome;
}

const reply = (text: string): Outcome => ({ kind: 'reply', text });

function bad(tag: string, text: string): ImapProtocolError {
  return new ImapProtocolError('TLSPROXY_ERR_IMAP_SYNTAX', `${tag} BAD ${text}\r\n`);
}

function noArguments(c: Command): void {
  if (c.args.length > 0) throw bad(c.tag, `${c.name} takes no arguments.`);
}

const isString = (a: Arg): boolean => a.type !== 'list';
const isNil = (a: Arg): boolean => a.type === 'atom' && a.value.toUpperCase() === 'NIL';

/** LOGINDISABLED is advertised, so a client should not even try; those that do get this. */
function privacyRequired(c: { tag: string }): Outcome {
  return reply(
    `${c.tag} NO [PRIVACYREQUIRED] Plaintext authentication is not allowed before STARTTLS.\r\n`,
  );
}

// A Map, never a plain object: the client's command name selects the row, and a plain object
// would also answer to `constructor`, `__proto__`, `toString`… (issue 14).
const SPECS = new Map<string, CommandSpec>(
  Object.entries({
    CAPABILITY: {
      literals: false,
      run: (c, cfg) => {
        noArguments(c);
        return reply(`* CAPABILITY ${cfg.capabilities}\r\n${c.tag} OK CAPABILITY completed\r\n`);
      },
    },
    NOOP: {
      literals: false,
      run: (c) => {
        noArguments(c);
        return reply(`${c.tag} OK NOOP completed\r\n`);
      },
    },
    LOGOUT: {
      literals: false,
      run: (c) => {
        noArguments(c);
        return {
          kind: 'close',
          reason: 'client logged out',
          text: `* BYE IMAP server logging out\r\n${c.tag} OK LOGOUT completed\r\n`,
        };
      },
    },
    STARTTLS: {
      literals: false,
      run: (c) => {
        noArguments(c);
        return { kind: 'starttls', tag: c.tag };
      },
    },
    ID: {
      // RFC 2971: id_params_list ::= "(" #(string SPACE nstring) ")" / nil; at most 30 pairs.
      literals: true,
      run: (c, cfg) => {
        const [list, ...extra] = c.args;
        const ok =
          list !== undefined &&
          extra.length === 0 &&
          (isNil(list) ||
            (list.type === 'list' &&
              list.items.length % 2 === 0 &&
              list.items.length <= 60 &&
              list.items.every(isString)));
        if (!ok) throw bad(c.tag, 'Invalid ID parameters.');
        return reply(`* ID ${cfg.idResponse}\r\n${c.tag} OK ID completed\r\n`);
      },
    },
    LOGIN: {
      // Issue 14: `LOGIN {5}` used to get `+ OK` (as Dovecot does), and the client then sent its
      // user name and password in the clear only to be refused. Refused before any continuation:
      // the client never sends them. A non-synchronizing {n+} literal is on its way anyway; the
      // framer takes it as literal data, and nothing reads it.
      literals: false,
      refuseLiteral: (tag) => privacyRequired({ tag }),
      run: (c) => {
        if (c.args.length !== 2 || !c.args.every(isString)) {
          throw bad(c.tag, 'LOGIN expects a user name and a password.');
        }
        return privacyRequired(c);
      },
    },
    AUTHENTICATE: {
      // SASL-IR (RFC 4959) puts an initial response after the mechanism; either way, refused at
      // once, never with a `+ ` continuation that would invite the credentials.
      literals: false,
      refuseLiteral: (tag) => privacyRequired({ tag }),
      run: (c) => {
        if (c.args.length < 1 || c.args.length > 2 || !c.args.every((a) => a.type === 'atom')) {
          throw bad(c.tag, 'AUTHENTICATE expects a mechanism and an optional initial response.');
        }
        return privacyRequired(c);
      },
    },
  } satisfies Record<string, CommandSpec>),
);

/**
 * Commands of the authenticated and selected states (RFC 9051 sections 6.3, 6.4, and common
 * extensions). Recognised so the client is told why, rather than "unknown command".
 */
const AFTER_LOGIN = [
  'ENABLE',
  'SELECT',
  'EXAMINE',
  'CREATE',
  'DELETE',
  'RENAME',
  'SUBSCRIBE',
  'UNSUBSCRIBE',
  'LIST',
  'LSUB',
  'NAMESPACE',
  'STATUS',
  'APPEND',
  'IDLE',
  'CHECK',
  'CLOSE',
  'UNSELECT',
  'EXPUNGE',
  'SEARCH',
  'FETCH',
  'STORE',
  'COPY',
  'MOVE',
  'UID',
  'GETQUOTA',
  'GETQUOTAROOT',
  'SETQUOTA',
  'GETACL',
  'SETACL',
  'DELETEACL',
  'LISTRIGHTS',
  'MYRIGHTS',
  'GETMETADATA',
  'SETMETADATA',
  'COMPRESS',
  'NOTIFY',
  'SORT',
  'THREAD',
  'REPLACE',
];

function notAllowed(tag: string, name: string): ImapProtocolError {
  return new ImapProtocolError(
    'TLSPROXY_ERR_IMAP_NOT_ALLOWED',
    `${tag} BAD ${name} is not allowed before authentication.\r\n`,
  );
}

function unknown(tag: string): ImapProtocolError {
  return new ImapProtocolError(
    'TLSPROXY_ERR_IMAP_UNKNOWN_COMMAND',
    `${tag} BAD Unknown command.\r\n`,
  );
}

/** The answer to a parsed command; throws ImapProtocolError for BAD. */
export function execute(command: Command, config: ReplyConfig): Outcome {
  const spec = SPECS.get(command.name);
  if (spec) return spec.run(command, config);
  if (AFTER_LOGIN.includes(command.name)) throw notAllowed(command.tag, command.name);
  throw unknown(command.tag);
}

/** Why a command that failed to parse is refused: unknown name first, as servers do. */
export function syntaxError(tag: string, name: string | null): ImapProtocolError {
  if (name === null) return bad(tag, 'Missing command.');
  if (AFTER_LOGIN.includes(name)) return notAllowed(tag, name);
  if (!SPECS.has(name)) return unknown(tag);
  return bad(tag, `Syntax error in ${name} arguments.`);
}

/**
 * Null if a synchronizing literal may be read for this command, else the refusal to send (an
 * error for BAD, an outcome for a command refused as such: LOGIN's NO [PRIVACYREQUIRED]).
 */
export function literalRefusal(
  tag: string,
  name: string | null,
): ImapProtocolError | Outcome | null {
  const spec = name === null ? undefined : SPECS.get(name);
  if (spec?.literals) return null;
  if (spec?.refuseLiteral) return spec.refuseLiteral(tag);
  if (name !== null && spec) return bad(tag, `${name} does not take a literal here.`);
  return syntaxError(tag, name);
}

/** Command names this dialect recognises (for tests and docs). */
export const KNOWN_COMMANDS: readonly string[] = [...SPECS.keys(), ...AFTER_LOGIN];
