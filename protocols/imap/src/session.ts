// RFC 9051 section 3 (State and Flow Diagram), 6.2.1 (STARTTLS) and 5.4 (Autologout Timer):
// one client connection's plaintext preamble, sans-I/O.
//
// Theory of operation (h11 style): bytes go into the Framer, which cuts them into commands;
// each command is parsed and answered from the table in commands.ts. The session itself only
// moves between three phases, and everything it does in each is this table:
//
//   phase     | receive(bytes)              | timer(now)        | tlsUnavailable() | eof()
//   ----------+-----------------------------+-------------------+------------------+--------
//   preamble  | frame, answer, re-arm timer | BYE if idle; close| (ignored, log)   | close
//   tls       | discard + log, never parse  | (ignored)         | -> preamble      | close
//   closed    | (ignored)                   | (ignored)         | (ignored)        | (ignored)
//
// STARTTLS moves to `tls` at once: every octet after its line end goes out as `trailing` and
// is never framed, so pipelined plaintext cannot reach the TLS session (CVE-2011-0411 class).
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { act, ascii } from '@tlsproxy/dialect-kit';
import {
  execute,
  KNOWN_COMMANDS,
  literalRefusal,
  type Outcome,
  type ReplyConfig,
  syntaxError,
} from './commands.js';
import { ImapProtocolError, isImapProtocolError } from './errors.js';
import { type FrameEvent, Framer } from './framer.js';
import { nameOf, PrefixChecker, parseCommand, tagOf } from './parse.js';

export interface SessionConfig extends ReplyConfig {
  /** Full greeting line, CRLF included. */
  greeting: string;
  maxLineLength: number;
  maxLiteralSize: number;
  maxCommandSize: number;
  maxCommands: number;
  maxBadCommands: number;
  /** 0 disables the timer. */
  idleTimeoutMs: number;
}

type Phase = 'preamble' | 'tls' | 'closed';

const KNOWN = new Set(KNOWN_COMMANDS);

export class ImapSession implements DialectSession {
  private phase: Phase = 'preamble';
  /**
   * Made on the first octets and dropped again whenever a receive() leaves nothing pending
   * (no partial line, no command in progress): an idle connection, before or between
   * commands, holds no framer and none of its buffers. A fresh framer is exactly one at rest.
   */
  private framer: Framer | null = null;
  private deadline = Number.POSITIVE_INFINITY;
  private commands = 0;
  private bad = 0;
  /** Whether the command being framed can still parse, fed as its line parts arrive. */
  private prefix: PrefixChecker | null = null;
  /**
   * LOGIN or AUTHENTICATE was refused instead of a `+` continuation. A client that sends the
   * literal anyway (breaking RFC 9051 section 7.5) sends its password next: until a line is a
   * valid command, lines are discarded unread and unanswered, so the password is never taken
   * as a command nor echoed back as a tag. (Whether the client sends the literal cannot be
   * known from the octets; a compliant client's next command is valid and goes through.)
   */
  private discarding = false;

  /** `config` may be shared with other sessions (see sessionConfig()); it is only read. */
  constructor(private readonly config: Readonly<SessionConfig>) {}

  start(now: number): Action[] {
    return [act.send(this.config.greeting), ...this.arm(now)];
  }

  receive(data: Uint8Array, now: number): Action[] {
    try {
      return this.receiveUnchecked(data, now);
    } catch (err) {
      return this.internalError(err);
    }
  }

  timer(now: number): Action[] {
    if (this.phase !== 'preamble') return [];
    if (now < this.deadline) return [act.timer(this.deadline)];
    this.phase = 'closed';
    return [act.close('idle timeout', '* BYE Disconnected for inactivity.\r\n')];
  }

  tlsUnavailable(now: number): Action[] {
    if (this.phase !== 'tls') return [act.log('warn', 'tlsUnavailable() outside STARTTLS ignored')];
    // Whatever arrived while the engine looked for a backend was discarded, never parsed.
    this.phase = 'preamble';
    this.framer = null;
    this.prefix = null;
    this.discarding = false;
    return this.arm(now);
  }

  /**
   * The engine's pre-TLS byte cap was crossed: RFC 9051 section 7.1.5, BYE before closing.
   * Dovecot words a too-long command "* BYE Too long argument."; ours names the cause.
   */
  overflow(_now: number): Uint8Array {
    return ascii('* BYE Too much data before STARTTLS.\r\n');
  }

