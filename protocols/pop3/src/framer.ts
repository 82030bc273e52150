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
//
// A pending line is kept once, in the input queue, and scanned once: the search for LF resumes
// where the previous read stopped (issue 14: re-scanning or re-copying the pending octets on
// every read costs O(n²) for a line sent one octet at a time).
import { ByteQueue, latin1 } from './bytes.js';

export type FrameEvent =
  /** One command line, terminator removed, decoded as latin1. */
  | { type: 'line'; text: string }
  /** A line over the limit; everything up to its LF is discarded, never interpreted. */
  | { type: 'tooLong' };

const LF = 0x0a;
const CR = 0x0d;

export class Framer {
  private readonly input = new ByteQueue();
  /** Octets of the pending line already searched for LF. */
  private scanned = 0;
  private skipping = false;

  /** @param maxContent longest line content in octets, CRLF not counted. */
  constructor(private readonly maxContent: number) {}

  push(data: Uint8Array): void {
    this.input.append(data);
  }

  /** Octets received but not framed yet (after STLS: the trailing data). */
  takeRest(): Uint8Array {
    this.scanned = 0;
    return this.input.take();
  }

  next(): FrameEvent | null {
    for (;;) {
      const buf = this.input.view();
      if (buf.length === 0) return null;
      const lf = buf.indexOf(LF, this.scanned);
      if (lf < 0) {
        this.scanned = buf.length;
        if (this.skipping) {
          this.drop(buf.length);
          return null;
        }
        // +1: the octet past the limit may still be the CR of a CRLF.
        if (buf.length > this.maxContent + 1) {
          this.drop(buf.length);
          this.skipping = true;
          return { type: 'tooLong' };
        }
        return null;
      }
      if (this.skipping) {
        this.drop(lf + 1);
        this.skipping = false;
        continue;
      }
      const end = lf > 0 && buf[lf - 1] === CR ? lf - 1 : lf;
      const text = end > this.maxContent ? null : latin1(buf.subarray(0, end));
      this.drop(lf + 1);
      if (text === null) return { type: 'tooLong' };
      return { type: 'line', text };
    }
  }

  private drop(n: number): void {
    this.input.consume(n);
    this.scanned = 0;
  }
}
