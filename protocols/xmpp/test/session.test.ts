// Unit tests: RFC 6120 sections 4 (streams), 5 (STARTTLS) and 11 (restricted XML), one
// behaviour each, against the exact bytes a client receives.
import { OBJECT_PROTOTYPE_NAMES } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import {
  dec,
  enc,
  FEATURES,
  feed,
  HEADER_C2S,
  HEADER_S2S,
  newSession,
  OUR_HEADER_C2S,
  only,
  STARTTLS,
  streamError,
  written,
} from './helpers.js';

const open = (attrs: string, content = 'jabber:client') =>
  `<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='${content}' ${attrs}>`;

describe('stream header', () => {
  it('answers a c2s header with ours and the STARTTLS feature (required)', () => {
    const { text, actions } = feed([HEADER_C2S]);
    expect(text).toBe(OUR_HEADER_C2S + FEATURES);
    expect(only(actions, 'timer')).toEqual([{ type: 'timer', at: 60_000 }]);
  });

  it('answers an s2s header in jabber:server, echoing the peer as `to`', () => {
    const { text } = feed([HEADER_S2S]);
    expect(text).toBe(
      "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' id='c0ffee' from='example.test' to='other.example' version='1.0' xml:lang='en'>" +
        FEATURES,
    );
  });

  it('takes the header with or without an XML declaration, in double quotes, with a prefix other than stream', () => {
    expect(feed([open("to='localhost' version='1.0'")]).text).toBe(OUR_HEADER_C2S + FEATURES);
    const dq =
      '<?xml version="1.0" encoding="UTF-8"?><s:stream xmlns:s="http://etherx.jabber.org/streams" xmlns="jabber:client" to="LocalHost." version="1.0">';
    expect(feed([dq]).text).toBe(OUR_HEADER_C2S + FEATURES);
  });

  it('echoes a valid xml:lang and the stream id comes from the connection id', () => {
    const { text } = feed([open("to='localhost' version='1.0' xml:lang='de-CH'")]);
    expect(text).toContain("xml:lang='de-CH'>");
    expect(text).toContain("id='c0ffee'");
    const bad = feed([open(`to='localhost' version='1.0' xml:lang='x&apos;>'`)]).text;
    expect(bad).toContain("xml:lang='en'>");
  });

  it('accepts a higher minor version and answers 1.0 (RFC 6120 section 4.7.5)', () => {
    expect(feed([open("to='localhost' version='1.5'")]).text).toBe(OUR_HEADER_C2S + FEATURES);
  });

  it('refuses a missing or pre-1.0 or 2.0 version with unsupported-version', () => {
    for (const v of ['', "version='0.9'", "version='2.0'", "version='one'"]) {
      expect(feed([open(`to='localhost' ${v}`)]).text).toBe(
        OUR_HEADER_C2S + streamError('unsupported-version'),
      );
    }
  });

  it('a missing `to` is improper-addressing, as Prosody answers', () => {
    expect(feed([open("version='1.0'")]).text).toBe(
      OUR_HEADER_C2S +
        streamError(
          'improper-addressing',
          'A &apos;to&apos; attribute is required on stream headers',
        ),
    );
    expect(feed([open("to='a b' version='1.0'")]).text).toContain('<improper-addressing ');
  });

  it('an unknown `to` is host-unknown; our header then names a domain we serve', () => {
    const { text, actions } = feed([open("to='evil.example' version='1.0'")]);
    expect(text).toBe(
      OUR_HEADER_C2S + streamError('host-unknown', 'This server does not serve evil.example'),
    );
    expect(only(actions, 'close')).toHaveLength(1);
  });

  it('serves the certificate names by default, wildcards matching exactly one label', () => {
    expect(feed([open("to='chat.wild.example.test' version='1.0'")]).text).toContain(
      "from='chat.wild.example.test'",
    );
    expect(feed([open("to='wild.example.test' version='1.0'")]).text).toContain('<host-unknown ');
    expect(feed([open("to='a.b.wild.example.test' version='1.0'")]).text).toContain(
      '<host-unknown ',
    );
  });

  it('the domains option replaces the certificate names', () => {
    const opts = { domains: ['example.com'] };
    expect(feed([open("to='example.com' version='1.0'")], opts).text).toContain(
      "from='example.com'",
    );
    expect(feed([open("to='localhost' version='1.0'")], opts).text).toContain('<host-unknown ');
  });

  it('with no known domain at all, any valid domain is served', () => {
    expect(feed([open("to='any.example' version='1.0'")], {}, {}, []).text).toContain(
      "from='any.example'",
    );
  });

  it('IDN domains are compared as A-labels', () => {
    const { text } = feed([open("to='bücher.example' version='1.0'")], {
      domains: ['xn--bcher-kva.example'],
    });
    expect(text).toContain("from='xn--bcher-kva.example'");
  });

  it('a wrong root element or stream namespace is invalid-namespace', () => {
    expect(feed(["<stream xmlns='jabber:client' to='localhost' version='1.0'>"]).text).toBe(
      OUR_HEADER_C2S + streamError('invalid-namespace'),
    );
    expect(
      feed([
        "<stream:stream xmlns:stream='urn:wrong' xmlns='jabber:client' to='localhost' version='1.0'>",
      ]).text,
    ).toContain('<invalid-namespace ');
    expect(feed(['<html>']).text).toContain('<invalid-namespace ');
  });

  it('a wrong or missing content namespace is invalid-namespace', () => {
    expect(feed([open("to='localhost' version='1.0'", 'jabber:component:accept')]).text).toContain(
      '<invalid-namespace ',
    );
    expect(
      feed([
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
      ]).text,
    ).toContain('<invalid-namespace ');
  });

  it('an unbound prefix is bad-namespace-prefix', () => {
    expect(feed(["<stream:stream xmlns='jabber:client' to='localhost' version='1.0'>"]).text).toBe(
      OUR_HEADER_C2S + streamError('bad-namespace-prefix'),
    );
  });

  it('an encoding other than UTF-8 is unsupported-encoding (RFC 6120 section 11.6)', () => {
    expect(feed(["<?xml version='1.0' encoding='ISO-8859-1'?>"]).text).toBe(
      OUR_HEADER_C2S + streamError('unsupported-encoding'),
    );
  });

  it('a self-closed stream header is answered, then the stream is closed', () => {
    const { text, actions } = feed([HEADER_C2S.replace(/>$/, '/>')]);
    expect(text).toBe(`${OUR_HEADER_C2S + FEATURES}</stream:stream>`);
    expect(only(actions, 'close')).toHaveLength(1);
  });
});

