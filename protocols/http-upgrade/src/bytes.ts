// RFC 9112 section 2.2 (Message Parsing): HTTP/1.1 messages are octets, parsed in a superset of
// US-ASCII. Lines are decoded as latin1 so one char is one octet (obs-text stays as its bytes);
// responses are ASCII. Action builders live here because a dialect imports only types from
// core, never its code.
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

/**
 * Octets appended in any chunking, stored contiguously: capacity doubles, so a client sending
 * one octet per read costs its octets (at most twice), not an object per read.
 */
export class ByteBuffer {
  private bytes = new Uint8Array(256);
  length = 0;

  append(data: Uint8Array): void {
    if (this.length + data.length > this.bytes.length) {
      let size = Math.max(256, this.bytes.length * 2);
      while (size < this.length + data.length) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
    }
    this.bytes.set(data, this.length);
    this.length += data.length;
  }

  /** Forget everything (views taken before stay valid). */
  clear(): void {
    this.bytes = new Uint8Array(0);
    this.length = 0;
  }

  /** A view of everything appended (valid until the next append). */
  view(): Uint8Array {
    return this.bytes.subarray(0, this.length);
  }
}

export function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export const act = {
  send: (data: Uint8Array): Action => ({ type: 'send', data }),
  close: (reason: string, data?: Uint8Array): Action =>
    data === undefined ? { type: 'close', reason } : { type: 'close', reason, data },
  timer: (at: number): Action => ({ type: 'timer', at }),
  log: (level: 'debug' | 'info' | 'warn' | 'error', message: string): Action => ({
    type: 'log',
    level,
    message,
  }),
};
