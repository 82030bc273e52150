// RFC 9051 section 2.2.1 (Client Protocol Sender and Server Protocol Receiver) and 4.3 (String:
// literals), RFC 7888 (LITERAL+ / LITERAL-): where one client command ends.
//
// Theory of operation: framing is done by hand on octets, never by the grammar, so that nothing
// a client sends can move a command boundary. A command is one or more line parts; a part that
// ends in `{n}` or `{n+}` is followed by exactly n octets of literal data, then the command goes
// on. A synchronizing `{n}` pauses the framer until the session decides: accept() (it sent
// `+ OK`, the client will send the octets) or refuse() (it sent a tagged reply, the client will
// NOT send them, so nothing may be swallowed). A non-synchronizing `{n+}` is always followed by
// its octets, so they are consumed even when the command is refused; if that is impossible
// (too big) the stream cannot be resynchronised and the framer reports `fatal`.
//
// A line ends at LF; one CR before it is dropped (clients must send CRLF, Dovecot also takes a
// bare LF). A bare CR is line data. Every decision depends only on the octets, never on how they
// were chunked: that is what the split-anywhere property tests check.
import { ByteBuffer, concat, latin1 } from '@tlsproxy/dialect-kit';

export type FrameEvent =
  /** A complete command: `text` has literal data removed; `literalEnds` are the offsets in
   * `text` just after each real literal marker, in order, matching `literals`. */
  | { type: 'command'; text: string; literalEnds: number[]; literals: Uint8Array[] }
  /** A synchronizing literal was announced; call accept() or refuse() before next(). */
  | { type: 'literal'; text: string; size: number; tooBig: boolean }
  /** A line or the command was too long; the rest of the command is being discarded. `text`
   * holds at most maxLineLength + 1 octets of the offending line, enough to find the tag. */
  | { type: 'tooLong'; text: string }
  /** The stream cannot be resynchronised (a non-synchronizing literal over the limit). */
  | { type: 'fatal'; text: string; size: number };

export interface FramerLimits {
  maxLineLength: number;
  maxLiteralSize: number;
  maxCommandSize: number;
}

type State = 'line' | 'literal' | 'paused' | 'skipLine' | 'skipEnd' | 'skipLiteral' | 'dead';

const LF = 0x0a;
const CR = 0x0d;
/** Octets of a discarded line kept to spot a trailing `{n+}`; longer counts are refused. */
const TAIL = 24;
const EMPTY = new Uint8Array(0);
const LITERAL_AT_END = /\{(\d+)(\+?)\}$/;

export class Framer {
  private buf: Uint8Array = EMPTY;
  private pos = 0;
  private state: State = 'line';
  // the command being framed
  private text = '';
  private literalEnds: number[] = [];
  private literals: Uint8Array[] = [];
  private commandSize = 0;
  // the line part being read
  /** The line part being read, kept once however it was chunked (issue 14: one copy per
   * read cost ~200 octets per octet for a line sent one octet at a time). Made only for a
   * line that arrives in pieces: a whole line is read where it lies. */
  private line: ByteBuffer | null = null;
  // a literal being read or skipped
  private remaining = 0;
  /** Made only when a literal's octets arrive. */
  private literal: ByteBuffer | null = null;
  private announced = 0;
  // a line being skipped
  private tail = '';
  private skipped = 0;

  constructor(private readonly limits: FramerLimits) {}

  /**
   * Nothing pending: no octets unread, no partial line, no command in progress. A framer at
   * rest behaves exactly as a new one, so the session may drop it until octets arrive.
   */
  atRest(): boolean {
    return (
      this.state === 'line' &&
      this.pos >= this.buf.length &&
      this.line === null &&
      this.text === '' &&
      this.commandSize === 0
    );
  }

  /**
   * Frame `data` after whatever was left unread. The octets are read where they lie, not
   * copied: call release() before giving control back to the engine, which owns `data`.
   */
  push(data: Uint8Array): void {
    this.buf = this.pos >= this.buf.length ? data : concat([this.buf.subarray(this.pos), data]);
    this.pos = 0;
  }

  /** Stop reading the pushed octets: keep a copy of those not framed yet (usually none). */
  release(): void {
    this.buf = this.pos < this.buf.length ? this.buf.slice(this.pos) : EMPTY;
    this.pos = 0;
  }

  /** Octets received but not framed yet (after STARTTLS: the trailing data). */
  takeRest(): Uint8Array {
    // Usually nothing: a new empty array is cheaper than slicing one.
    const rest = this.pos < this.buf.length ? this.buf.slice(this.pos) : new Uint8Array(0);
    this.buf = EMPTY;
    this.pos = 0;
    return rest;
  }

  accept(): void {
    if (this.state !== 'paused') return;
    this.state = 'literal';
    this.remaining = this.announced;
    this.commandSize += this.announced;
  }

  refuse(): void {
    if (this.state === 'paused') this.reset();
  }

