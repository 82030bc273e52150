// Properties from DESIGN.md "Dialect interface - contract": any chunking behaves the same, peer
// input never throws, the case of command words does not matter, nothing pipelined after
// STARTTLS is ever answered, and in MX mode every byte from MAIL on reaches the backend. Time-boxed.
import type { Action } from '@tlsproxy/dialect-kit';
import {
  checkActions as checkContract,
  feedPastStartTls,
  bytewise as octetByOctet,
  splitAt,
} from '@tlsproxy/dialect-kit/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { SmtpOptions } from '../src/index.js';
import { dec, enc, newSession, written } from './helpers.js';

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 400 };
/** Small limits so the generated sessions reach every limit path. */
const SMALL = { maxLineLength: 40, maxBadCommands: 1000, maxCommands: 1000 };

/** Pieces of sessions: valid, invalid, over-limit, bare LF, BDAT with its chunk. */
const PIECES = [
  'EHLO client.example\r\n',
  'HELO c\r\n',
  'ehlo c\n',
  'NOOP\r\n',
  'NOOP some text\r\n',
  'RSET\r\n',
  'HELP\r\n',
  'MAIL FROM:<a@b>\r\n',
  'RCPT TO:<a@b>\r\n',
  'DATA\r\n',
  'AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n',
  'BDAT 11\r\nSTARTTLS\r\n\r\n',
  'BDAT x\r\n',
  'VRFY root\r\n',
  'FROB\r\n',
  'STARTTLS now\r\n',
  '\r\n',
  'NOOP\rRSET\r\n',
  `NOOP ${'y'.repeat(60)}\r\n`,
  // exactly SMALL.maxLineLength octets with CRLF, and one more
  `NOOP ${'y'.repeat(33)}\r\n`,
  `NOOP ${'y'.repeat(34)}\r\n`,
  'QUIT\r\n',
];
const piece = fc.constantFrom(...PIECES);
const STARTTLS = 'STARTTLS\r\n';

/** What the client and backend observe: bytes written, then the final action. */
function observe(
  chunks: Uint8Array[],
  limits: Record<string, number>,
  options: Partial<SmtpOptions> = {},
) {
  const s = newSession(options, limits);
  s.start(0);
  const actions: Action[] = [];
  const after: number[] = [];
  let done = false;
  for (const c of chunks) {
    if (done) {
      after.push(...c);
      continue;
    }
    const acts = s.receive(c, 0);
    actions.push(...acts);
    done = acts.some((a) => a.type === 'starttls' || a.type === 'plaintext' || a.type === 'close');
  }
  const last = actions.filter((a) => a.type !== 'timer' && a.type !== 'log').at(-1);
  let final: unknown = null;
  if (last?.type === 'starttls') {
    // trailing plus what came in later receives: the same octets however they were cut
    final = {
      type: 'starttls',
      state: last.state,
      rest: dec(last.trailing) + dec(Uint8Array.from(after)),
    };
  } else if (last?.type === 'plaintext') {
    final = {
      type: 'plaintext',
      state: last.state,
      rest: dec(last.buffered) + dec(Uint8Array.from(after)),
    };
  } else if (last?.type === 'close') {
    final = { type: 'close', reason: last.reason };
  }
  return { text: written(actions), final, actions };
}

function checkActions(actions: Action[]): void {
  const reply = /^([2-5]\d\d[ -][\x20-\x7e]*\r\n)+$/;
  checkContract(actions, {
    send: (a) => expect(dec(a.data)).toMatch(reply),
    close: (a) => {
      if (a.data) expect(dec(a.data)).toMatch(reply);
    },
    plaintext: (a) => expect(dec(a.buffered)).toMatch(/^MAIL /i),
  });
}

