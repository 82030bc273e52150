// RFC 1939 section 3 (commands end with CRLF) and RFC 2449 section 4 (Parameter and Response
// Lengths: a command is at most 255 octets, including the terminating CRLF): where one client
// command line ends.
//
// Theory of operation: framing is done by hand on octets, never by the grammar, so nothing a
// client sends can move a line boundary. A line ends at LF; one CR before it is dropped (clients
// must send CRLF; a bare LF is accepted too, as Dovecot does). A bare CR is line data, so it can
// never end a line. A line whose content (without its terminator) is longer than
// `maxContent` is reported once as `tooLong` and the rest of it, up to its LF, is discarded.
// Every decision depends only on the octets, never on how they were chunked: that is what the
// split-anywhere property tests check.
import { concat, latin1 } from './bytes.js';

export type FrameEvent =
  /** One command line, terminator removed, decoded as latin1. */
  | { type: 'line'; text: string }
  /** A line over the limit; everything up to its LF is discarded, never interpreted. */
  | { type: 'tooLong' };

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = new Uint8Array(0);

export class Framer {
  private buf: Uint8Array = EMPTY;
  private pos = 0;
  private line: Uint8Array[] = [];
  private lineLength = 0;
  private skipping = false;

  /** @param maxContent longest line content in octets, CRLF not counted. */
  constructor(private readonly maxContent: number) {}

  push(data: Uint8Array): void {
    const rest = this.buf.subarray(this.pos);
    this.buf = rest.length === 0 ? data.slice() : concat([rest, data]);
    this.pos = 0;
  }

  /** Octets received but not framed yet (after STLS: the trailing data). */
  takeRest(): Uint8Array {
    const rest = this.buf.slice(this.pos);
    this.buf = EMPTY;
    this.pos = 0;
    return rest;
  }

  next(): FrameEvent | null {
    while (this.pos < this.buf.length) {
      const lf = this.buf.indexOf(LF, this.pos);
      const end = lf < 0 ? this.buf.length : lf;
      if (this.skipping) {
        this.pos = end;
        if (lf < 0) return null;
        this.pos = lf + 1;
        this.skipping = false;
        continue;
      }
      this.line.push(this.buf.slice(this.pos, end));
      this.lineLength += end - this.pos;
      this.pos = end;
      if (lf < 0) {
        // +1: the octet past the limit may still be the CR of a CRLF.
        if (this.lineLength > this.maxContent + 1) {
          this.clearLine();
          this.skipping = true;
          return { type: 'tooLong' };
        }
        return null;
      }
      this.pos = lf + 1;
      const raw = concat(this.line);
      this.clearLine();
      const content = raw.length > 0 && raw[raw.length - 1] === CR ? raw.subarray(0, -1) : raw;
      if (content.length > this.maxContent) return { type: 'tooLong' };
      return { type: 'line', text: latin1(content) };
    }
    return null;
  }

  private clearLine(): void {
    this.line = [];
    this.lineLength = 0;
  }
}
