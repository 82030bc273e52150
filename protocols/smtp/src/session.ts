// RFC 5321 section 3.1 (Session Initiation), 4.1.4 (Order of Commands) and 4.5.3.2 (Timeouts);
// RFC 3207 section 4 (STARTTLS) and 4.2 (Result of the STARTTLS Command); RFC 2920 (PIPELINING):
// one client connection's plaintext preamble, sans-I/O.
//
// Theory of operation (h11 style): bytes go into the Framer, which cuts them into lines; each
// line is checked, parsed and answered from the table in commands.ts. The session only moves
// between phases, and everything it does in each is this table:
//
//   phase     | receive(bytes)              | timer(now)            | tlsUnavailable() | eof()
//   ----------+-----------------------------+-----------------------+------------------+------
//   greet     | 554 early talker, close     | 220 greeting -> ready | (ignored, log)   | close
//   ready     | frame, answer, re-arm timer | 421 if idle, close    | (ignored, log)   | close
//   tls       | discard + log, never parse  | (ignored)             | -> ready         | close
//   plaintext | (ignored, log)              | (ignored)             | (ignored, log)   | close
//   closed    | (ignored)                   | (ignored)             | (ignored)        | (ignored)
//
// `greet` exists only with greetDelayMs > 0 (Postfix postscreen's greet pause): a client that
// talks before the greeting is an early talker. STARTTLS moves to `tls` at once: every octet after
// its line end goes out as `trailing` and is never framed (CVE-2011-0411). In MX mode a MAIL
// command moves to `plaintext`: the MAIL line and everything after it go out as `buffered`,
// unanswered, for the backend to answer.
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { act, ascii, concat, LineFramer as Framer } from '@tlsproxy/dialect-kit';
import {
  execute,
  type HelloState,
  isHttp,
  KNOWN_COMMANDS,
  type Outcome,
  precheck,
  type ReplyConfig,
  syntaxError,
} from './commands.js';
import { isSmtpProtocolError, SmtpProtocolError } from './errors.js';
import { parseCommand, verbOf } from './parse.js';

export interface SessionConfig extends ReplyConfig {
  /** Full greeting line, CRLF included. */
  greeting: string;
  /** 0: greet at once; > 0: wait this long and treat earlier input as an early talker. */
  greetDelayMs: number;
  bareLf: 'accept' | 'reject';
  maxLineLength: number;
  maxCommands: number;
  maxBadCommands: number;
  /** 0 disables the timer. */
  idleTimeoutMs: number;
}

type Phase = 'greet' | 'ready' | 'tls' | 'plaintext' | 'closed';

const KNOWN: ReadonlySet<string> = new Set(KNOWN_COMMANDS);

export class SmtpSession implements DialectSession {
  private phase: Phase = 'ready';
  private framer: Framer;
  private deadline = Number.POSITIVE_INFINITY;
  private commands = 0;
  private bad = 0;
  private readonly hello: HelloState = { ehlo: null, esmtp: false };

  constructor(private readonly config: SessionConfig) {
    this.framer = newFramer(config.maxLineLength);
  }

  start(now: number): Action[] {
    if (this.config.greetDelayMs > 0) {
      this.phase = 'greet';
      this.deadline = now + this.config.greetDelayMs;
      return [act.timer(this.deadline)];
    }
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
    if (this.phase !== 'greet' && this.phase !== 'ready') return [];
    if (now < this.deadline) return [act.timer(this.deadline)];
    if (this.phase === 'greet') {
      this.phase = 'ready';
      return [act.send(this.config.greeting), ...this.arm(now)];
    }
    this.phase = 'closed';
    return [act.close('idle timeout', `421 4.4.2 ${this.config.host} Error: timeout exceeded\r\n`)];
  }

  tlsUnavailable(now: number): Action[] {
    if (this.phase !== 'tls') return [act.log('warn', 'tlsUnavailable() outside STARTTLS ignored')];
    // Whatever arrived while the engine looked for a backend was discarded, never parsed. The
    // client got 454 and may go on without TLS (RFC 3207 section 4); it keeps its EHLO.
    this.phase = 'ready';
    this.framer = newFramer(this.config.maxLineLength);
    return this.arm(now);
  }

  /**
   * The engine's pre-TLS byte cap was crossed: 421, then the engine closes (RFC 5321 section
   * 3.8: 421 when the server must close). Postfix's words for a client it gives up on.
   */
  overflow(_now: number): Uint8Array {
    return ascii(`421 4.7.0 ${this.config.host} Error: too much data before STARTTLS\r\n`);
  }

  /** The engine's preamble deadline passed: 421 4.4.2, Postfix's words for its own timeouts. */
  expired(_now: number): Uint8Array {
    return ascii(`421 4.4.2 ${this.config.host} Error: timeout exceeded\r\n`);
  }

  eof(_now: number): Action[] {
    if (this.phase === 'closed') return [];
    this.phase = 'closed';
    return [act.close('client closed the connection')];
  }

