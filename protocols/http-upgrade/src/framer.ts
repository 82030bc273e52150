// RFC 9112 section 2.2 (Message Parsing), section 3 (Request Line) and section 5 (Field Syntax):
// where the request head (request line, field lines, empty line) ends.
//
// Theory of operation: framing is done by hand on octets, never by the grammar. A line ends at
// LF; one CR right before it is dropped (RFC 9112 section 2.2 lets a recipient take a bare LF as
// a line end); a bare CR anywhere else is refused (section 2.2: "MUST consider that element to
// be invalid"). While a line arrives, each octet is checked in O(1) against what the grammar can
// still match (parse.ts), so the first octet that cannot be HTTP ends the request with 400 at
// once; the grammar itself runs once per complete line, so a pending line costs its own octets
// and a constant, never a parse per octet (issue 14). Each octet is judged in a
// fixed order — grammar, line length, head size — and never by how TCP chunked the input, so
// any split of the same bytes gives the same outcome (the property tests check this).
//
// Before the request line, empty lines are skipped (RFC 9112 section 2.2: a server SHOULD
// ignore at least one). A field line starting with SP or HTAB is obs-fold (or whitespace after
// the request line): refused with 400 as section 5.2 and 2.2 allow.

import { type ByteBuffer, latin1 } from '@tlsproxy/dialect-kit';
import { HttpProtocolError } from './errors.js';
import { LineChecker, type RequestLine } from './parse.js';

export interface FramerLimits {
  maxRequestLineLength: number;
  maxFieldLineLength: number;
  maxHeaderSize: number;
  maxHeaderFields: number;
}

export interface Head {
  request: RequestLine;
  /** Field lines in order, names as received. */
  headers: [string, string][];
  /** Octets of the head, leading empty lines and the final empty line included. */
  size: number;
}

/** Empty lines skipped before the request line; more is not a client being robust. */
export const MAX_LEADING_EMPTY_LINES = 8;

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HTAB = 0x09;

/**
 * Reads the head from `input`, the session's buffer of every octet received (the session
 * appends, the framer only reads): a pending line costs its own octets once, nothing more.
 */
export class Framer {
  private pos = 0;
  private lineStart = 0;
  private phase: 'start' | 'fields' | 'done' = 'start';
  private line: LineChecker | null = null;
  private lineLength = 0;
  private pendingCR = false;
  private size = 0;
  private emptyLines = 0;
  private request: RequestLine | null = null;
  private headers: [string, string][] = [];
  /** Set when a line had more than one parse (a grammar bug the session logs). */
  ambiguous = false;
  private buf: Uint8Array;

  constructor(
    private readonly limits: FramerLimits,
    private readonly input: ByteBuffer,
  ) {
    this.buf = input.view();
  }

  /** The complete head, or null for "need more"; throws HttpProtocolError on bad input. */
  next(): Head | null {
    this.buf = this.input.view();
    while (this.phase !== 'done' && this.pos < this.buf.length) {
      const b = this.buf[this.pos]!;
      if (this.pendingCR) {
        if (b !== LF) throw syntax('bare CR in the request head');
        this.pendingCR = false;
        this.take(1);
        const head = this.endLine();
        if (head) return head;
        continue;
      }
      if (b === CR || b === LF) {
        this.take(1);
        if (b === CR) {
          this.pendingCR = true;
          continue;
        }
        const head = this.endLine();
        if (head) return head;
        continue;
      }
      this.content();
    }
    return null;
  }

  /** Line content up to the next CR or LF (or the end of what arrived). */
  private content(): void {
    if (this.lineLength === 0 && this.phase === 'fields') {
      const b = this.buf[this.pos]!;
      if (b === SP || b === HTAB) {
        throw new HttpProtocolError(
          'TLSPROXY_ERR_HTTP_OBS_FOLD',
          400,
          this.headers.length === 0
            ? 'whitespace between the request line and the first field'
            : 'obs-fold (a field line continued on the next line)',
        );
      }
    }
    let end = this.pos;
    while (end < this.buf.length && this.buf[end] !== CR && this.buf[end] !== LF) end++;
    const isRequest = this.phase === 'start';
    const lineLimit = isRequest ? this.limits.maxRequestLineLength : this.limits.maxFieldLineLength;
    const n = Math.min(
      end - this.pos,
      lineLimit - this.lineLength,
      this.limits.maxHeaderSize - this.size,
    );
    if (this.line === null) {
      this.line = new LineChecker(isRequest ? 'request' : 'field');
      this.lineStart = this.pos;
    }
    if (n > 0 && !this.line.feed(this.buf.subarray(this.pos, this.pos + n))) {
      throw syntax(isRequest ? 'malformed request line' : 'malformed field line');
    }
    this.lineLength += n;
    this.take(n);
    if (this.pos === end) return;
    if (this.lineLength >= lineLimit) {
      throw isRequest
        ? new HttpProtocolError('TLSPROXY_ERR_HTTP_LINE_TOO_LONG', 414, 'request line too long')
        : tooLarge('a field line is too long');
    }
    throw tooLarge('request head too large');
  }

  /** Count `n` octets into the head; the CR and LF count too. */
  private take(n: number): void {
    this.pos += n;
    this.size += n;
    if (this.size > this.limits.maxHeaderSize) throw tooLarge('request head too large');
  }

  private endLine(): Head | null {
    const line = this.line;
    const empty = this.lineLength === 0;
    const text = empty
      ? ''
      : latin1(this.buf.subarray(this.lineStart, this.lineStart + this.lineLength));
    this.line = null;
    this.lineLength = 0;
    if (this.phase === 'start') {
      if (empty) {
        if (++this.emptyLines > MAX_LEADING_EMPTY_LINES) throw syntax('too many empty lines');
        return null;
      }
      const r = line!.finishRequest(text);
      if (!r.ok) {
        this.ambiguous ||= r.reason === 'ambiguous';
        throw syntax('malformed request line');
      }
      this.request = r.value;
      this.phase = 'fields';
      return null;
    }
    if (empty) {
      this.phase = 'done';
      return { request: this.request!, headers: this.headers, size: this.size };
    }
    const f = line!.finishField(text);
    if (!f.ok) {
      this.ambiguous ||= f.reason === 'ambiguous';
      throw syntax('malformed field line');
    }
    this.headers.push(f.value);
    if (this.headers.length > this.limits.maxHeaderFields) throw tooLarge('too many header fields');
    return null;
  }
}

function syntax(message: string): HttpProtocolError {
  return new HttpProtocolError('TLSPROXY_ERR_HTTP_SYNTAX', 400, message);
}

function tooLarge(message: string): HttpProtocolError {
  return new HttpProtocolError('TLSPROXY_ERR_HTTP_HEADER_TOO_LARGE', 431, message);
}
