// Demo XMPP backend (RFC 6120, the part after STARTTLS only), after
// protocols/xmpp/test/xmpp-backend.ts but without an XML library: it answers the client's NEW
// stream (section 5.4.3.3) with SASL PLAIN (any user and password, section 6), a stream restart,
// resource binding (section 7), then a headline message with the hand-off info. The tag scanner
// knows just enough XML for that (no DTDs, no entities beyond the five predefined ones).
import type net from 'node:net';
import type { HandoffInfo } from '@tlsproxy/backend';
import { handoffSummary, type Serve } from './common.js';

const MAX_BUFFER = 64 * 1024;
const NS_STREAM = 'http://etherx.jabber.org/streams';

const esc = (s: string) =>
  s.replace(
    /[<>&'"]/g,
    (c) => `&${{ '<': 'lt', '>': 'gt', '&': 'amp', "'": 'apos', '"': 'quot' }[c]};`,
  );
const unesc = (s: string) =>
  s.replace(
    /&(lt|gt|amp|apos|quot);/g,
    (_, e: string) => ({ lt: '<', gt: '>', amp: '&', apos: "'", quot: '"' })[e] ?? '',
  );

/** End of the tag that starts at `i` (index after its '>'), quote-aware; -1 if incomplete. */
function tagEnd(s: string, i: number): number {
  let quote = '';
  for (let j = i + 1; j < s.length; j++) {
    const c = s[j]!;
    if (quote) {
      if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '>') return j + 1;
  }
  return -1;
}

const nameOf = (tag: string) => /^<\/?([^\s/>]+)/.exec(tag)?.[1] ?? '';
const attr = (tag: string, name: string) =>
  new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`)
    .exec(tag)
    ?.slice(1)
    .find((v) => v !== undefined);

export const serveXmpp: Serve = (socket: net.Socket, info: HandoffInfo) => {
  const domain = String(
    (info.dialectState as { to?: unknown }).to ?? info.serverName ?? 'localhost',
  );
  let buf = '';
  let inStream = false;
  let user: string | null = null;
  let jid: string | null = null;
  let n = 0;
  const send = (s: string) => socket.write(s);
  const streamError = (condition: string) => {
    send(
      `<stream:error><${condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`,
    );
    socket.end();
  };
  const openStream = () => {
    send(
      `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='${NS_STREAM}' ` +
        `id='${info.connectionId}-${++n}' from='${esc(domain)}' version='1.0' xml:lang='en'>`,
    );
    send(
      user
        ? "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        : "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
    );
  };
  /** One complete top-level element of the stream. */
  const element = (xml: string, open: string) => {
    const name = nameOf(open);
    const text = unesc(xml.replace(/<[^>]*>/g, '').trim());
    if (name === 'auth' && !user) {
      const [, authcid = '', password = ''] = Buffer.from(text, 'base64')
        .toString('utf8')
        .split('\0');
      if (attr(open, 'mechanism') !== 'PLAIN' || !authcid || !password) {
        return send(
          "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>",
        );
      }
      user = authcid.includes('@') ? authcid.split('@')[0]! : authcid;
      inStream = false; // RFC 6120 section 6.4.6: the client restarts the stream
      return send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    }
    const id = esc(attr(open, 'id') ?? '');
    if (name === 'iq' && user && /<bind[\s>/]/.test(xml) && !jid) {
      const resource = /<resource>([^<]*)<\/resource>/.exec(xml)?.[1] || `demo-${n}`;
      jid = `${user}@${domain}/${unesc(resource)}`;
      send(
        `<iq type='result' id='${id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>${esc(jid)}</jid></bind></iq>`,
      );
      return send(
        `<message type='headline' from='${esc(domain)}' to='${esc(jid)}'><body>tlsproxy hand-off: ${esc(handoffSummary(info))}</body></message>`,
      );
    }
    if (name === 'iq' && (attr(open, 'type') === 'get' || attr(open, 'type') === 'set')) {
      return send(
        `<iq type='error' id='${id}'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`,
      );
    }
    if (name === 'starttls') {
      send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>");
      socket.end();
    }
    // presence, message and the rest: accepted and dropped
  };
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    buf += d;
    if (buf.length > MAX_BUFFER) return streamError('policy-violation');
    while (socket.writable) {
      const start = buf.indexOf('<');
      if (start < 0) {
        buf = '';
        return;
      }
      buf = buf.slice(start);
      if (buf.startsWith('<?')) {
        const end = buf.indexOf('?>');
        if (end < 0) return;
        buf = buf.slice(end + 2);
        continue;
      }
      if (buf.startsWith('<!')) return streamError('restricted-xml');
      const end = tagEnd(buf, 0);
      if (end < 0) return;
      const open = buf.slice(0, end);
      if (!inStream) {
        if (nameOf(open) !== 'stream:stream' || open.endsWith('/>'))
          return streamError('invalid-namespace');
        buf = buf.slice(end);
        inStream = true;
        openStream();
        continue;
      }
      if (open.startsWith('</')) {
        send('</stream:stream>');
        return void socket.end();
      }
      // find the end of this element: count nested open/close tags
      let depth = open.endsWith('/>') ? 0 : 1;
      let j = end;
      while (depth > 0) {
        const k = buf.indexOf('<', j);
        if (k < 0) return;
        const e = tagEnd(buf, k);
        if (e < 0) return;
        const t = buf.slice(k, e);
        if (t.startsWith('</')) depth--;
        else if (!t.endsWith('/>') && !t.startsWith('<?') && !t.startsWith('<!')) depth++;
        if (depth > 32) return streamError('policy-violation');
        j = e;
      }
      const xml = buf.slice(0, j);
      buf = buf.slice(j);
      element(xml, open);
    }
  });
};
