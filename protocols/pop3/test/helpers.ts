// Shared test kit: drive one session with strings or bytes and read what it sent.
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { dialect, type Pop3Options } from '../src/index.js';

export const enc = (s: string): Uint8Array => new Uint8Array([...s].map((c) => c.charCodeAt(0)));
export const dec = (b: Uint8Array): string => String.fromCharCode(...b);

export function newSession(
  options: Partial<Pop3Options> = {},
  limits: Record<string, number> = {},
): DialectSession {
  return dialect.create({ options, limits, hostname: 'mail.example', connectionId: 't1' });
}

/** Everything written to the client: send data and close data, in order. */
export function written(actions: Action[]): string {
  let out = '';
  for (const a of actions) {
    if (a.type === 'send') out += dec(a.data);
    if (a.type === 'close' && a.data) out += dec(a.data);
  }
  return out;
}

/** Start a session, feed each chunk at time 0, return all actions after the greeting. */
export function feed(
  chunks: (string | Uint8Array)[],
  options: Partial<Pop3Options> = {},
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
