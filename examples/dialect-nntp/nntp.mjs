// @ts-check
// NNTP STARTTLS for tlsproxy: RFC 4642 (TLS with NNTP), RFC 3977 (NNTP), RFC 4643 section 2.2
// (no AUTHINFO before TLS). https://www.rfc-editor.org/rfc/rfc4642#section-2.2
//
// Theory of operation (sans-I/O, h11 style). The engine creates one session per connection and
// calls start(), then receive() with whatever bytes TCP delivered, timer() when the deadline
// we asked for has passed, tlsUnavailable() when no backend could take the connection after
// our `starttls` action, and eof() when the client closed. Each call returns actions; the
// session never touches a socket, a clock or a promise. The whole behaviour is this table:
//
//   phase     | receive(bytes)               | timer(now)         | tlsUnavailable() | eof()
//   ----------+------------------------------+--------------------+------------------+-------
//   preamble  | frame lines, answer each     | 400, close         | (log, ignore)    | close
//   tls       | discard + log, never parse   | (ignore)           | -> preamble      | close
//   closed    | (ignore)                     | (ignore)           | (ignore)         | (ignore)
//
// and, in `preamble`, the COMMANDS table below. STARTTLS moves to `tls` at once: every octet
// after its line end goes out as `trailing` and is never framed, so plaintext pipelined after
// STARTTLS cannot reach the TLS session or the backend (CVE-2011-0411; INN's nnrpd had the same
// bug, CVE-2012-3523, fixed in INN 2.5.3).
//
// What every dialect needs and no dialect should write again comes from @tlsproxy/dialect-kit
// (a small leaf package, no native code): the line framer, the case-insensitive command table,
// the action builders, the error base with the reply it carries, options and limits read through
// their declarations, the shape check, and the contract's types.

import {
  act,
  ascii,
  CommandTable,
  DialectError,
  defineDialect,
  LineFramer,
  readLimits,
  readOptions,
  upperAscii,
} from '@tlsproxy/dialect-kit';
import { client } from './client.mjs';

/** @typedef {import('@tlsproxy/dialect-kit').Action} Action */
/** @typedef {import('@tlsproxy/dialect-kit').DialectSession} DialectSession */
/** @typedef {import('@tlsproxy/dialect-kit').LimitSpec} LimitSpec */
/** @typedef {import('@tlsproxy/dialect-kit').OptionSpec} OptionSpec */
/**
 * @typedef {{ posting: boolean, greeting: string, implementation: string }} NntpOptions
 * @typedef {{ maxLineLength: number, maxCommands: number, maxBadCommands: number,
 *   idleTimeoutMs: number }} NntpLimits
 */

// ---------------------------------------------------------------------------------------------
// Limits: named, with where each default comes from.

/** @type {Record<keyof NntpLimits, LimitSpec>} */
export const limits = {
  maxLineLength: {
    default: 512,
    unit: 'bytes',
    phase: 'preamble',
    description: 'Longest command line in octets, CRLF included; longer: 501, line discarded.',
    source: 'RFC 3977 section 3.1 (command lines MUST NOT exceed 512 octets, CRLF included)',
  },
  maxCommands: {
    default: 50,
    unit: 'count',
    phase: 'preamble',
    description: 'Commands before STARTTLS; then 400 and close.',
    source: 'tlsproxy: real clients send 1-3 (CAPABILITIES, MODE READER, STARTTLS)',
  },
  maxBadCommands: {
    default: 10,
    unit: 'count',
    phase: 'preamble',
    description: 'Commands answered 500/501 before "400 Too many errors" and close.',
    source:
      'nodemailer smtp-server closes after 10 unrecognized commands; INN nnrpd never closes (recorded: 25 x "500 What?")',
  },
  idleTimeoutMs: {
    default: 60_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Silence before "400 Idle timeout" and close; 0 disables.',
    source:
      'INN inn.conf initialtimeout 10 s (first command), clienttimeout 1800 s (a reading session); a pre-TLS client needs seconds',
  },
};

// ---------------------------------------------------------------------------------------------
// Options: what an operator may configure, validated by the engine before any session starts.

const PRINTABLE = /^[\x20-\x7e]*$/;

/** @type {Record<keyof NntpOptions, OptionSpec>} */
export const options = {
  posting: {
    type: 'boolean',
    default: true,
    description:
      'Greet with 200 (posting allowed) or 201 (prohibited), RFC 3977 section 5.1.1; also MODE READER and POST in CAPABILITIES.',
  },
  greeting: {
    type: 'string',
    default: '%h NNTP service ready',
    description: 'Text after the 200/201 code; "%h" is replaced by the host name.',
    pattern: /^[\x20-\x7e]+$/,
    problem: 'printable ASCII, not empty',
  },
  implementation: {
    type: 'string',
    default: 'tlsproxy',
    description:
      'Value of the IMPLEMENTATION capability (RFC 3977 section 5.2.2); "" leaves it out.',
    pattern: PRINTABLE,
    problem: 'printable ASCII',
  },
};

