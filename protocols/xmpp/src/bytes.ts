// https://xmpp.org/rfcs/rfc6120.html#xml-encoding (RFC 6120 section 11.6): XMPP is UTF-8 on the
// wire. Action builders and the escaping of the few values we echo live here, because a dialect
// imports only types from core, never its code.
import type { Action } from '@tlsproxy/core/dialect';

const encoder = new TextEncoder();

export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Escape for an XML attribute value in single quotes or for character data. */
export function escapeXml(s: string): string {
  return s.replace(
    /[&<>'"]/g,
    (c) => `&${{ '&': 'amp', '<': 'lt', '>': 'gt', "'": 'apos', '"': 'quot' }[c]};`,
  );
}

export const act = {
  send: (text: string): Action => ({ type: 'send', data: utf8(text) }),
  close: (reason: string, text?: string): Action =>
    text === undefined || text === ''
      ? { type: 'close', reason }
      : { type: 'close', reason, data: utf8(text) },
  timer: (at: number): Action => ({ type: 'timer', at }),
  log: (level: 'debug' | 'info' | 'warn' | 'error', message: string): Action => ({
    type: 'log',
    level,
    message,
  }),
};

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
