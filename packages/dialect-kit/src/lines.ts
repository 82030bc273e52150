// Line framing for the line-based protocols (RFC 5321 section 2.3.8, RFC 1939 section 3,
// RFC 9051 section 2.2, RFC 3977 section 3.1): where one client command line ends.
//
// Theory of operation: framing is done by hand on octets, never by a grammar, so nothing a
// client sends can move a line boundary. A line ends at LF; one CR before it is part of the
// terminator. A bare CR is line data (it never ends a line). A bare LF (no CR before it) ends the
// line too and is reported (`bareLf`), so the dialect applies its own policy (SMTP refuses it,
// POP3 and IMAP accept it as Dovecot does). A line whose content (terminator not counted) is
// longer than `maxContent` is reported once as `tooLong` and the rest of it, up to its LF, is
// discarded unread. Every decision depends only on the octets, never on how they were chunked.
//
// A pending line is kept once, in the input queue, and scanned once: the search for LF resumes
// where the previous read stopped (issue 14: re-scanning or re-copying the pending octets on
// every read costs O(n²) for a line sent one octet at a time).
import { ByteQueue, latin1 } from './bytes.js';

export type LineEvent =
  /** A complete line: `text` without its terminator (latin1), `raw` exactly as received. */
  | { type: 'line'; text: string; raw: Uint8Array; bareLf: boolean }
  /** A line over the limit; everything up to its LF is discarded, never interpreted. */
  | { type: 'tooLong' };

const LF = 0x0a;
const CR = 0x0d;

export class LineFramer {
  private readonly input = new ByteQueue();
  /** Octets of the pending line already searched for LF. */
  private scanned = 0;
  private skipping = false;
  /** Octets still to discard unread (e.g. the chunk data of a refused SMTP BDAT). */
  private skipOctets = 0;

  private readonly countsTerminator: boolean;

  /**
   * @param max longest line in octets: its content, or (with `countsTerminator`) the line as
   *   received with its CRLF or LF, as RFC 3977 section 3.1 counts NNTP's 512.
   */
  constructor(
    private readonly max: number,
    options: { countsTerminator?: boolean } = {},
  ) {
    this.countsTerminator = options.countsTerminator ?? false;
  }

  push(data: Uint8Array): void {
    this.input.append(data);
  }

  /** Octets received but not framed yet (after STARTTLS: the trailing data). */
  takeRest(): Uint8Array {
    this.scanned = 0;
    return this.input.take();
  }

  /** Discard the next `size` octets unread. */
  skip(size: number): void {
    this.skipOctets += size;
  }

  /** Octets received and not framed yet. */
  get pending(): number {
    return this.input.length;
  }

  next(): LineEvent | null {
    for (;;) {
      if (this.skipOctets > 0) {
        const take = Math.min(this.skipOctets, this.input.length);
        this.drop(take);
        this.skipOctets -= take;
        if (this.skipOctets > 0) return null;
      }
      const buf = this.input.view();
      if (buf.length === 0) return null;
      const lf = findByte(buf, LF, this.scanned);
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
        // Over the limit as soon as that is certain: whatever ends the line will not fit. (When
        // the terminator is not counted, the octet past the limit may still be the CR of a CRLF.)
        if (this.countsTerminator ? buf.length >= this.max : buf.length > this.max + 1) {
          this.drop(buf.length);
          this.skipping = true;
          return { type: 'tooLong' };
        }
        return null;
      }
      const crlf = lf > 0 && buf[lf - 1] === CR;
      const end = crlf ? lf - 1 : lf;
      if (this.countsTerminator ? lf + 1 > this.max : end > this.max) {
        this.drop(lf + 1);
        return { type: 'tooLong' };
      }
      const raw = buf.slice(0, lf + 1);
      this.drop(lf + 1);
      return { type: 'line', text: latin1(raw.subarray(0, end)), raw, bareLf: !crlf };
    }
  }

  private drop(n: number): void {
    this.input.consume(n);
    this.scanned = 0;
  }
}

/** Index of `byte` in `buf` at or after `from`, or -1: a resumable search (keep `from`). */
export function findByte(buf: Uint8Array, byte: number, from = 0): number {
  return buf.indexOf(byte, from);
}

/**
 * The command word of a line, upper-cased (ASCII only, so a client's 'ſ' or 'ı' cannot fold onto
 * a command name as `toUpperCase` would): up to the first space, or the whole line.
 */
export function commandWord(line: string): string {
  const sp = line.indexOf(' ');
  return upperAscii(sp < 0 ? line : line.slice(0, sp));
}

/** Upper-case a-z only. */
export function upperAscii(s: string): string {
  return s.replace(/[a-z]+/g, (m) => m.toUpperCase());
}

/**
 * A case-insensitive command table: a `Map` keyed by the upper-cased name, so input never selects
 * a handler through a plain object (`constructor`, `__proto__`).
 */
export class CommandTable<H> {
  private readonly table: Map<string, H>;
  constructor(entries: Iterable<readonly [string, H]>) {
    this.table = new Map([...entries].map(([k, v]) => [upperAscii(k), v] as const));
  }
  /** The handler for `name` in any case, or undefined. */
  get(name: string): H | undefined {
    return this.table.get(upperAscii(name));
  }
  has(name: string): boolean {
    return this.table.has(upperAscii(name));
  }
  /** The known names, upper-cased (for logging only known names). */
  names(): ReadonlySet<string> {
    return new Set(this.table.keys());
  }
}
