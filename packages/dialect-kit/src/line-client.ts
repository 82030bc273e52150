// The skeleton every line-based client side shares (IMAP, POP3, SMTP, NNTP-like protocols): frame
// the server's CRLF lines, one deadline per wait, never throw on peer input, a polite goodbye
// while the server still listens, and the response-injection check at the go-ahead. A dialect
// subclasses it and writes only its protocol: `line()` (one server line), `waitingFor()` (for
// the timeout and eof reasons) and its replies for the local client.
import { act } from './actions.js';
import { fromLatin1 } from './bytes.js';
import type { ClientAction, ClientDialectSession } from './contract.js';
import { LineFramer } from './lines.js';

export interface LineClientLimits {
  /** Longest server line (octets, CRLF excluded). */
  maxLineLength: number;
  /** Wait for the greeting; 0: no deadline. */
  greetingTimeoutMs: number;
  /** Wait for each reply; 0: no deadline. */
  replyTimeoutMs: number;
  /** Most server lines before the go-ahead (absent: no count). */
  maxResponseLines?: number;
}

/** What the local client is told (the protocol's own error line, CRLF included) when… */
export interface LineClientReplies {
  /** …a server line is too long, or there are too many. */
  badResponse: string;
  /** …the server is silent past a deadline. */
  timeout: string;
  /** …the server closed before the go-ahead. */
  closed: string;
  /** …a bug of ours ended the session. */
  internal: string;
  /** …bytes followed the go-ahead in the same read (response injection). */
  injection: string;
}

export abstract class LineClientSession<P extends string> implements ClientDialectSession {
  protected phase: P | 'greeting' | 'done' = 'greeting';
  protected readonly framer: LineFramer;
  protected deadline = Number.POSITIVE_INFINITY;
  /** Server lines read so far (for `maxResponseLines`). */
  protected lineCount = 0;
  /** The server greeted and has not said goodbye: the polite goodbye is worth sending. */
  protected polite = false;

  constructor(
    /** For log lines: 'imap'. */
    protected readonly protocol: string,
    /** The goodbye command for the server, CRLF included (`a LOGOUT\r\n`, `QUIT\r\n`). */
    protected readonly goodbye: string,
    protected readonly lineLimits: LineClientLimits,
  ) {
    this.framer = new LineFramer(lineLimits.maxLineLength);
  }

  /** One complete server line (CRLF removed). May push actions and change the phase. */
  protected abstract line(text: string, now: number, out: ClientAction[]): void;
  /** What is being waited for, for reasons: 'the greeting', 'the reply to STLS'. */
  protected abstract waitingFor(): string;
  /** The local client's replies (computed once the session knows its host names). */
  protected abstract replies(): LineClientReplies;

  start(now: number): ClientAction[] {
    return this.arm(now, this.lineLimits.greetingTimeoutMs);
  }

  receive(data: Uint8Array, now: number): ClientAction[] {
    if (this.phase === 'done' || data.length === 0) return [];
    try {
      this.framer.push(data);
      const out: ClientAction[] = [];
      const max = this.lineLimits.maxResponseLines;
      for (let e = this.framer.next(); e !== null; e = this.framer.next()) {
        if (e.type === 'tooLong') {
          this.close(out, 'server response line too long', this.replies().badResponse);
          return out;
        }
        if (max !== undefined && ++this.lineCount > max) {
          this.close(out, 'too many server response lines', this.replies().badResponse);
          return out;
        }
        this.line(e.text, now, out);
        if (this.done()) return out;
      }
      return out;
    } catch (err) {
      // receive() must never throw: a bug of ours ends this one connection.
      this.phase = 'done';
      const message = err instanceof Error ? err.message : String(err);
      return [
        act.log('error', `${this.protocol} client internal error: ${message}`),
        { type: 'close', reason: 'internal error', toLocal: fromLatin1(this.replies().internal) },
      ];
    }
  }

  timer(now: number): ClientAction[] {
    // No deadline (timeouts of 0): a stray call must not ask for a timer at infinity.
    if (this.phase === 'done' || this.deadline === Number.POSITIVE_INFINITY) return [];
    if (now < this.deadline) return [act.timer(this.deadline)];
    const out: ClientAction[] = [];
    this.close(out, `timeout waiting for ${this.waitingFor()}`, this.replies().timeout);
    return out;
  }

  eof(_now: number): ClientAction[] {
    if (this.phase === 'done') return [];
    this.polite = false;
    const out: ClientAction[] = [];
    this.close(
      out,
      `server closed the connection before ${this.waitingFor()}`,
      this.replies().closed,
    );
    return out;
  }

  /**
   * The server's go-ahead for `command` was the last line read. Whatever it sent after it before
   * TLS is plaintext that would be taken as coming through TLS — the response-injection attack
   * (the NO STARTTLS study) — so then close, never start TLS.
   */
  protected goAhead(
    out: ClientAction[],
    command: string,
    toLocal: string,
    state: Record<string, unknown>,
  ): void {
    const after = this.framer.pending;
    this.phase = 'done';
    if (after > 0) {
      this.polite = false;
      this.close(
        out,
        `response injection: ${after} bytes after the ${command} go-ahead, before TLS`,
        this.replies().injection,
      );
      return;
    }
    out.push({ type: 'starttls', toLocal: fromLatin1(toLocal), state });
  }

  /** Write `line` (CRLF added) to the server, report `name`, wait for its reply in `phase`. */
  protected send(
    out: ClientAction[],
    now: number,
    phase: P,
    line: string,
    name: string,
    known: ReadonlySet<string>,
  ): void {
    this.phase = phase;
    out.push(act.command(name, false, known));
    out.push(act.send(`${line}\r\n`), ...this.arm(now, this.lineLimits.replyTimeoutMs));
  }

  /** End: `toLocal` for the local client, the goodbye for the server while it listens. */
  protected close(out: ClientAction[], reason: string, toLocal: string): void {
    this.phase = 'done';
    out.push({
      type: 'close',
      reason,
      toLocal: fromLatin1(toLocal),
      ...(this.polite ? { data: fromLatin1(this.goodbye) } : {}),
    });
  }

  /** A method, so TypeScript does not narrow `phase` across the calls that change it. */
  protected done(): boolean {
    return this.phase === 'done';
  }

  protected arm(now: number, ms: number): ClientAction[] {
    if (!(ms > 0)) {
      this.deadline = Number.POSITIVE_INFINITY;
      return [];
    }
    this.deadline = now + ms;
    return [act.timer(this.deadline)];
  }
}
