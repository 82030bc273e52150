// RFC 1939 section 3 (Basic Operation: AUTHORIZATION state, autologout timer) and RFC 2595
// section 4 (STLS): one client connection's plaintext preamble, sans-I/O.
//
// Theory of operation (h11 style): bytes go into the Framer, which cuts them into lines; each
// line is parsed and answered from the table in commands.ts. The session itself only moves
// between three phases, and everything it does in each is this table:
//
//   phase     | receive(bytes)              | timer(now)         | tlsUnavailable() | eof()
//   ----------+-----------------------------+--------------------+------------------+--------
//   preamble  | frame, answer, re-arm timer | close (no reply)   | (ignored, log)   | close
//   tls       | discard + log, never parse  | (ignored)          | -> preamble      | close
//   closed    | (ignored)                   | (ignored)          | (ignored)        | (ignored)
//
// STLS moves to `tls` at once: every octet after its line end goes out as `trailing` and is
// never framed, so pipelined plaintext cannot reach the TLS session (CVE-2011-0411 class).
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { act, ascii, LineFramer as Framer } from '@tlsproxy/dialect-kit';
import {
  execute,
  KNOWN_COMMANDS,
  type Outcome,
  type ReplyConfig,
  refuseUnparsed,
} from './commands.js';
import { isPop3ProtocolError, Pop3ProtocolError } from './errors.js';
import { nameOf, parseCommand } from './parse.js';

export interface SessionConfig extends ReplyConfig {
  /** Full greeting line, CRLF included. */
  greeting: string;
  /** Longest command line in octets, CRLF included (RFC 2449 section 4: 255). */
  maxLineLength: number;
  maxCommands: number;
  maxBadCommands: number;
  /** 0 disables the timer. */
  idleTimeoutMs: number;
}

type Phase = 'preamble' | 'tls' | 'closed';

const KNOWN = new Set(KNOWN_COMMANDS);

/** RFC 2595 section 4's example reply; RFC 3206 section 4 [SYS/TEMP]: try again later. */
export const GO_AHEAD = '+OK Begin TLS negotiation\r\n';
export const UNAVAILABLE = '-ERR [SYS/TEMP] TLS not available right now\r\n';

export class Pop3Session implements DialectSession {
  private phase: Phase = 'preamble';
  private framer: Framer;
  private deadline = Number.POSITIVE_INFINITY;
  private commands = 0;
  private bad = 0;

  constructor(private readonly config: SessionConfig) {
    this.framer = this.newFramer();
  }

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
    // RFC 1939 section 3: when the autologout timer expires "the server should close the TCP
    // connection without removing any messages or sending any response to the client".
    this.phase = 'closed';
    return [act.close('idle timeout')];
  }

  tlsUnavailable(now: number): Action[] {
    if (this.phase !== 'tls') return [act.log('warn', 'tlsUnavailable() outside STLS ignored')];
    // Whatever arrived while the engine looked for a backend was discarded, never parsed.
    this.phase = 'preamble';
    this.framer = this.newFramer();
    return this.arm(now);
  }

  /**
   * The engine's pre-TLS byte cap was crossed: -ERR, then the engine closes (RFC 1939 section 3:
   * a negative reply; Dovecot says "-ERR Input line too long." when its input buffer is full).
   */
  overflow(_now: number): Uint8Array {
    return ascii('-ERR Too much data before STLS, closing connection.\r\n');
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
        : [act.log('warn', `discarded ${data.length} bytes sent after STLS`)];
    }
    if (this.phase === 'closed' || data.length === 0) return [];
    this.framer.push(data);
    const out: Action[] = [];
    for (let event = this.framer.next(); event; event = this.framer.next()) {
      if (event.type === 'line') {
        const text = event.text;
        this.complete(out, nameOf(text), () => this.answer(text, out));
      } else {
        // As Dovecot's pop3-login ("-ERR Input buffer full, aborting"): -ERR and close. The
        // framer reports the line as soon as it is certainly too long; reading on would mean
        // skipping octets up to an LF that may never come.
        this.complete(out, null, () => {
          throw new Pop3ProtocolError(
            'TLSPROXY_ERR_POP3_LINE_TOO_LONG',
            '-ERR Command line too long.\r\n',
            { fatal: true },
          );
        });
      }
      if (this.phase !== 'preamble') return out;
    }
    out.push(...this.arm(now));
    return out;
  }

  private answer(text: string, out: Action[]): Outcome {
    const parsed = parseCommand(text);
    if (parsed.ok) return execute(parsed.command, this.config);
    if (parsed.reason === 'ambiguous') out.push(act.log('error', 'POP3 grammar is ambiguous'));
    return refuseUnparsed(nameOf(text));
  }

  /** One command is finished: count it, then send its answer or turn its error into a reply. */
  private complete(out: Action[], name: string | null, run: () => Outcome): void {
    if (++this.commands > this.config.maxCommands) {
      this.closeWith(out, '-ERR Too many commands before STLS.\r\n', 'too many commands');
      return;
    }
    let outcome: Outcome;
    try {
      outcome = run();
    } catch (err) {
      if (!isPop3ProtocolError(err)) throw err;
      out.push(act.command(name, true, KNOWN));
      if (err.fatal) {
        this.closeWith(out, err.replyText, err.code);
      } else if (++this.bad >= this.config.maxBadCommands) {
        // As Dovecot's pop3-login: the last bad command still gets its own reply, then this.
        this.closeWith(
          out,
          `${err.replyText}-ERR Too many bad commands.\r\n`,
          'too many bad commands',
        );
      } else {
        out.push(act.send(err.replyText));
      }
      return;
    }
    out.push(act.command(name, false, KNOWN));
    switch (outcome.kind) {
      case 'reply':
        // As Dovecot's pop3-login: a command answered +OK (CAPA) starts the count of bad
        // commands again, so maxBadCommands counts them in a row; maxCommands bounds the rest.
        if (outcome.text.startsWith('+OK')) this.bad = 0;
        out.push(act.send(outcome.text));
        return;
      case 'close':
        this.closeWith(out, outcome.text, outcome.reason);
        return;
      case 'starttls': {
        this.phase = 'tls';
        const trailing = this.framer.takeRest();
        out.push({
          type: 'starttls',
          goAhead: ascii(GO_AHEAD),
          unavailable: ascii(UNAVAILABLE),
          state: {},
          trailing,
        });
        if (trailing.length > 0) {
          out.push(act.log('warn', `discarded ${trailing.length} bytes pipelined after STLS`));
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

  private newFramer(): Framer {
    // The limit counts the CRLF; the framer counts content. At least one octet of content.
    return new Framer(Math.max(1, this.config.maxLineLength - 2));
  }

  /** receive() must never throw: a bug of ours ends this one connection, politely. */
  private internalError(err: unknown): Action[] {
    this.phase = 'closed';
    const message = err instanceof Error ? err.message : String(err);
    return [
      act.log('error', `pop3 dialect internal error: ${message}`),
      act.close('internal error', '-ERR [SYS/TEMP] Internal server error.\r\n'),
    ];
  }
}
