// Properties from DESIGN.md "Dialect interface - contract": any chunking behaves the same,
// peer input never throws, the case of keywords does not matter, nothing pipelined after STLS
// is ever answered. Time-boxed with interruptAfterTimeLimit.
import type { Action } from '@tlsproxy/dialect-kit';
import {
  checkActions as checkContract,
  feedPastStartTls,
  bytewise as octetByOctet,
  splitAt,
} from '@tlsproxy/dialect-kit/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dec, enc, newSession, written } from './helpers.js';

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 400 };
/** Small limits so the generated sessions reach every limit path. */
const SMALL = { maxLineLength: 20, maxBadCommands: 1000, maxCommands: 1000 };

/** Pieces of sessions: valid, invalid, over-limit ones, bare CR and bare LF. */
const PIECES = [
  'CAPA\r\n',
  'capa\n',
  'USER alice\r\n',
  'PASS se cret\r\n',
  'APOP a b\r\n',
  'AUTH PLAIN AGFs\r\n',
  'NOOP\r\n',
  'RETR 1\r\n',
  'FROB\r\n',
  '\r\n',
  ' CAPA\r\n',
  'CAPA \r\n',
  'CAPA\rCAPA\r\n',
  'STLS x\r\n',
  'QUIT\r\n',
  `FROB ${'y'.repeat(60)}\r\n`,
  `FROB ${'y'.repeat(60)} STLS\r\nCAPA\r\n`,
  // exactly SMALL.maxLineLength octets with CRLF, and one more: the CR must not count twice
  `FROB ${'y'.repeat(13)}\r\n`,
  `FROB ${'y'.repeat(14)}\r\n`,
  `FROB ${'y'.repeat(14)}\n`,
  `FROB ${'y'.repeat(13)}\r\r\n`,
];
const piece = fc.constantFrom(...PIECES);
const STLS = 'STLS\r\n';

/** What the client observes: bytes written, then the final action (timers and logs aside). */
function observe(chunks: Uint8Array[], limits: Record<string, number>) {
  const s = newSession({}, limits);
  s.start(0);
  const actions: Action[] = [];
  for (const c of chunks) actions.push(...s.receive(c, 0));
  const last = actions.filter((a) => a.type !== 'timer' && a.type !== 'log').at(-1);
  const final =
    last?.type === 'starttls'
      ? { type: 'starttls', state: last.state, goAhead: dec(last.goAhead) }
      : last?.type === 'close'
        ? { type: 'close', reason: last.reason }
        : null;
  return { text: written(actions), final };
}

function checkActions(actions: Action[]): void {
  checkContract(actions, {
    send: (a) => {
      // every reply is whole CRLF lines, each a status line or (in CAPA) a capability
      expect(dec(a.data)).toMatch(/^([^\r\n]*\r\n)+$/);
      expect(dec(a.data)).toMatch(/^[+-]/);
    },
    close: (a) => {
      if (a.data) expect(dec(a.data)).toMatch(/^[+-](OK|ERR)[^\r\n]*\r\n$/);
    },
    starttls: (a) => expect(a.state).toEqual({}),
  });
}

describe('properties', () => {
  for (const [label, limits] of [
    ['small limits', SMALL],
    ['default limits', {}],
  ] as const) {
    it(`any chunking gives the same replies and final action (${label})`, () => {
      fc.assert(
        fc.property(
          fc.array(piece, { maxLength: 12 }),
          fc.boolean(),
          fc.array(fc.nat(), { maxLength: 20 }),
          (pieces, withStls, cuts) => {
            const bytes = enc(pieces.join('') + (withStls ? `${STLS}USER x\r\n` : ''));
            const whole = observe([bytes], limits);
            const split = observe(splitAt(bytes, cuts), limits);
            const bytewise = observe(octetByOctet(bytes), limits);
            expect(split.text).toBe(whole.text);
            expect(split.final).toEqual(whole.final);
            expect(bytewise.text).toBe(whole.text);
            expect(bytewise.final).toEqual(whole.final);
          },
        ),
        TIME,
      );
    });
  }

  it('random bytes never throw and only produce valid actions', () => {
    const chunk = fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      piece.map(enc),
      fc.constantFrom('\r', '\n', ' ', 'STLS', '.', '\u00ff').map(enc),
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
        actions.push(...s.timer(now + 1e7), ...s.tlsUnavailable(now), ...(s.eof?.(now) ?? []));
        checkActions(actions);
      }),
      TIME,
    );
  });

  it('the case of keywords does not matter', () => {
    const commands = [
      'CAPA',
      'NOOP',
      'USER x',
      'PASS y',
      'APOP a b',
      'AUTH PLAIN',
      'RETR 1',
      'QUIT',
      'STLS x',
      'STLS',
    ];
    const recase = fc.tuple(
      fc.constantFrom(...commands),
      fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }),
    );
    fc.assert(
      fc.property(fc.array(recase, { maxLength: 8 }), (picked) => {
        const upper = picked.map(([c]) => `${c}\r\n`).join('');
        const mixed = picked
          .map(([c, flips]) => {
            const [name, ...rest] = c.split(' ');
            const n = [...name!].map((ch, i) => (flips[i] ? ch.toLowerCase() : ch)).join('');
            return `${[n, ...rest].join(' ')}\r\n`;
          })
          .join('');
        const a = observe([enc(upper)], {});
        const b = observe([enc(mixed)], {});
        expect(b.text).toBe(a.text);
        expect(b.final).toEqual(a.final);
      }),
      TIME,
    );
  });

  it('nothing after STLS is ever answered or framed', () => {
    const after = fc.oneof(piece.map(enc), fc.uint8Array({ maxLength: 40 }));
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('CAPA\r\n', 'NOOP\r\n', 'FROB\r\n', 'USER a\r\n'), {
          maxLength: 4,
        }),
        fc.array(after, { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (before, rest, cuts) => {
          const head = enc(before.join('') + STLS);
          const tail = enc(rest.map(dec).join(''));
          const all = new Uint8Array([...head, ...tail]);
          const s = newSession();
          s.start(0);
          const r = feedPastStartTls(s, splitAt(all, cuts));
          expect(r.problems).toEqual([]);
          expect(r.starttls).toBeDefined();
          // every octet after the STLS line went to trailing or a later (logged) receive
          expect(dec(r.trailing)).toBe(dec(tail));
        },
      ),
      TIME,
    );
  });
});

// Issue 14: before TLS nothing invites credentials: USER never gets +OK (so the client never
// sends PASS), AUTH never gets a "+ " continuation, CAPA lists neither USER nor a mechanism.
describe('no credential is invited before TLS', () => {
  const AUTH = [
    'USER alice\r\n',
    'PASS secret\r\n',
    'APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n',
    'AUTH\r\n',
    'AUTH PLAIN\r\n',
    'AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n',
    'AUTH LOGIN\r\n',
    'user alice\r\n',
    'CAPA\r\n',
  ];
  it('every reply to an authentication command is -ERR [AUTH]', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...AUTH), { minLength: 1, maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (pieces, cuts) => {
          const bytes = enc(pieces.join(''));
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
          expect(text).not.toMatch(/(^|\r\n)\+ /);
          expect(text).not.toMatch(/\r\n(USER|SASL \S)/);
          const auths = pieces.filter((p) => p !== 'CAPA\r\n').length;
          expect(text.split('-ERR [AUTH] ').length - 1).toBe(auths);
        },
      ),
      { interruptAfterTimeLimit: 4000, numRuns: 300 },
    );
  });
});