// ---------------------------------------------------------------------------------------------
// Errors as protocol replies. A handler throws NntpPeerError; the session turns it into the
// reply in one place and counts it towards maxBadCommands (h11's RemoteProtocolError).

/**
 * @typedef {'TLSPROXY_ERR_NNTP_UNKNOWN_COMMAND' | 'TLSPROXY_ERR_NNTP_SYNTAX'
 *   | 'TLSPROXY_ERR_NNTP_LINE_TOO_LONG'} NntpErrorCode
 */

/** @extends {DialectError<NntpErrorCode>} */
export class NntpPeerError extends DialectError {
  /**
   * @param {NntpErrorCode} code
   * @param {string} reply the complete response line, CRLF included
   */
  constructor(code, reply) {
    super(code, reply.trimEnd(), { reply });
    this.name = 'NntpPeerError';
  }
}

const unknown = () =>
  new NntpPeerError('TLSPROXY_ERR_NNTP_UNKNOWN_COMMAND', '500 Unknown command\r\n');
/** @param {string} text */
const syntax = (text) => new NntpPeerError('TLSPROXY_ERR_NNTP_SYNTAX', `501 ${text}\r\n`);

// ---------------------------------------------------------------------------------------------
// The commands a client may send before TLS (keywords are case-insensitive, RFC 3977 3.1).
// A handler gets the arguments and returns what to do; it never sees the bytes after its line.

/**
 * @typedef {{ reply: string } | { close: string, reason: string } | { starttls: true }} Outcome
 * @typedef {{ posting: boolean, capabilities: string, help: string }} Config
 * @typedef {(args: string[], config: Config, session: NntpSession) => Outcome} Handler
 */

/** RFC 4643 section 2.2 / RFC 3977 section 3.2.1: 483, "encryption required". */
const REQUIRES_TLS = '483 Encryption required, use STARTTLS first\r\n';

/**
 * The client's keyword selects the handler, so the table is a `Map` behind the kit's
 * `CommandTable` (ASCII case folding only): a plain object would also answer to `constructor`,
 * `__proto__`, `toString`… (never select a handler through one).
 * @type {Record<string, Handler>}
 */
const HANDLERS = Object.create(null);
Object.assign(
  HANDLERS,
  /** @type {Record<string, Handler>} */ ({
    // RFC 3977 section 5.2: optional keyword argument; the list ends with "." (multi-line).
    CAPABILITIES: (args, c) => {
      if (args.length > 1) throw syntax('Syntax is: CAPABILITIES [keyword]');
      return { reply: c.capabilities };
    },
    // RFC 3977 section 5.3: MODE READER answers like the greeting (200 or 201).
    MODE: (args, c, session) => {
      if (args.length !== 1 || args[0]?.toUpperCase() !== 'READER') {
        throw syntax('Syntax is: MODE READER');
      }
      session.modeReader = true;
      return {
        reply: c.posting
          ? '200 Reader mode, posting allowed\r\n'
          : '201 Reader mode, posting prohibited\r\n',
      };
    },
    // RFC 3977 section 7.2.
    HELP: (args, c) => {
      if (args.length > 0) throw syntax('Syntax is: HELP');
      return { reply: c.help };
    },
    // RFC 4642 section 2.2.1: no arguments; 382 is the go-ahead (sent by the engine).
    STARTTLS: (args) => {
      if (args.length > 0) throw syntax('Syntax is: STARTTLS (no arguments)');
      return { starttls: true };
    },
    // RFC 3977 section 5.4: 205 and close.
    QUIT: (args) => {
      if (args.length > 0) throw syntax('Syntax is: QUIT');
      return { close: '205 Connection closing\r\n', reason: 'client sent QUIT' };
    },
    // RFC 4643 section 2.2: AUTHINFO must not be used before TLS; every command that would read
    // or post news answers the same (RFC 3977 section 3.2.1, 483). The backend serves them.
    AUTHINFO: () => ({ reply: REQUIRES_TLS }),
  }),
);
for (const name of [
  'ARTICLE',
  'BODY',
  'DATE',
  'GROUP',
  'HDR',
  'HEAD',
  'IHAVE',
  'LAST',
  'LIST',
  'LISTGROUP',
  'NEWGROUPS',
  'NEWNEWS',
  'NEXT',
  'OVER',
  'POST',
  'STAT',
  'XHDR',
  'XOVER',
  'XPAT',
]) {
  HANDLERS[name] = () => ({ reply: REQUIRES_TLS });
}
const COMMANDS = new CommandTable(Object.entries(HANDLERS));
/** The names the engine may log and count (`tlsproxy_bad_commands_total`); others are `unknown`. */
const KNOWN = COMMANDS.names();