describe('restricted and bad XML (RFC 6120 section 11)', () => {
  const cases: [string, string][] = [
    ["<!DOCTYPE stream [<!ENTITY x 'y'>]>", 'restricted-xml'],
    ["<?xml version='1.0'?><!DOCTYPE html>", 'restricted-xml'],
    ['<?xml-stylesheet href="a"?>', 'restricted-xml'],
    ['<!-- hello -->', 'restricted-xml'],
    [`${HEADER_C2S}<?pi data?>`, 'restricted-xml'],
    [`${HEADER_C2S}<!-- c -->`, 'restricted-xml'],
    [
      `${HEADER_C2S}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>&ent;</starttls>`,
      'restricted-xml',
    ],
    ['hello>', 'not-well-formed'],
    ['<a b=c>', 'not-well-formed'],
    [`${HEADER_C2S}</wrong>`, 'not-well-formed'],
    [' <?xml version="1.0"?>', 'not-well-formed'],
    [
      `${HEADER_C2S}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' a='1' a='2'/>`,
      'not-well-formed',
    ],
  ];
  for (const [input, condition] of cases) {
    it(`${JSON.stringify(input.slice(-40))} → ${condition}`, () => {
      const { text, actions } = feed([input]);
      expect(text.endsWith(streamError(condition))).toBe(true);
      expect(text.startsWith("<?xml version='1.0'?><stream:stream ")).toBe(true);
      expect(only(actions, 'close')).toHaveLength(1);
      expect(only(actions, 'starttls')).toHaveLength(0);
    });
  }

  it('invalid UTF-8 is not-well-formed', () => {
    const { text } = feed([enc(HEADER_C2S), Uint8Array.of(0x3c, 0x61, 0xff, 0x3e)]);
    expect(text.endsWith(streamError('not-well-formed'))).toBe(true);
  });

  it('predefined entities and character references are fine', () => {
    const { actions } = feed([
      `${HEADER_C2S}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' x='&lt;&amp;&#65;&#x42;'/>`,
    ]);
    expect(only(actions, 'starttls')).toHaveLength(1);
  });
});

