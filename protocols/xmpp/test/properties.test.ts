// Properties from DESIGN.md "Dialect interface - contract": any chunking behaves the same (the
// XML parser is fed incrementally), peer input never throws, XML bombs go nowhere, nothing
// after <starttls/> is ever answered. Time-boxed with interruptAfterTimeLimit.
import type { Action } from '@tlsproxy/dialect-kit';
import {
  checkActions as checkContract,
  feedPastStartTls,
  bytewise as octetByOctet,
  splitAt,
} from '@tlsproxy/dialect-kit/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dec, enc, HEADER_C2S, HEADER_S2S, newSession, STARTTLS, written } from './helpers.js';

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 300 };
const SMALL = { maxStanzaSize: 200, maxDepth: 4, maxAttributes: 5 };

const HEADERS = [
  HEADER_C2S,
  HEADER_S2S,
  "<?xml version='1.0' encoding='utf-8'?>\n<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='chat.wild.example.test' version='1.0' xml:lang='fr'>",
  "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='nope.example' version='1.0'>",
  "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
  "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>",
  "<stream:stream xmlns='jabber:client' to='localhost' version='1.0'>",
  "<s:stream xmlns='jabber:server' xmlns:s='http://etherx.jabber.org/streams' to='example.test' version='1.0' from='b\u00fccher.example'>",
  '<!DOCTYPE x>',
  '<!-- hi -->',
  '<?pi?>',
  '',
];
/** Pieces of stream content: whitespace, starttls in its forms, stanzas, junk. */
const PIECES = [
  ' ',
  '\r\n',
  STARTTLS,
  "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'></starttls>",
  "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><a><b/></a></starttls>",
  "<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
  "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
  '</stream:stream>',
  '<!-- c -->',
  '&lol;',
  '<a>',
  '</a>',
  'b\u00fcch\u20ac\u{1f600}',
  `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' x='${'y'.repeat(250)}'/>`,
  "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' a='1' b='2' c='3' d='4' e='5' f='6'/>",
  '<',
  '>',
  "'",
];
const header = fc.constantFrom(...HEADERS);
const piece = fc.constantFrom(...PIECES);

/** What the client observes: bytes written, the final action, and what was discarded. */
function observe(chunks: Uint8Array[], limits: Record<string, number>) {
  const s = newSession({}, limits);
  s.start(0);
  const actions: Action[] = [];
  const discarded: number[] = [];
  let started = false;
  for (const c of chunks) {
    const acts = s.receive(c, 0);
    if (started) discarded.push(...c);
    for (const a of acts) {
      if (a.type === 'starttls') {
        started = true;
        discarded.push(...a.trailing);
      }
    }
    actions.push(...acts);
  }
  const last = actions.filter((a) => a.type !== 'timer' && a.type !== 'log').at(-1);
  const final =
    last?.type === 'starttls'
      ? { type: 'starttls', state: last.state, goAhead: dec(last.goAhead) }
      : last?.type === 'close'
        ? { type: 'close', reason: last.reason }
        : null;
  return { text: written(actions), final, actions, discarded: Uint8Array.from(discarded) };
}

