// RFC 3977 section 3.1 (Commands and Responses): where one NNTP command line ends, framed by
// hand on octets.
//
// Why by hand and not with a stream splitter: TCP delivers bytes in any chunks. A CRLF can be
// split across two reads ("...\r" then "\n..."), a client may send a bare LF, and a line may
// never end. Every decision below depends only on the octets, never on the chunking, so that
// "CAPA" + "BILITIES\r" + "\n" is answered exactly like "CAPABILITIES\r\n": that is what the
// conformance suite's split-anywhere property checks.
//
// Rules:
//   - a line ends at LF; one CR just before it is dropped (RFC 3977 wants CRLF; INN also
//     takes a bare LF, and so do we); a CR anywhere else is line data;
//   - a line may be at most `maxLineLength` octets, line end included (RFC 3977 section 3.1:
//     512 octets including CRLF). A longer line is reported once as `tooLong` as soon as that
//     is certain, even before its LF arrives, and the rest of it is discarded up to its LF, so
//     an endless line costs no memory;
//   - octets after the line the session stops at (STARTTLS) stay here untouched: takeRest()
//     hands them out as the `trailing` bytes, never parsed.

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = new Uint8Array(0);

/** @typedef {{ type: 'line', text: string } | { type: 'tooLong' }} LineEvent */

export class LineFramer {
  /** @param {number} maxLineLength octets per line, line end included */
  constructor(maxLineLength) {
    this.max = maxLineLength;
    /** Storage; the pending octets are buf[pos, end). @type {Uint8Array} */
    this.buf = EMPTY;
    this.pos = 0;
    this.end = 0;
    /** Where the search for LF resumes: the pending octets are scanned once, not per read. */
    this.scanned = 0;
    /** Inside an overlong line, discarding up to its LF. */
    this.skipping = false;
  }

  /** @param {Uint8Array} data */
  push(data) {
    if (this.pos === this.end) {
      this.buf = data.slice();
      this.pos = this.scanned = 0;
      this.end = data.length;
      return;
    }
    if (this.end + data.length > this.buf.length) {
      // Copying the pending octets into a buffer of twice the need keeps a line sent one octet
      // per read O(n); joining them with every read would copy them again each time, O(n²).
      const pending = this.buf.subarray(this.pos, this.end);
      const grown = new Uint8Array(Math.max(256, (pending.length + data.length) * 2));
      grown.set(pending);
      this.scanned -= this.pos;
      this.pos = 0;
      this.end = pending.length;
      this.buf = grown;
    }
    this.buf.set(data, this.end);
    this.end += data.length;
  }

  /** The next complete event, or null when more octets are needed. @returns {LineEvent | null} */
  next() {
    for (;;) {
      const lf = this.buf.subarray(0, this.end).indexOf(LF, Math.max(this.pos, this.scanned));
      if (this.skipping) {
        this.pos = this.scanned = lf < 0 ? this.end : lf + 1; // discard, keep nothing
        if (lf < 0) return null;
        this.skipping = false;
        continue;
      }
      if (lf < 0) {
        this.scanned = this.end;
        if (this.end - this.pos >= this.max) {
          this.pos = this.end;
          this.skipping = true;
          return { type: 'tooLong' };
        }
        return null;
      }
      const start = this.pos;
      this.pos = this.scanned = lf + 1;
      if (lf + 1 - start > this.max) return { type: 'tooLong' };
      const end = lf > start && this.buf[lf - 1] === CR ? lf - 1 : lf;
      return { type: 'line', text: latin1(this.buf.subarray(start, end)) };
    }
  }

  /** Octets received but not framed yet, and forget them (after STARTTLS: `trailing`). */
  takeRest() {
    const rest = this.skipping ? EMPTY : this.buf.slice(this.pos, this.end);
    this.buf = EMPTY;
    this.pos = this.end = this.scanned = 0;
    this.skipping = false;
    return rest;
  }
}

/** One character per octet, so no input can fail to decode. @param {Uint8Array} bytes */
function latin1(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}