  /** The engine's preamble deadline passed: RFC 9051 section 7.1.5, BYE before closing. */
  expired(_now: number): Uint8Array {
    return ascii('* BYE Disconnected: too long before STARTTLS.\r\n');
  }

  eof(_now: number): Action[] {
    if (this.phase === 'closed') return [];
    this.phase = 'closed';
    return [act.close('client closed the connection')];
  }

  private receiveUnchecked(data: Uint8Array, now: number): Action[] {
    if (this.phase === 'tls') {
      return data.length === 0
        ? []
        : [act.log('warn', `discarded ${data.length} bytes sent after STARTTLS`)];
    }
    if (this.phase === 'closed' || data.length === 0) return [];
    const framer = this.frames();
    framer.push(data);
    const out: Action[] = [];
    for (let event = framer.next(); event; event = framer.next()) {
      this.handle(event, out);
      if (this.phase !== 'preamble') {
        // STARTTLS took the rest (trailing), or the session closed: nothing frames again here.
        this.framer = null;
        return out;
      }
    }
    if (framer.atRest()) this.framer = null;
    else framer.release();
    out.push(...this.arm(now));
    return out;
  }

  private handle(event: FrameEvent, out: Action[]): void {
    if (event.type !== 'literal') this.prefix = null;
    // An overlong line ends the session (BYE) even while discarding: nothing of it is read.
    if (this.discarding && event.type !== 'fatal' && event.type !== 'tooLong') {
      if (!this.plausible(event)) {
        this.discard(event, out);
        return;
      }
      this.discarding = false;
    }
    switch (event.type) {
      case 'command':
        this.complete(out, nameOf(event.text), () =>
          this.answer(event.text, event.literalEnds, event.literals, out),
        );
        return;
      case 'literal':
        this.literal(event.text, event.tooBig, out);
        return;
      case 'tooLong':
        // As Dovecot's imap-login ("* BYE Input buffer full, aborting"): RFC 9051 section
        // 7.1.5, BYE and close. Reading on would mean skipping octets up to an LF that may
        // never come, and a client that sends such a line is not one this preamble serves.
        this.complete(out, nameOf(event.text), () => {
          throw new ImapProtocolError(
            'TLSPROXY_ERR_IMAP_LINE_TOO_LONG',
            '* BYE Command line too long.\r\n',
            { fatal: true },
          );
        });
        return;
      case 'fatal': {
        // RFC 7888 section 4: a non-synchronizing literal over the limit is rejected with BAD
        // and, as its octets are already on their way, the connection cannot continue.
        const tag = tagOf(event.text);
        const bad = tag ? `${tag} BAD [TOOBIG] Literal too big.\r\n` : '';
        this.closeWith(
          out,
          `${bad}* BYE Literal too big.\r\n`,
          'non-synchronizing literal too big',
        );
        return;
      }
    }
  }

  /** Could this event be a client's next command (rather than a literal sent anyway)? */
  private plausible(event: FrameEvent): boolean {
    if (event.type === 'tooLong' || event.type === 'fatal') return false;
    const name = nameOf(event.text);
    if (tagOf(event.text) === null || name === null || !KNOWN.has(name)) return false;
    if (event.type === 'literal') {
      return literalRefusal('*', name) === null && new PrefixChecker().viable(event.text);
    }
    const parsed = parseCommand(event.text, event.literalEnds, event.literals);
    if (!parsed.ok) return false;
    try {
      execute(parsed.command, this.config); // pure: a command that would get BAD is no command
      return true;
    } catch {
      return false;
    }
  }

  /** A line after a refused credential literal that is no command: dropped, never read. */
  private discard(event: FrameEvent, out: Action[]): void {
    if (event.type === 'literal') this.frames().refuse();
    out.push(act.log('warn', 'discarded a line sent after a refused LOGIN/AUTHENTICATE literal'));
    if (++this.commands > this.config.maxCommands) {
      this.closeWith(out, '* BYE Too many commands before STARTTLS.\r\n', 'too many commands');
    } else if (++this.bad >= this.config.maxBadCommands) {
      this.closeWith(out, '* BYE Too many invalid IMAP commands.\r\n', 'too many bad commands');
    }
  }