describe('before TLS', () => {
  // Issue 17 (more in real-servers.test.ts): SASL <auth/> gets <encryption-required/> and the
  // stream stays open; stanzas: not-authorized; anything else: unsupported-stanza-type.
  it('stanzas are not-authorized "Use of STARTTLS required", then close', () => {
    for (const stanza of [
      "<iq type='get' id='1'><query xmlns='jabber:iq:version'/></iq>",
      '<message to="a@localhost"><body>hi</body></message>',
      '<presence/>',
    ]) {
      const { text, actions } = feed([HEADER_C2S, stanza]);
      expect(text).toBe(
        OUR_HEADER_C2S + FEATURES + streamError('not-authorized', 'Use of STARTTLS required'),
      );
      expect(actions.at(-1)?.type).toBe('close');
    }
  });

  it('other elements are unsupported-stanza-type, then close', () => {
    for (const element of [
      "<starttls xmlns='jabber:client'/>",
      '<starttls/>',
      "<db:result xmlns:db='jabber:server:dialback' to='x' from='y'>key</db:result>",
    ]) {
      const { text, actions } = feed([HEADER_C2S, element]);
      expect(text).toBe(OUR_HEADER_C2S + FEATURES + streamError('unsupported-stanza-type'));
      expect(actions.at(-1)?.type).toBe('close');
    }
  });

  it('SASL <auth/> gets <failure><encryption-required/></failure>; the stream stays open', () => {
    const { text, actions } = feed([
      HEADER_C2S,
      "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
    ]);
    expect(text).toBe(
      `${OUR_HEADER_C2S + FEATURES}<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><encryption-required/></failure>`,
    );
    expect(only(actions, 'close')).toHaveLength(0);
  });

  it('whitespace keepalives between elements are ignored', () => {
    const { actions } = feed([HEADER_C2S, ' \n ', '\t', STARTTLS]);
    expect(only(actions, 'starttls')).toHaveLength(1);
  });

  it('</stream:stream> is answered with ours, then close', () => {
    const { text, actions } = feed([HEADER_C2S, '</stream:stream>']);
    expect(text).toBe(`${OUR_HEADER_C2S + FEATURES}</stream:stream>`);
    expect(actions.at(-1)).toMatchObject({ type: 'close' });
  });

  it('eof closes without a reply', () => {
    const s = newSession();
    s.start(0);
    expect(s.eof?.(1)).toEqual([{ type: 'close', reason: 'client closed the connection' }]);
    expect(s.receive(enc(HEADER_C2S), 2)).toEqual([]);
  });
});

