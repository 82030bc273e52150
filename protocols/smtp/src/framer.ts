// RFC 5321 section 2.3.8 (Lines) and 4.5.3.1.4 (Command Line): where one client command ends.
//
// Theory of operation: framing is done by hand on octets, never by the grammar, so nothing a
// client sends can move a command boundary. A command is one line; it ends at LF, and one CR
// before the LF is part of the terminator. A bare CR is line data (it never ends a line). A bare
// LF (no CR before it) ends the line too and is reported, so the session can apply its policy
// (RFC 5321 section 2.3.8 says a server should not accept it; see README, "Line endings").
//
// A line longer than the limit is reported once as `tooLong` and the rest of it, up to its LF,
// is discarded. The chunk data after a refused BDAT is skipped by count. Every decision depends
// only on the octets, never on how they were chunked: the split-anywhere property tests check it.
//
// A pending line is kept once, in the input queue, and scanned once: the search for LF resumes
// where the previous read stopped (issue 14: re-copying and re-scanning the pending octets on
// every read cost O(n²) for a line sent one octet at a time).
import { ByteQueue, latin1 } from './bytes.js';

export type FrameEvent =
  /** A complete line. `text` has no terminator; `raw` is the line exactly as received. */
  | { type: 'line'; text: string; raw: Uint8Array; bareLf: boolean }
  /** A line over the limit; it is being discarded up to its end. */
  | { type: 'tooLong' };

const LF = 0x0a;
const CR = 0x0d;

export class Framer {
  private readonly input = new ByteQueue();
  /** Octets of the pending line already searched for LF. */
  private scanned = 0;
  private skipping = false;
  /** Octets of refused BDAT chunk data still to discard. */
  private skipOctets = 0;
  /** Longest line content, terminator not counted. */
  private readonly maxContent: number;

  /** `maxLineLength` counts the CRLF, as RFC 5321 section 4.5.3.1.4 does. */
  constructor(maxLineLength: number) {
    this.maxContent = Math.max(0, maxLineLength - 2);
  }

  push(data: Uint8Array): void {
    this.input.append(data);
  }

  /** Octets received but not framed yet (after STARTTLS: the trailing data). */
  takeRest(): Uint8Array {
    this.scanned = 0;
    return this.input.take();
  }

  /** Discard the next `size` octets unread: the chunk data of a refused BDAT (RFC 3030). */
  skip(size: number): void {
    this.skipOctets += size;
  }

  next(): FrameEvent | null {
    for (;;) {
      if (this.skipOctets > 0) {
        const take = Math.min(this.skipOctets, this.input.length);
        this.drop(take);
        this.skipOctets -= take;
        if (this.skipOctets > 0) return null;
      }
      const buf = this.input.view();
      if (buf.length === 0) return null;
      const lf = buf.indexOf(LF, this.scanned);
      if (this.skipping) {
        if (lf < 0) {
          this.drop(buf.length);
          return null;
        }
        this.drop(lf + 1);
        this.skipping = false;
        continue;
      }
      if (lf < 0) {
        this.scanned = buf.length;
        // +1: the octet past the limit may still be the CR of a CRLF.
        if (buf.length > this.maxContent + 1) {
          this.drop(buf.length);
          this.skipping = true;
          return { type: 'tooLong' };
        }
        return null;
      }
      const raw = buf.slice(0, lf + 1);
      this.drop(lf + 1);
      const crlf = raw.length >= 2 && raw[raw.length - 2] === CR;
      const content = raw.subarray(0, raw.length - (crlf ? 2 : 1));
      if (content.length > this.maxContent) return { type: 'tooLong' };
      return { type: 'line', text: latin1(content), raw, bareLf: !crlf };
    }
  }

  private drop(n: number): void {
    this.input.consume(n);
    this.scanned = 0;
  }
}
