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