describe('STARTTLS (RFC 6120 section 5.4)', () => {
  it('gives the starttls action with <proceed/>, <failure/> and the stream state', () => {
    const { actions, text } = feed([
      HEADER_C2S.replace(
        "to='localhost'",
        "to='localhost' from='juliet@localhost' xml:lang='en-GB'",
      ),
      STARTTLS,
    ]);
    const [st] = only(actions, 'starttls');
    expect(dec(st!.goAhead)).toBe("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    expect(dec(st!.unavailable)).toBe(
      "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>",
    );
    expect(st!.state).toEqual({
      streamType: 'c2s',
      to: 'localhost',
      from: 'juliet@localhost',
      lang: 'en-GB',
    });
    expect(st!.trailing).toHaveLength(0);
    expect(text).toContain("to='juliet@localhost'");
  });

  it('s2s state', () => {
    const [st] = only(feed([HEADER_S2S + STARTTLS]).actions, 'starttls');
    expect(st!.state).toEqual({
      streamType: 's2s',
      to: 'example.test',
      from: 'other.example',
      lang: null,
    });
  });

  it('a from or xml:lang that is no JID or language tag is not handed on', () => {
    const cases: Array<[string, string]> = [
      ['a b\nc', 'en\nforged'],
      ['evil\u202emoc.example', 'x'.repeat(9)],
      ['', ''],
    ];
    for (const [from, lang] of cases) {
      const header = HEADER_C2S.replace(
        "to='localhost'",
        `to='localhost' from='${from.replace(/\n/g, '&#10;')}' xml:lang='${lang.replace(/\n/g, '&#10;')}'`,
      );
      const [st] = only(feed([header + STARTTLS]).actions, 'starttls');
      expect(st!.state, JSON.stringify([from, lang])).toEqual({
        streamType: 'c2s',
        to: 'localhost',
        from: null,
        lang: null,
      });
    }
  });

  it('accepts <starttls></starttls> with children, as the end tag completes it', () => {
    const { actions } = feed([
      HEADER_C2S,
      "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><x/>",
      '</starttls>',
    ]);
    expect(only(actions, 'starttls')).toHaveLength(1);
  });

  it('bytes after <starttls/> are trailing, never parsed; later ones give one log each', () => {
    const s = newSession();
    s.start(0);
    s.receive(enc(HEADER_C2S), 0);
    const acts = s.receive(enc(`${STARTTLS}<iq type='set'/>&bad;<!DOCTYPE x>`), 0);
    const [st] = only(acts, 'starttls');
    expect(dec(st!.trailing)).toBe("<iq type='set'/>&bad;<!DOCTYPE x>");
    expect(written(acts)).toBe('');
    // (the first log is the STARTTLS command report, issue 17)
    expect(acts.map((a) => (a.type === 'log' && a.event ? a.event : a.type))).toEqual([
      'command',
      'starttls',
      'log',
    ]);
    const later = s.receive(enc('<message/>'), 1);
    expect(later).toEqual([
      { type: 'log', level: 'warn', message: expect.stringMatching(/discarded 10 bytes/) },
    ]);
    expect(s.timer(1e9)).toEqual([]);
  });

  it('tlsUnavailable() closes (the <failure/> already closed the stream)', () => {
    const { session } = feed([HEADER_C2S, STARTTLS]);
    expect(session.tlsUnavailable(5)).toEqual([{ type: 'close', reason: 'TLS not available' }]);
    expect(session.receive(enc('<x/>'), 6)).toEqual([]);
  });

  it('tlsUnavailable() outside STARTTLS only logs', () => {
    const s = newSession();
    s.start(0);
    expect(s.tlsUnavailable(0).map((a) => a.type)).toEqual(['log']);
  });
});

describe('limits', () => {
  it('a stanza over maxStanzaSize is policy-violation with <stanza-too-big/>', () => {
    const big = `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>${'x'.repeat(200)}</starttls>`;
    const { text } = feed([HEADER_C2S, big], {}, { maxStanzaSize: 150 });
    expect(
      text.endsWith(
        streamError(
          'policy-violation',
          'XML stanza is too big',
          "<stanza-too-big xmlns='urn:xmpp:errors'/>",
        ),
      ),
    ).toBe(true);
  });

  it('the size limit applies while bytes wait for a ">" (no unbounded buffering)', () => {
    const s = newSession({}, { maxStanzaSize: 300 });
    s.start(0);
    s.receive(enc(HEADER_C2S), 0);
    expect(written(s.receive(enc(`<iq a='${'x'.repeat(200)}`), 0))).toBe('');
    expect(written(s.receive(enc('y'.repeat(200)), 0))).toContain('<policy-violation ');
  });

  it('the header itself is bounded too', () => {
    const { text } = feed([`<stream:stream ${'a'.repeat(20_000)}`]);
    expect(text).toContain('<policy-violation ');
  });

  it('deep nesting is policy-violation', () => {
    const { text } = feed([
      HEADER_C2S,
      "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>",
      '<a>'.repeat(20),
    ]);
    expect(text.endsWith(streamError('policy-violation'))).toBe(true);
  });

  it('too many attributes is policy-violation', () => {
    const attrs = Array.from({ length: 40 }, (_, i) => `a${i}='x'`).join(' ');
    const { text } = feed([open(`to='localhost' version='1.0' ${attrs}`)]);
    expect(text.endsWith(streamError('policy-violation'))).toBe(true);
  });
});

