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