// ---------------------------------------------------------------------------------------------
// One connection.

/** @typedef {Config & NntpLimits & { greeting: string }} SessionConfig */

/** @implements {DialectSession} */
export class NntpSession {
  /** @param {SessionConfig} config */
  constructor(config) {
    this.config = config;
    /** @type {'preamble' | 'tls' | 'closed'} */
    this.phase = 'preamble';
    this.framer = newFramer(config.maxLineLength);
    this.deadline = Number.POSITIVE_INFINITY;
    this.commands = 0;
    this.bad = 0;
    /** The client sent MODE READER (hand-off state, for logging only: RFC 4642 section 2.2.2). */
    this.modeReader = false;
  }

  /** @param {number} now @returns {Action[]} */
  start(now) {
    return [act.send(this.config.greeting), ...this.arm(now)];
  }

  /** @param {Uint8Array} data @param {number} now @returns {Action[]} */
  receive(data, now) {
    try {
      return this.receiveUnchecked(data, now);
    } catch (err) {
      // receive() must never throw: a bug of ours ends this one connection, politely.
      this.phase = 'closed';
      const message = err instanceof Error ? err.message : String(err);
      return [
        act.log('error', `nntp dialect internal error: ${message}`),
        act.close('internal error', '400 Internal error\r\n'),
      ];
    }
  }

  /** @param {number} now @returns {Action[]} */
  timer(now) {
    if (this.phase !== 'preamble') return [];
    if (now < this.deadline) return [act.timer(this.deadline)];
    this.phase = 'closed';
    return [act.close('idle timeout', '400 Idle timeout, closing connection\r\n')];
  }

  /** @param {number} now @returns {Action[]} */
  tlsUnavailable(now) {
    if (this.phase !== 'tls') {
      return [act.log('warn', 'tlsUnavailable() outside STARTTLS ignored')];
    }
    // The engine has written our 580 and dropped whatever arrived meanwhile, unread.
    this.phase = 'preamble';
    this.framer = newFramer(this.config.maxLineLength);
    return this.arm(now);
  }

  /**
   * The engine's cap on bytes before TLS (`maxPreambleBytes`, 64 KiB) was crossed: the engine
   * writes this and closes. RFC 3977 section 3.2.1: 400 means the service is ending the
   * session. Pure: no state changes, nothing else is called after it.
   * @param {number} _now @returns {Uint8Array}
   */
  overflow(_now) {
    return ascii('400 Too much data before STARTTLS, closing connection\r\n');
  }

  /** @param {number} _now @returns {Action[]} */
  eof(_now) {
    if (this.phase === 'closed') return [];
    this.phase = 'closed';
    return [act.close('client closed the connection')];
  }

  /** @param {Uint8Array} data @param {number} now @returns {Action[]} */
  receiveUnchecked(data, now) {
    if (this.phase === 'tls') {
      // Only reachable if the engine feeds us after `starttls`; never parse these bytes.
      return data.length === 0
        ? []
        : [act.log('warn', `discarded ${data.length} bytes sent after STARTTLS`)];
    }
    if (this.phase === 'closed' || data.length === 0) return [];
    this.framer.push(data);
    /** @type {Action[]} */
    const out = [];
    for (let event = this.framer.next(); event; event = this.framer.next()) {
      if (event.type === 'tooLong') {
        this.complete(out, null, () => {
          throw new NntpPeerError('TLSPROXY_ERR_NNTP_LINE_TOO_LONG', '501 Line too long\r\n');
        });
      } else {
        // RFC 3977 section 3.1: keyword and arguments separated by spaces or TABs.
        const [keyword = '', ...args] = event.text.split(/[ \t]+/).filter((w) => w !== '');
        this.complete(out, keyword, () => this.answer(keyword, args));
      }
      if (this.phase !== 'preamble') return out; // STARTTLS or close: read nothing more
    }
    out.push(...this.arm(now));
    return out;
  }

  /** @param {string} keyword @param {string[]} args @returns {Outcome} */
  answer(keyword, args) {
    const handler = COMMANDS.get(keyword);
    if (!handler) throw unknown();
    return handler(args, this.config, this);
  }