describe('idle timer (RFC 6120 section 4.6.1)', () => {
  it('connection-timeout stream error, with our header first if none was sent', () => {
    const s = newSession();
    expect(s.start(0)).toEqual([{ type: 'timer', at: 60_000 }]);
    expect(s.timer(59_999)).toEqual([{ type: 'timer', at: 60_000 }]);
    const acts = s.timer(60_000);
    expect(written(acts)).toBe(OUR_HEADER_C2S + streamError('connection-timeout'));
    expect(acts.at(-1)?.type).toBe('close');
  });

  it('after the header only the error is sent; each chunk re-arms', () => {
    const s = newSession();
    s.start(0);
    expect(only(s.receive(enc(HEADER_C2S), 1000), 'timer')).toEqual([
      { type: 'timer', at: 61_000 },
    ]);
    expect(written(s.timer(61_000))).toBe(streamError('connection-timeout'));
  });

  it('0 disables it', () => {
    const s = newSession({}, { idleTimeoutMs: 0 });
    expect(s.start(0)).toEqual([]);
  });
});

describe('overflow (the engine pre-TLS byte cap)', () => {
  const ERROR = streamError('policy-violation', 'Too much data before STARTTLS');

  it('after our stream header: the stream error and the closing tag', () => {
    const { session } = feed([HEADER_C2S, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' a='"]);
    expect(dec(session.overflow!(0))).toBe(ERROR);
  });

  it('before any header: ours first (RFC 6120 section 4.9.1.2), and overflow() is pure', () => {
    const { session } = feed(["<?xml version='1.0'?><stream:stream xmlns='jabber:cli"]);
    const first = dec(session.overflow!(0));
    expect(first).toMatch(/^<\?xml version='1.0'\?><stream:stream [^>]*version='1.0'[^>]*>/);
    expect(first.endsWith(ERROR)).toBe(true);
    expect(dec(session.overflow!(0))).toBe(first);
  });
});

describe('expired (the engine preamble deadline)', () => {
  it('<connection-timeout/> and the closing tag, our header first when none was sent; pure', () => {
    const after = feed([HEADER_C2S]).session;
    expect(dec(after.expired!(0))).toBe(streamError('connection-timeout'));
    const before = feed(["<?xml version='1.0'?><stream:stream xmlns='jabber:cli"]).session;
    const first = dec(before.expired!(0));
    expect(first).toMatch(/^<\?xml version='1.0'\?><stream:stream [^>]*>.*<connection-timeout /);
    expect(dec(before.expired!(0))).toBe(first);
  });
});

// Issue 14: peer input never selects anything through a plain object. Element names, attribute
// names and namespace prefixes are the peer's.
describe('Object.prototype names in the stream', () => {
  const NAMES = OBJECT_PROTOTYPE_NAMES;
  it.each(NAMES)('%s', (name) => {
    // as an attribute of the stream header: an attribute like any other
    const header = HEADER_C2S.replace(" version='1.0'>", ` version='1.0' ${name}='x'>`);
    expect(feed([header]).text).toBe(OUR_HEADER_C2S + FEATURES);
    // as an element before TLS: refused like any other unknown element
    const { text } = feed([HEADER_C2S, `<${name}/>`]);
    expect(text).toBe(OUR_HEADER_C2S + FEATURES + streamError('unsupported-stanza-type'));
  });
});
