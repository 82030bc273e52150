// Octets on the wire: the text protocols (IMAP, POP3, SMTP, HTTP) decode command octets as
// latin1 so one char is one octet (UTF-8 in arguments stays as its bytes) and reply in ASCII;
// XMPP is UTF-8. One copy of the buffers every dialect frames with (issue 14's O(n) rules).

const encoder = new TextEncoder();

/** Strings up to this long are encoded in JS when they are ASCII (see `ascii`). */
const SHORT = 64;

/** ASCII (or UTF-8) text to octets. */
export function ascii(s: string): Uint8Array {
  // Replies and greetings are short ASCII: a JS loop into a small (on-heap) array costs a
  // quarter of TextEncoder's call into C++ for them, per reply, on every connection.
  // Anything longer, or any char past 0x7f, is the encoder's.
  if (s.length > SHORT) return encoder.encode(s);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return encoder.encode(s);
    out[i] = c;
  }
  return out;
}

/** UTF-8 text to octets (the same encoder as `ascii`; the name says what the protocol uses). */
export const utf8 = ascii;

/** Octets to a string of chars 0-255. TextDecoder('latin1') is windows-1252, so not that. */
export function latin1(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4096) {
    // apply() takes the typed array as it is; spreading it ran its iterator (~4x slower).
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096) as unknown as number[]);
  }
  return out;
}

/** A string of chars 0-255 back to its octets (the inverse of `latin1`). */
export function fromLatin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let size = 0;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Octets appended in any chunking, stored contiguously: the storage doubles, so a client
 * sending one octet per read costs its octets (at most twice), not an object per read.
 */
export class ByteBuffer {
  private store = new Uint8Array(0);
  length = 0;

  append(data: Uint8Array): void {
    if (this.length + data.length > this.store.length) {
      const grown = new Uint8Array(Math.max(256, (this.length + data.length) * 2));
      grown.set(this.store.subarray(0, this.length));
      this.store = grown;
    }
    this.store.set(data, this.length);
    this.length += data.length;
  }

  /** A view of everything appended; valid until the next append or clear. */
  view(): Uint8Array {
    return this.store.subarray(0, this.length);
  }

  /** Forget everything (and the storage: views taken before stay valid). */
  clear(): void {
    this.store = new Uint8Array(0);
    this.length = 0;
  }
}

/**
 * Octets received and not consumed yet, stored once. Appending is amortized O(octets): the
 * storage doubles when full, and consumed octets are reclaimed by moving the rest down only
 * when that frees at least half of it. So a client sending one octet per read never makes us
 * copy everything pending on every read (O(n²) for a line arriving octet by octet).
 */
export class ByteQueue {
  private store = new Uint8Array(0);
  private start = 0;
  private end = 0;

  get length(): number {
    return this.end - this.start;
  }

  /** The pending octets; a view, valid until the next append, consume or take. */
  view(): Uint8Array {
    return this.store.subarray(this.start, this.end);
  }

  append(data: Uint8Array): void {
    const n = data.length;
    if (n === 0) return;
    if (this.end + n > this.store.length) {
      const live = this.end - this.start;
      if ((live + n) * 2 <= this.store.length) {
        this.store.copyWithin(0, this.start, this.end);
      } else {
        const grown = new Uint8Array(Math.max(256, (live + n) * 2));
        grown.set(this.store.subarray(this.start, this.end));
        this.store = grown;
      }
      this.start = 0;
      this.end = live;
    }
    this.store.set(data, this.end);
    this.end += n;
  }

  /** Drop the first `n` pending octets. */
  consume(n: number): void {
    this.start = Math.min(this.end, this.start + n);
    if (this.start < this.end) return;
    this.start = 0;
    this.end = 0;
    // Nothing pending: give a large buffer back rather than keep it for an idle client.
    if (this.store.length > 4096) this.store = new Uint8Array(0);
  }

  /** Everything pending, copied; the queue is then empty. */
  take(): Uint8Array {
    const out = this.view().slice();
    this.consume(out.length);
    return out;
  }
}

/** Octets as base64 (hand-off state carries octets as base64 strings). */
export function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}