  next(): FrameEvent | null {
    for (;;) {
      switch (this.state) {
        case 'paused':
        case 'dead':
          return null;
        case 'literal':
        case 'skipLiteral': {
          if (this.remaining > 0) {
            if (this.pos >= this.buf.length) return null;
            const take = Math.min(this.remaining, this.buf.length - this.pos);
            if (this.state === 'literal') {
              this.literal ??= new ByteBuffer();
              this.literal.append(this.buf.subarray(this.pos, this.pos + take));
            }
            this.pos += take;
            this.remaining -= take;
            if (this.remaining > 0) return null;
          }
          if (this.state === 'literal') {
            // Dropping the buffer (not clearing it) also frees its storage.
            this.literals.push(this.literal?.view().slice() ?? new Uint8Array(0));
            this.literal = null;
            this.state = 'line';
          } else {
            this.startSkip();
          }
          continue;
        }
        case 'skipLine': {
          if (this.pos >= this.buf.length) return null;
          const lf = this.buf.indexOf(LF, this.pos);
          const end = lf < 0 ? this.buf.length : lf;
          this.keepTail(this.buf.subarray(this.pos, end));
          if (lf < 0) {
            this.pos = end;
            return null;
          }
          this.pos = lf + 1;
          this.state = 'skipEnd';
          continue;
        }
        case 'skipEnd': {
          const event = this.endSkippedLine();
          if (event) return event;
          continue;
        }
        case 'line': {
          const event = this.readLine();
          if (event !== undefined) return event;
          continue;
        }
      }
    }
  }

  /** Returns an event, null for "need more data", or undefined to keep looping. */
  private readLine(): FrameEvent | null | undefined {
    if (this.pos >= this.buf.length) return null;
    const { maxLineLength, maxLiteralSize, maxCommandSize } = this.limits;
    const lf = this.buf.indexOf(LF, this.pos);
    const end = lf < 0 ? this.buf.length : lf;
    let raw: Uint8Array;
    if (lf >= 0 && this.line === null) {
      // The whole line part is here: read it in place, no copy.
      raw = this.buf.subarray(this.pos, lf);
    } else {
      this.line ??= new ByteBuffer();
      this.line.append(this.buf.subarray(this.pos, end));
      this.pos = end;
      if (lf < 0) {
        // +1: the octet past the limit may still be the CR of a CRLF.
        if (this.line.length <= maxLineLength + 1) return null;
        raw = this.line.view();
        this.line = null;
        const text = this.takeText(raw);
        this.startSkip(raw);
        return { type: 'tooLong', text };
      }
      raw = this.line.view();
      this.line = null;
    }
    this.pos = lf + 1;
    const content = raw.length > 0 && raw[raw.length - 1] === CR ? raw.subarray(0, -1) : raw;
    this.commandSize += content.length;
    if (content.length > maxLineLength || this.commandSize > maxCommandSize) {
      const text = this.takeText(content);
      this.startSkip(content);
      this.state = 'skipEnd';
      return { type: 'tooLong', text };
    }
    const part = latin1(content);
    this.text += part;
    const m = LITERAL_AT_END.exec(part);
    if (!m) {
      const event: FrameEvent = {
        type: 'command',
        text: this.text,
        literalEnds: this.literalEnds,
        literals: this.literals,
      };
      this.reset();
      return event;
    }
    this.literalEnds.push(this.text.length);
    const size = literalSize(m[1]!);
    const tooBig = size > maxLiteralSize || this.commandSize + size > maxCommandSize;
    if (m[2] === '+') {
      if (tooBig) {
        this.state = 'dead';
        return { type: 'fatal', text: this.text, size };
      }
      this.state = 'literal';
      this.remaining = size;
      this.commandSize += size;
      return undefined;
    }
    this.state = 'paused';
    this.announced = size;
    return { type: 'literal', text: this.text, size, tooBig };
  }

  /** Command text so far plus at most maxLineLength + 1 octets of `line`, then forget both. */
  private takeText(line: Uint8Array): string {
    const text = this.text + latin1(line.subarray(0, this.limits.maxLineLength + 1));
    this.reset();
    return text;
  }

  private startSkip(seen: Uint8Array = EMPTY): void {
    this.tail = '';
    this.skipped = 0;
    this.keepTail(seen);
    this.state = 'skipLine';
  }

  private keepTail(segment: Uint8Array): void {
    this.skipped += segment.length;
    this.tail = (this.tail + latin1(segment.subarray(-TAIL))).slice(-TAIL);
  }

  /** A discarded line ended: if it announced `{n+}`, those octets must be discarded too. */
  private endSkippedLine(): FrameEvent | null {
    const tail = this.tail.endsWith('\r') ? this.tail.slice(0, -1) : this.tail;
    const truncated = this.skipped > this.tail.length;
    const m = /(\{|^)(\d+)\+\}$/.exec(tail);
    if (!m || (m[1] === '' && !truncated)) {
      // No literal (or a synchronizing one the client will not send after our BAD).
      this.reset();
      return null;
    }
    // Digits running into the start of the kept tail: the count cannot be known, so no resync.
    const size = m[1] === '' ? Number.POSITIVE_INFINITY : literalSize(m[2]!);
    if (size > this.limits.maxLiteralSize) {
      this.state = 'dead';
      return { type: 'fatal', text: '', size };
    }
    this.state = 'skipLiteral';
    this.remaining = size;
    return null;
  }

  private reset(): void {
    this.state = 'line';
    this.text = '';
    this.literalEnds = [];
    this.literals = [];
    this.commandSize = 0;
    this.literal = null;
    this.remaining = 0;
    this.announced = 0;
  }
}

function literalSize(digits: string): number {
  // number64 in RFC 9051; anything past 15 digits is over every limit anyway.
  return digits.length > 15 ? Number.POSITIVE_INFINITY : Number(digits);
}
