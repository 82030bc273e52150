// Shared test kit: drive one session with strings or bytes and read what it sent.
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { dialect, type HttpUpgradeOptions } from '../src/index.js';

export const enc = (s: string): Uint8Array => new Uint8Array([...s].map((c) => c.charCodeAt(0)));
export const dec = (b: Uint8Array): string => String.fromCharCode(...b);

export function newSession(
  options: Partial<HttpUpgradeOptions> = {},
  limits: Record<string, number> = {},
): DialectSession {
  return dialect.create({ options, limits, hostname: 'www.example', connectionId: 't1' });
}

/** Everything written to the client: send data, close data and the go-ahead, in order. */
export function written(actions: Action[]): string {
  let out = '';
  for (const a of actions) {
    if (a.type === 'send') out += dec(a.data);
    if (a.type === 'close' && a.data) out += dec(a.data);
    if (a.type === 'starttls') out += dec(a.goAhead);
  }
  return out;
}

/** Start a session at time 0, feed each chunk, return all actions after start(). */
export function feed(
  chunks: (string | Uint8Array)[],
  options: Partial<HttpUpgradeOptions> = {},
  limits: Record<string, number> = {},
): { session: DialectSession; actions: Action[]; text: string } {
  const session = newSession(options, limits);
  session.start(0);
  const actions: Action[] = [];
  for (const c of chunks) actions.push(...session.receive(typeof c === 'string' ? enc(c) : c, 0));
  return { session, actions, text: written(actions) };
}

export function only<T extends Action['type']>(actions: Action[], type: T) {
  return actions.filter((a): a is Extract<Action, { type: T }> => a.type === type);
}

/** The status line of the first response written. */
export const status = (text: string): string => text.split('\r\n')[0] ?? '';

/** An upgrade request as CUPS sends it (cups/http.c http_send with HTTP_FIELD_UPGRADE). */
export const CUPS_UPGRADE =
  'OPTIONS * HTTP/1.1\r\nDate: Thu, 27 Nov 2025 07:00:00 GMT\r\nAccept-Language: en-US\r\n' +
  'Connection: Upgrade\r\nHost: localhost:631\r\nUpgrade: TLS/1.2,TLS/1.1,TLS/1.0\r\n' +
  'User-Agent: CUPS/2.4.2 (Linux 6.1; x86_64) IPP/2.0\r\n\r\n';

export const UPGRADE =
  'OPTIONS * HTTP/1.1\r\nHost: a\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\n\r\n';