  /**
   * One command is finished: count it, report its name (only names from our table reach the
   * engine's log and metrics), then send its answer or turn its error into a reply.
   * @param {Action[]} out @param {string | null} keyword @param {() => Outcome} run
   */
  complete(out, keyword, run) {
    // Only a name our table knows, folded as the table folds it (ASCII only: toUpperCase()
    // would turn a client's 'ſtarttls' into STARTTLS for the log, though we answered 500).
    const name = keyword !== null && COMMANDS.has(keyword) ? upperAscii(keyword) : null;
    if (++this.commands > this.config.maxCommands) {
      this.closeWith(out, '400 Too many commands before STARTTLS\r\n', 'too many commands');
      return;
    }
    /** @type {Outcome} */
    let outcome;
    try {
      outcome = run();
    } catch (err) {
      if (!(err instanceof NntpPeerError)) throw err;
      out.push(act.command(name, true, KNOWN));
      if (++this.bad >= this.config.maxBadCommands) {
        // RFC 3977 section 3.2.1: 400, and the server closes the connection at once.
        this.closeWith(out, '400 Too many errors, closing connection\r\n', 'too many bad commands');
      } else {
        out.push(act.send(err.reply));
      }
      return;
    }
    out.push(act.command(name, false, KNOWN));
    if ('reply' in outcome) {
      out.push(act.send(outcome.reply));
    } else if ('close' in outcome) {
      this.closeWith(out, outcome.close, outcome.reason);
    } else {
      this.phase = 'tls';
      const trailing = this.framer.takeRest();
      out.push({
        type: 'starttls',
        goAhead: ascii('382 Continue with TLS negotiation\r\n'),
        unavailable: ascii('580 Can not initiate TLS negotiation\r\n'),
        state: { modeReader: this.modeReader },
        trailing,
      });
      if (trailing.length > 0) {
        out.push(
          act.log(
            'warn',
            `discarded ${trailing.length} bytes pipelined after STARTTLS (never interpreted)`,
          ),
        );
      }
    }
  }

  /** @param {Action[]} out @param {string} text @param {string} reason */
  closeWith(out, text, reason) {
    this.phase = 'closed';
    out.push(act.close(reason, text));
  }

  /** @param {number} now @returns {Action[]} */
  arm(now) {
    if (!(this.config.idleTimeoutMs > 0)) return [];
    this.deadline = now + this.config.idleTimeoutMs;
    return [act.timer(this.deadline)];
  }
}

// ---------------------------------------------------------------------------------------------
// The plugin: name, ports, options, limits, and create() — the shape defineDialect() checks.

/**
 * @param {import('@tlsproxy/dialect-kit').SessionContext<Partial<NntpOptions>>} context
 * @returns {SessionConfig}
 */
export function sessionConfig(context) {
  // The engine has validated options and limits; a test may call us with a partial context,
  // and then each missing or bad value gets its default, judged by the same declarations.
  const o = /** @type {NntpOptions} */ (readOptions(options, context.options));
  const limit = readLimits(limits, context.limits);
  const host = (context.hostname ?? '').replace(/[^A-Za-z0-9.-]/g, '');
  // RFC 3977 section 5.2: VERSION first; STARTTLS (RFC 4642 section 2.1); never AUTHINFO or
  // SASL before TLS (RFC 4643 section 2.2), never COMPRESS (RFC 8054; the backend may offer
  // it after TLS).
  const caps = [
    'VERSION 2',
    ...(o.implementation ? [`IMPLEMENTATION ${o.implementation}`] : []),
    ...(o.posting ? ['POST'] : []),
    'READER',
    'STARTTLS',
  ];
  return {
    posting: o.posting,
    greeting: `${o.posting ? 200 : 201} ${o.greeting.replaceAll('%h', host)}\r\n`,
    capabilities: `101 Capability list:\r\n${caps.map((c) => `${c}\r\n`).join('')}.\r\n`,
    help: '100 Help text follows\r\nCAPABILITIES [keyword]\r\nHELP\r\nMODE READER\r\nQUIT\r\nSTARTTLS\r\n.\r\n',
    maxLineLength: limit.maxLineLength,
    maxCommands: limit.maxCommands,
    maxBadCommands: limit.maxBadCommands,
    idleTimeoutMs: limit.idleTimeoutMs,
  };
}

// defineDialect() checks the shape when this module is imported and says what is missing.
/** @type {import('@tlsproxy/dialect-kit').Dialect<Partial<NntpOptions>>} */
export const dialect = defineDialect({
  name: 'nntp',
  description:
    'NNTP (RFC 3977) pre-TLS preamble: greeting, CAPABILITIES, MODE READER, STARTTLS (RFC 4642)',
  defaultPorts: { starttls: 119, implicit: 563 },
  options,
  limits,
  create: (context) => new NntpSession(sessionConfig(context)),
  // The client role (`role: client`): STARTTLS to a real news server, in client.mjs.
  client,
});

export default dialect;

/**
 * The kit's framer, framing by hand on octets (see docs/writing-a-dialect.md section 2). RFC 3977
 * section 3.1 counts the 512 octets with the line end, so the framer does too.
 * @param {number} maxLineLength
 */
function newFramer(maxLineLength) {
  return new LineFramer(maxLineLength, { countsTerminator: true });
}