  private receiveUnchecked(data: Uint8Array, now: number): Action[] {
    if (data.length === 0 || this.phase === 'closed') return [];
    switch (this.phase) {
      case 'tls':
        return [act.log('warn', `discarded ${data.length} bytes sent after STARTTLS`)];
      case 'plaintext':
        return [act.log('warn', `${data.length} bytes after the plaintext hand-off ignored`)];
      case 'greet':
        // RFC 5321 section 3.1 allows 554 in place of the greeting.
        this.phase = 'closed';
        return [
          act.close(
            'early talker',
            `554 5.5.0 ${this.config.host} Error: client spoke before the greeting\r\n`,
          ),
        ];
    }
    this.framer.push(data);
    const out: Action[] = [];
    for (let event = this.framer.next(); event; event = this.framer.next()) {
      if (event.type === 'tooLong') {
        this.complete(out, null, null, () => {
          throw new SmtpProtocolError(
            'TLSPROXY_ERR_SMTP_LINE_TOO_LONG',
            '500 5.5.2 Line too long\r\n',
          );
        });
      } else if (event.bareLf && this.config.bareLf === 'reject') {
        this.closeWith(
          out,
          `521 5.5.2 ${this.config.host} Error: bare <LF> received\r\n`,
          'bare LF',
        );
      } else {
        this.complete(out, verbOf(event.text), event.raw, () => this.answer(event.text));
      }
      if (this.phase !== 'ready') return out;
    }
    out.push(...this.arm(now));
    return out;
  }

  private answer(line: string): Outcome {
    if (isHttp(line)) {
      throw new SmtpProtocolError(
        'TLSPROXY_ERR_SMTP_HTTP',
        '554 5.7.0 Error: this is an SMTP port, not HTTP\r\n',
        { fatal: true },
      );
    }
    const word = verbOf(line);
    const early = precheck(word, this.config);
    if (early) throw early;
    const parsed = parseCommand(line);
    if (!parsed.ok) {
      if (parsed.reason === 'ambiguous') throw new Error('SMTP grammar is ambiguous');
      throw syntaxError(word);
    }
    return execute(parsed.command, this.config, this.hello);
  }

  /** One line is finished: count it, then send its answer or turn its error into a reply. */
  private complete(
    out: Action[],
    name: string | null,
    raw: Uint8Array | null,
    run: () => Outcome,
  ): void {
    if (++this.commands > this.config.maxCommands) {
      this.closeWith(
        out,
        `421 4.7.0 ${this.config.host} Error: too many commands\r\n`,
        'too many commands',
      );
      return;
    }
    let outcome: Outcome;
    try {
      outcome = run();
    } catch (err) {
      if (!isSmtpProtocolError(err)) throw err;
      out.push(act.command(name, true, KNOWN));
      this.refuse(out, err.replyText, err.fatal ? err.code : null);
      return;
    }
    out.push(act.command(name, outcome.kind === 'skip', KNOWN));
    switch (outcome.kind) {
      case 'reply':
        out.push(act.send(outcome.text));
        return;
      case 'close':
        this.closeWith(out, outcome.text, outcome.reason);
        return;
      case 'skip':
        this.framer.skip(outcome.size);
        this.refuse(out, outcome.text, null);
        return;
      case 'starttls': {
        this.phase = 'tls';
        const trailing = this.framer.takeRest();
        out.push({
          type: 'starttls',
          goAhead: ascii('220 2.0.0 Ready to start TLS\r\n'),
          unavailable: ascii('454 4.7.0 TLS not available due to temporary reason\r\n'),
          // RFC 3207 section 4.2: the client must EHLO again; the old name is for logs only.
          state: { ehlo: this.hello.ehlo, esmtp: this.hello.esmtp },
          trailing,
        });
        if (trailing.length > 0) {
          out.push(act.log('warn', `discarded ${trailing.length} bytes pipelined after STARTTLS`));
        }
        return;
      }
      case 'plaintext': {
        this.phase = 'plaintext';
        out.push({
          type: 'plaintext',
          buffered: concat([raw ?? new Uint8Array(0), this.framer.takeRest()]),
          state: { ehlo: this.hello.ehlo, esmtp: this.hello.esmtp },
          unavailable: ascii(
            `421 4.3.0 ${this.config.host} Error: mail system unavailable, try again later\r\n`,
          ),
        });
        return;
      }
    }
  }

  /** Send a 4yz/5yz reply, closing after it when fatal or after too many of them. */
  private refuse(out: Action[], text: string, fatal: string | null): void {
    if (fatal !== null) {
      this.closeWith(out, text, fatal);
    } else if (++this.bad >= this.config.maxBadCommands) {
      // As Postfix at smtpd_hard_error_limit: the last error still gets its reply, then 421.
      this.closeWith(
        out,
        `${text}421 4.7.0 ${this.config.host} Error: too many errors\r\n`,
        'too many bad commands',
      );
    } else {
      out.push(act.send(text));
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

  /** receive() must never throw: a bug of ours ends this one connection, politely. */
  private internalError(err: unknown): Action[] {
    this.phase = 'closed';
    const message = err instanceof Error ? err.message : String(err);
    return [
      act.log('error', `smtp dialect internal error: ${message}`),
      act.close('internal error', `421 4.3.0 ${this.config.host} Error: internal error\r\n`),
    ];
  }
}

/** `maxLineLength` counts the CRLF, as RFC 5321 section 4.5.3.1.4 does; the framer counts content. */
function newFramer(maxLineLength: number): Framer {
  return new Framer(Math.max(0, maxLineLength - 2));
}
