// RFC 5321 section 2.4 (General Syntax Principles) and 2.3.8 (Lines): commands are octets; they
// are decoded as latin1 so one char is one octet (UTF-8 stays as its bytes); replies are ASCII.
// Action builders live here because a dialect imports only types from core, never its code.
import type { Action } from '@tlsproxy/core/dialect';

const encoder = new TextEncoder();

export function ascii(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Octets to a string of chars 0-255. TextDecoder('latin1') is windows-1252, so not that. */
export function latin1(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
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

export const act = {
  send: (text: string): Action => ({ type: 'send', data: ascii(text) }),
  close: (reason: string, text?: string): Action =>
    text === undefined ? { type: 'close', reason } : { type: 'close', reason, data: ascii(text) },
  timer: (at: number): Action => ({ type: 'timer', at }),
  log: (level: 'debug' | 'info' | 'warn' | 'error', message: string): Action => ({
    type: 'log',
    level,
    message,
  }),
  /**
   * A pre-TLS command for the engine's logs and `tlsproxy_bad_commands_total` (`bad`: refused as
   * malformed or unknown). Only names from the dialect's own command table are reported, as
   * `unknown` otherwise, so a client's words (a password typed as a command) never reach a log.
   */
  command: (name: string | null, bad: boolean, known: ReadonlySet<string>): Action => ({
    type: 'log',
    level: bad ? 'info' : 'debug',
    message: bad ? 'bad command' : 'command',
    event: bad ? 'bad-command' : 'command',
    command: name !== null && known.has(name.toUpperCase()) ? name.toUpperCase() : 'unknown',
  }),
};

/**
 * Octets appended in any chunking, stored contiguously: the storage doubles, so a client
 * sending one octet per read costs its octets (at most twice), not an object per read.
 */
export class ByteBuffer {
  private store = new Uint8Array(0);
  length = 0;

  append(data: Uint8Array): void {
    if (this.length + data.length > this.store.length) {
      const grown = new Uint8Array(Math.max(64, (this.length + data.length) * 2));
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