function checkActions(actions: Action[]): void {
  const close = actions.findIndex((a) => a.type === 'close');
  if (close >= 0) expect(close).toBe(actions.length - 1); // nothing after close
  checkContract(actions, {
    // Our header with the features, or the SASL failure that refuses an <auth/> (issue 17).
    send: (a) =>
      expect(dec(a.data)).toMatch(
        /^(<\?xml version='1.0'\?><stream:stream [\s\S]*<\/stream:features>|<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><encryption-required\/><\/failure>)$/,
      ),
    close: (a) => {
      if (a.data) expect(dec(a.data)).toMatch(/<\/stream:stream>$/);
    },
    starttls: (a) =>
      expect(dec(a.goAhead)).toBe("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
  });
}

describe('properties', () => {
  for (const [label, limits] of [
    ['small limits', SMALL],
    ['default limits', {}],
  ] as const) {
    it(`any chunking gives the same replies, final action and discarded bytes (${label})`, () => {
      fc.assert(
        fc.property(
          header,
          fc.array(piece, { maxLength: 8 }),
          fc.array(fc.nat(), { maxLength: 20 }),
          (head, pieces, cuts) => {
            const bytes = enc(head + pieces.join(''));
            const whole = observe([bytes], limits);
            const split = observe(splitAt(bytes, cuts), limits);
            const bytewise = observe(octetByOctet(bytes), limits);
            for (const other of [split, bytewise]) {
              expect(other.text).toBe(whole.text);
              expect(other.final).toEqual(whole.final);
              expect(other.discarded).toEqual(whole.discarded);
            }
            checkActions(whole.actions);
          },
        ),
        TIME,
      );
    });
  }

  it('random bytes never throw and only produce valid actions', () => {
    const chunk = fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      header.map(enc),
      piece.map(enc),
      fc.string({ maxLength: 20 }).map(enc),
      fc.constantFrom('<', '>', '/', '&', ';', '<!', '<?', ']]>', '\u0000', '\uffff').map(enc),
    );
    fc.assert(
      fc.property(fc.array(chunk, { maxLength: 30 }), fc.boolean(), (chunks, small) => {
        const s = newSession({}, small ? SMALL : {});
        const actions: Action[] = [...s.start(0)];
        let now = 0;
        for (const c of chunks) {
          now += 10;
          actions.push(...s.receive(c, now));
        }
        actions.push(...s.timer(now + 1e6), ...s.tlsUnavailable(now), ...(s.eof?.(now) ?? []));
        const afterClose = actions.findIndex((a) => a.type === 'close');
        checkActions(afterClose < 0 ? actions : actions.slice(0, afterClose + 1));
      }),
      TIME,
    );
  });

  it('nothing after <starttls/> is ever answered or parsed', () => {
    const after = fc.oneof(piece.map(enc), header.map(enc), fc.uint8Array({ maxLength: 40 }));
    fc.assert(
      fc.property(
        fc.constantFrom(HEADER_C2S, HEADER_S2S),
        fc.array(fc.constantFrom(' ', '\n'), { maxLength: 3 }),
        fc.array(after, { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (head, ws, rest, cuts) => {
          const front = enc(head + ws.join('') + STARTTLS);
          const tail = Uint8Array.from(rest.flatMap((r) => [...r]));
          const all = new Uint8Array([...front, ...tail]);
          const s = newSession();
          s.start(0);
          const r = feedPastStartTls(s, splitAt(all, cuts));
          expect(r.problems).toEqual([]);
          expect(r.starttls).toBeDefined();
          expect(r.before.some((a) => a.type === 'close')).toBe(false);
          expect(r.starttls?.state.to).toMatch(/^(localhost|example\.test)$/);
          expect(r.trailing).toEqual(tail);
        },
      ),
      TIME,
    );
  });
});

describe('XML bombs and abuse, any chunking', () => {
  const laughs = [
    '<?xml version="1.0"?>',
    '<!DOCTYPE lolz [',
    ' <!ENTITY lol "lol">',
    ...Array.from(
      { length: 9 },
      (_, i) => ` <!ENTITY lol${i + 1} "${`&lol${i === 0 ? '' : i};`.repeat(10)}">`,
    ),
    ']>',
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>&lol9;",
  ].join('\n');
  const bombs: [string, string, RegExp][] = [
    ['billion laughs', laughs, /<restricted-xml /],
    [
      'billion laughs inside the stream',
      `${HEADER_C2S}${laughs.replace('<?xml version="1.0"?>', '')}`,
      /<(restricted-xml|not-well-formed) /,
    ],
    [
      'external entity',
      '<?xml version="1.0"?><!DOCTYPE s [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><s>&xxe;</s>',
      /<restricted-xml /,
    ],
    [
      'parameter entity',
      '<!DOCTYPE s [<!ENTITY % p SYSTEM "http://attacker.invalid/x.dtd"> %p;]>',
      /<restricted-xml /,
    ],
    ['undefined entity in the stream', `${HEADER_C2S}&xxe;<x/>`, /<restricted-xml /],
    // inside a SASL <auth/>, whose end is awaited (any other first-level element is refused at
    // once with unsupported-stanza-type, before any depth)
    [
      'deep nesting',
      `${HEADER_C2S}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${'<a>'.repeat(100_000)}`,
      /<policy-violation /,
    ],
    [
      'huge attribute',
      `${HEADER_C2S}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' a='${'x'.repeat(1_000_000)}'/>`,
      /<policy-violation /,
    ],
    [
      'many attributes',
      `${HEADER_C2S}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' ${Array.from({ length: 5000 }, (_, i) => `a${i}='1'`).join(' ')}/>`,
      /<policy-violation /,
    ],
    ['huge header', `<stream:stream ${'x'.repeat(1_000_000)}`, /<policy-violation /],
    ['endless text', `${HEADER_C2S}${'x'.repeat(1_000_000)}`, /<policy-violation /],
  ];
  for (const [name, input, expected] of bombs) {
    it(`${name}: a stream error, no STARTTLS, nothing expanded`, () => {
      const bytes = enc(input);
      fc.assert(
        fc.property(fc.array(fc.nat({ max: bytes.length }), { maxLength: 6 }), (cuts) => {
          const t0 = performance.now();
          const r = observe(splitAt(bytes, cuts), {});
          expect(performance.now() - t0).toBeLessThan(2000);
          expect(r.text).toMatch(expected);
          expect(r.text.length).toBeLessThan(2000);
          expect(r.final).toMatchObject({ type: 'close' });
          expect(r.actions.some((a) => a.type === 'starttls')).toBe(false);
          expect(r.text).not.toMatch(/lollol|root:/);
        }),
        { interruptAfterTimeLimit: 3000, numRuns: 20 },
      );
    });
  }
});

// Issue 14: pieces for the parser are cut at the '>' that can end markup (a small lexer tells it
// from '>' in a quoted value, text or CDATA) and early octets of a run, not at every read. An
// element must still be answered as soon as its last '>' arrives, whatever '>'s it contains.
describe("an element ends at its '>', whatever the '>'s inside it", () => {
  const TLS = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'";
  const INSIDE = [
    '<a id=\'a>b\' type="c>d"/>',
    '<b>x > y &gt; z</b>',
    '<c><![CDATA[x > y ]] > ]]></c>',
    "<d e='q\"'/>",
    ' \r\n',
  ];
  it('STARTTLS with any such content is acted on at its end, in any chunking', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('', " x='>'", ' y="a>b"'),
        fc.array(fc.constantFrom(...INSIDE), { maxLength: 4 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (attr, inside, cuts) => {
          const element =
            inside.length === 0 ? `${TLS}${attr}/>` : `${TLS}${attr}>${inside.join('')}</starttls>`;
          const bytes = enc(HEADER_C2S + element);
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort(
            (a, b) => a - b,
          );
          const s = newSession();
          s.start(0);
          const actions: Action[] = [];
          let prev = 0;
          for (const p of [...points, bytes.length]) {
            actions.push(...s.receive(bytes.subarray(prev, p), 0));
            prev = p;
          }
          const tls = actions.filter((a) => a.type === 'starttls');
          expect(tls, written(actions)).toHaveLength(1);
          expect(tls[0]!.type === 'starttls' && tls[0]!.trailing.length).toBe(0);
        },
      ),
      TIME,
    );
  });
});

// Issue 14: before TLS no SASL exchange is ever started: no <mechanisms/> in the features, and
// <auth/> (with or without an initial response) never gets a <challenge/> or <success/>. Issue
// 17: it gets <failure><encryption-required/></failure> (RFC 6120 section 6.4.5) and the stream
// stays open for <starttls/>; any other SASL element closes it (unsupported-stanza-type).
describe('no credential is invited before TLS', () => {
  const SASL = "xmlns='urn:ietf:params:xml:ns:xmpp-sasl'";
  const AUTH = [
    `<auth ${SASL} mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>`,
    `<auth ${SASL} mechanism='PLAIN'/>`,
    `<auth ${SASL} mechanism='PLAIN'>=</auth>`,
    `<auth ${SASL} mechanism='SCRAM-SHA-1'>biwsbj1hbGljZSxyPWFiYw==</auth>`,
    `<response ${SASL}>AGFsaWNl</response>`,
    `<auth ${SASL} mechanism='DIGEST-MD5'/>`,
  ];
  it('no mechanisms, challenge or success, in any chunking', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(HEADER_C2S, HEADER_S2S),
        fc.constantFrom(...AUTH),
        fc.array(fc.nat(), { maxLength: 8 }),
        (header, auth, cuts) => {
          const bytes = enc(header + auth);
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort(
            (a, b) => a - b,
          );
          const s = newSession();
          s.start(0);
          const actions: Action[] = [];
          let prev = 0;
          for (const p of [...points, bytes.length]) {
            actions.push(...s.receive(bytes.subarray(prev, p), 0));
            prev = p;
          }
          const text = written(actions);
          expect(text).not.toMatch(/<mechanisms|<challenge|<success/);
          if (auth.startsWith('<auth')) {
            expect(
              text.endsWith(
                "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><encryption-required/></failure>",
              ),
            ).toBe(true);
            expect(actions.some((a) => a.type === 'close')).toBe(false);
          } else {
            expect(text).toMatch(/<unsupported-stanza-type /);
            expect(actions.some((a) => a.type === 'close')).toBe(true);
          }
        },
      ),
      TIME,
    );
  });
});
