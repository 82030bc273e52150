// Shared test kit: drive one session with strings or bytes and read what it sent.
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { dialect, type XmppOptions } from '../src/index.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
export const enc = (s: string): Uint8Array => encoder.encode(s);
export const dec = (b: Uint8Array): string => decoder.decode(b);

export const SERVER_NAMES = ['localhost', 'example.test', '*.wild.example.test'];

export function newSession(
  options: Partial<XmppOptions> = {},
  limits: Record<string, number> = {},
  serverNames: readonly string[] = SERVER_NAMES,
): DialectSession {
  return dialect.create({
    options,
    limits,
    hostname: 'xmpp.example',
    connectionId: 'c0ffee',
    serverNames,
  });
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

/** Start a session, feed each chunk at time 0, return all actions after start. */
export function feed(
  chunks: (string | Uint8Array)[],
  options: Partial<XmppOptions> = {},
  limits: Record<string, number> = {},
  serverNames: readonly string[] = SERVER_NAMES,
): { session: DialectSession; actions: Action[]; text: string } {
  const session = newSession(options, limits, serverNames);
  session.start(0);
  const actions: Action[] = [];
  for (const c of chunks) actions.push(...session.receive(typeof c === 'string' ? enc(c) : c, 0));
  return { session, actions, text: written(actions) };
}

export function only<T extends Action['type']>(actions: Action[], type: T) {
  return actions.filter((a): a is Extract<Action, { type: T }> => a.type === type);
}

export const HEADER_C2S =
  "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
export const HEADER_S2S =
  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:server' to='example.test' from='other.example' version='1.0'>";
export const STARTTLS = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
export const FEATURES =
  "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>";
export const OUR_HEADER_C2S =
  "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='c0ffee' from='localhost' version='1.0' xml:lang='en'>";

export function streamError(condition: string, text?: string, extra = ''): string {
  const t =
    text === undefined ? '' : `<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>${text}</text>`;
  return `<stream:error><${condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>${t}${extra}</stream:error></stream:stream>`;
}