describe('properties', () => {
  for (const [label, limits, options] of [
    ['small limits', SMALL, {}],
    ['default limits', {}, {}],
    ['MX mode', SMALL, { plaintext: 'handoff' }],
  ] as const) {
    it(`any chunking gives the same replies and final action (${label})`, () => {
      fc.assert(
        fc.property(
          fc.array(piece, { maxLength: 12 }),
          fc.boolean(),
          fc.array(fc.nat(), { maxLength: 20 }),
          (pieces, withStartTls, cuts) => {
            const bytes = enc(pieces.join('') + (withStartTls ? `${STARTTLS}NOOP\r\n` : ''));
            const whole = observe([bytes], limits, options);
            const split = observe(splitAt(bytes, cuts), limits, options);
            const bytewise = observe(octetByOctet(bytes), limits, options);
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
      fc.constantFrom('\r', '\n', ' ', ':', 'BDAT 5\r\n', 'GET / HTTP/1.1\r\n').map(enc),
    );
    fc.assert(
      fc.property(
        fc.array(chunk, { maxLength: 30 }),
        fc.boolean(),
        fc.constantFrom<Partial<SmtpOptions>>(
          {},
          { plaintext: 'handoff' },
          { greetDelayMs: 5 },
          { bareLf: 'reject' },
        ),
        (chunks, small, options) => {
          const s = newSession(options, small ? SMALL : {});
          const actions: Action[] = [...s.start(0)];
          let now = 0;
          for (const c of chunks) {
            now += 10;
            actions.push(...s.receive(c, now));
          }
          actions.push(...s.timer(now + 1e6), ...s.tlsUnavailable(now), ...(s.eof?.(now) ?? []));
          checkActions(actions);
        },
      ),
      TIME,
    );
  });

  it('the case of command words does not matter', () => {
    const commands = [
      'EHLO c',
      'HELO c',
      'NOOP',
      'RSET',
      'MAIL FROM:<a@b>',
      'RCPT TO:<a@b>',
      'AUTH PLAIN',
      'BDAT 0 LAST',
      'QUIT',
      'STARTTLS x',
      'STARTTLS',
    ];
    const recase = fc.tuple(
      fc.constantFrom(...commands),
      fc.array(fc.boolean(), { minLength: 16, maxLength: 16 }),
    );
    fc.assert(
      fc.property(fc.array(recase, { maxLength: 8 }), fc.boolean(), (picked, mx) => {
        const options: Partial<SmtpOptions> = mx ? { plaintext: 'handoff' } : {};
        const upper = picked.map(([c]) => `${c}\r\n`).join('');
        // flip the case of the command word and of FROM:/TO:, never of arguments
        const mixed = picked
          .map(([c, flips]) => {
            const keep = /^(EHLO|HELO) /.test(c)
              ? 5
              : c.indexOf('<') >= 0
                ? c.indexOf('<')
                : c.length;
            const head = [...c.slice(0, keep)].map((ch, i) => (flips[i] ? ch.toLowerCase() : ch));
            return `${head.join('')}${c.slice(keep)}\r\n`;
          })
          .join('');
        const a = observe([enc(upper)], {}, options);
        const b = observe([enc(mixed)], {}, options);
        expect(b.text).toBe(a.text);
        expect(JSON.stringify(b.final).toUpperCase()).toBe(JSON.stringify(a.final).toUpperCase());
      }),
      TIME,
    );
  });

  it('nothing after STARTTLS is ever answered', () => {
    const after = fc.oneof(piece.map(enc), fc.uint8Array({ maxLength: 40 }));
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('EHLO c\r\n', 'NOOP\r\n', 'FROB\r\n', 'MAIL FROM:<a@b>\r\n'), {
          maxLength: 4,
        }),
        fc.array(after, { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.boolean(),
        (before, rest, cuts, mx) => {
          const head = enc(before.join('') + STARTTLS);
          const tail = enc(rest.map(dec).join(''));
          const all = new Uint8Array([...head, ...tail]);
          const s = newSession(mx ? { plaintext: 'handoff' } : {});
          s.start(0);
          const r = feedPastStartTls(s, splitAt(all, cuts));
          // in MX mode a MAIL after EHLO hands off first: then there is no STARTTLS at all
          if (r.plaintext) return;
          expect(r.problems).toEqual([]);
          expect(r.starttls).toBeDefined();
          // every octet after the STARTTLS line went to trailing or a later (logged) receive
          expect(dec(r.trailing)).toBe(dec(tail));
        },
      ),
      TIME,
    );
  });
});

// Issue 14: before TLS nothing invites credentials: AUTH (with or without an initial response)
// never gets a 334 continuation, and EHLO never lists AUTH, in any chunking.
describe('no credential is invited before TLS', () => {
  const AUTH = [
    'EHLO client.example\r\n',
    'AUTH PLAIN\r\n',
    'AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n',
    'AUTH LOGIN\r\n',
    'AUTH LOGIN YWxpY2U=\r\n',
    'AUTH CRAM-MD5\r\n',
    'auth plain =\r\n',
    'AUTH\r\n',
    'HELO client.example\r\n',
  ];
  it('no 334 and no AUTH in EHLO', () => {
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
          expect(text).not.toMatch(/(^|\n)334/);
          expect(text).not.toMatch(/(^|\n)250[ -]AUTH/i);
        },
      ),
      { interruptAfterTimeLimit: 4000, numRuns: 300 },
    );
  });
});
