// A minimal XMPP server for the end-to-end tests, on @tlsproxy/backend: it accept()s the
// connections tlsproxy hands off after <proceed/> and the TLS handshake, and speaks to the
// client's NEW stream (RFC 6120 section 5.4.3.3) on the plaintext socket: features with SASL
// PLAIN (section 6), <success/>, stream restart, resource binding (section 7). Hand-rolled on
// saxes; just enough XMPP for @xmpp/client and openssl s_client.
import type net from 'node:net';
import { type BackendServer, type HandoffInfo, listen } from '@tlsproxy/backend';
import { SaxesParser } from 'saxes';

export interface Session {
  info: HandoffInfo;
  /** Every top-level element the client sent, as its qualified name, in order. */
  elements: string[];
  /** The first bytes the backend read on the socket (must be the client's new stream). */
  first: string;
  authenticatedAs?: string;
  boundJid?: string;
}

export interface XmppBackend {
  path: string;
  sessions: Session[];
  close(): Promise<void>;
}

const HEADER = (id: string) =>
  `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='${id}' from='localhost' version='1.0' xml:lang='en'>`;

interface Node {
  name: string;
  attrs: Record<string, string>;
  children: Node[];
  text: string;
}

function serve(socket: net.Socket, info: HandoffInfo, session: Session): void {
  let authenticated = false;
  let parser: SaxesParser;
  let stack: Node[] = [];
  const send = (s: string) => socket.write(s);

  const reset = () => {
    parser = new SaxesParser({ xmlns: false });
    stack = [];
    parser.on('opentag', (t) => {
      const node: Node = {
        name: t.name,
        attrs: t.attributes as Record<string, string>,
        children: [],
        text: '',
      };
      if (stack.length === 0) {
        // a new stream header: ours, then features for this stage
        send(HEADER(`${info.connectionId}-${authenticated ? 2 : 1}`));
        send(
          authenticated
            ? "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
            : "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
        );
      } else {
        stack.at(-1)!.children.push(node);
      }
      stack.push(node);
    });
    parser.on('text', (t) => {
      if (stack.length > 0) stack.at(-1)!.text += t;
    });
    parser.on('closetag', () => {
      const node = stack.pop()!;
      if (stack.length === 0) {
        send('</stream:stream>');
        socket.end();
      } else if (stack.length === 1) {
        session.elements.push(node.name);
        element(node);
      }
    });
    parser.on('error', () => {
      send(
        "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
      );
      socket.end();
    });
  };

  const element = (node: Node) => {
    if (node.name === 'auth' && !authenticated) {
      const [, user, pass] = Buffer.from(node.text, 'base64').toString('utf8').split('\0');
      if (user === 'alice' && pass === 'secret') {
        authenticated = true;
        session.authenticatedAs = user;
        send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        reset(); // RFC 6120 section 6.4.6: the client restarts the stream
      } else {
        send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>");
      }
      return;
    }
    if (node.name === 'iq' && authenticated) {
      const bind = node.children.find((c) => c.name === 'bind');
      if (bind) {
        const resource = bind.children.find((c) => c.name === 'resource')?.text || 'tlsproxy';
        session.boundJid = `alice@localhost/${resource}`;
        send(
          `<iq type='result' id='${node.attrs.id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>${session.boundJid}</jid></bind></iq>`,
        );
        return;
      }
      send(
        `<iq type='error' id='${node.attrs.id}'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`,
      );
      return;
    }
    if (node.name === 'starttls') {
      // STARTTLS inside TLS: RFC 6120 section 5.3.1, not offered, so a failure.
      send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>");
      socket.end();
    }
  };

  reset();
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    if (session.first.length < 200) session.first += d.slice(0, 200 - session.first.length);
    parser.write(d);
  });
  socket.on('error', () => {});
}

export async function startXmppBackend(path: string): Promise<XmppBackend> {
  const server: BackendServer = await listen({ path });
  const sessions: Session[] = [];
  void (async () => {
    for await (const { socket, info } of server) {
      const session: Session = { info, elements: [], first: '' };
      sessions.push(session);
      serve(socket, info, session);
    }
  })();
  return { path, sessions, close: () => server.close() };
}
