// Shared test kit: drive one session with strings or bytes and read what it sent.
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { decUtf8 as dec, driver, encUtf8 as enc, only } from '@tlsproxy/dialect-kit/testing';
import { dialect, type XmppOptions } from '../src/index.js';

export { dec, enc, only };

export const SERVER_NAMES = ['localhost', 'example.test', '*.wild.example.test'];

const xmpp = driver<Partial<XmppOptions>>(dialect, {
  hostname: 'xmpp.example',
  connectionId: 'c0ffee',
  encode: enc,
  decode: dec,
});

/** Everything written to the client: send data and close data, in order. */
export const written = xmpp.written;

export function newSession(
  options: Partial<XmppOptions> = {},
  limits: Record<string, number> = {},
  serverNames: readonly string[] = SERVER_NAMES,
): DialectSession {
  return xmpp.newSession(options, limits, { serverNames });
}

/** Start a session, feed each chunk at time 0, return all actions after start. */
export function feed(
  chunks: (string | Uint8Array)[],
  options: Partial<XmppOptions> = {},
  limits: Record<string, number> = {},
  serverNames: readonly string[] = SERVER_NAMES,
): { session: DialectSession; actions: Action[]; text: string } {
  return xmpp.feed(chunks, options, limits, { serverNames });
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