  /**
   * A synchronizing literal was announced: `+ OK` only if the command can still be valid and
   * may carry a literal before TLS. A refusal goes out INSTEAD of the continuation, so the
   * client does not send the literal (for LOGIN, its password).
   */
  private literal(text: string, tooBig: boolean, out: Action[]): void {
    const tag = tagOf(text);
    let refusal: ImapProtocolError | Outcome | null;
    if (tag === null) refusal = invalidTag();
    else if (tooBig) {
      refusal = new ImapProtocolError(
        'TLSPROXY_ERR_IMAP_LITERAL_TOO_BIG',
        `${tag} BAD [TOOBIG] Literal too big.\r\n`,
      );
    } else {
      const name = nameOf(text);
      refusal = literalRefusal(tag, name);
      this.prefix ??= new PrefixChecker();
      if (refusal === null && !this.prefix.viable(text)) refusal = syntaxError(tag, name);
    }
    if (refusal === null) {
      this.frames().accept();
      out.push(act.send('+ OK\r\n'));
      return;
    }
    // The client will not send the literal after a tagged reply, so nothing is swallowed.
    this.frames().refuse();
    this.prefix = null;
    const answer = refusal;
    if (!isImapProtocolError(answer)) this.discarding = true;
    this.complete(out, nameOf(text), () => {
      if (isImapProtocolError(answer)) throw answer;
      return answer;
    });
  }

  private answer(
    text: string,
    literalEnds: number[],
    literals: Uint8Array[],
    out: Action[],
  ): Outcome {
    if (text === '') {
      throw new ImapProtocolError('TLSPROXY_ERR_IMAP_BAD_TAG', '* BAD Empty command line.\r\n');
    }
    const tag = tagOf(text);
    if (tag === null) throw invalidTag();
    const parsed = parseCommand(text, literalEnds, literals);
    if (!parsed.ok) {
      if (parsed.reason === 'ambiguous') out.push(act.log('error', 'IMAP grammar is ambiguous'));
      throw syntaxError(tag, nameOf(text));
    }
    return execute(parsed.command, this.config);
  }

  /** One command is finished: count it, then send its answer or turn its error into a reply. */
  private complete(out: Action[], name: string | null, run: () => Outcome): void {
    if (++this.commands > this.config.maxCommands) {
      this.closeWith(out, '* BYE Too many commands before STARTTLS.\r\n', 'too many commands');
      return;
    }
    let outcome: Outcome;
    try {
      outcome = run();
    } catch (err) {
      if (!isImapProtocolError(err)) throw err;
      out.push(act.command(name, true, KNOWN));
      if (err.fatal) {
        this.closeWith(out, err.replyText, err.code);
      } else if (++this.bad >= this.config.maxBadCommands) {
        // Dovecot's wording; it sends only the BYE, not the BAD it replaces.
        this.closeWith(out, '* BYE Too many invalid IMAP commands.\r\n', 'too many bad commands');
      } else {
        out.push(act.send(err.replyText));
      }
      return;
    }
    out.push(act.command(name, false, KNOWN));
    switch (outcome.kind) {
      case 'reply':
        out.push(act.send(outcome.text));
        return;
      case 'close':
        this.closeWith(out, outcome.text, outcome.reason);
        return;
      case 'starttls': {
        this.phase = 'tls';
        const trailing = this.frames().takeRest();
        const tag = outcome.tag;
        out.push({
          type: 'starttls',
          goAhead: ascii(`${tag} OK Begin TLS negotiation now\r\n`),
          unavailable: ascii(`${tag} NO [UNAVAILABLE] TLS not available right now\r\n`),
          state: { tag },
          trailing,
        });
        if (trailing.length > 0) {
          out.push(act.log('warn', `discarded ${trailing.length} bytes pipelined after STARTTLS`));
        }
        return;
      }
    }
  }

  private closeWith(out: Action[], text: string, reason: string): void {
    this.phase = 'closed';
    out.push(act.close(reason, text));
  }

  private arm(now: number): Action[] {
    if (!(this.config.idleTimeoutMs > 0)) return [];
    this.deadline = now + this.config.idleTimeoutMs;
    return [act.timer(this.deadline)];
  }

  /** The framer, made when octets arrive (the config holds the framer's limits itself). */
  private frames(): Framer {
    this.framer ??= new Framer(this.config);
    return this.framer;
  }

  /** receive() must never throw: a bug of ours ends this one connection, politely. */
  private internalError(err: unknown): Action[] {
    this.phase = 'closed';
    this.framer = null;
    const message = err instanceof Error ? err.message : String(err);
    return [
      act.log('error', `imap dialect internal error: ${message}`),
      act.close('internal error', '* BYE Internal server error.\r\n'),
    ];
  }
}

function invalidTag(): ImapProtocolError {
  return new ImapProtocolError('TLSPROXY_ERR_IMAP_BAD_TAG', '* BAD Invalid tag.\r\n');
}
