// Properties from DESIGN.md "Dialect interface - contract": any chunking behaves the same,
// peer input never throws, nothing pipelined after STARTTLS is ever answered. Time-boxed.
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
const SMALL = {
  maxLineLength: 40,
  maxLiteralSize: 12,
  maxCommandSize: 80,
  maxBadCommands: 1000,
  maxCommands: 1000,
};

/** Pieces of sessions: valid, invalid, literals of both kinds, over-limit ones. */
const PIECES = [
  'a CAPABILITY\r\n',
  'b NOOP\r\n',
  'c noop\n',
  'd ID NIL\r\n',
  'e ID ("name" "x")\r\n',
  'f LOGIN alice secret\r\n',
  'g LOGIN {5}\r\nalice {6}\r\nsecret\r\n',
  'h LOGIN {12+}\r\nx STARTTLS\r\n x\r\n',
  'i AUTHENTICATE PLAIN AGFs\r\n',
  'j SELECT INBOX\r\n',
  'k FROB\r\n',
  '* NOOP\r\n',
  '\r\n',
  'l NOOP\rm NOOP\r\n',
  `m NOOP ${'y'.repeat(60)}\r\n`,
  `n NOOP ${'y'.repeat(60)} {3+}\r\nabc\r\n`,
  'o LOGIN {99}\r\n',
  'p SELECT {3}\r\n',
  'q LOGIN {0}\r\n {0+}\r\n\r\n',
  'r ID ({3+}\r\nabc NIL)\r\n',
  'LOGIN a b\r\n',
  's LOGIN x{3+}\r\nabc\r\n',
  't STARTTLS x\r\n',
  'u LOGOUT\r\n',
  // exactly SMALL.maxLineLength octets, and one more: the CR of CRLF must not count
  `v NOOP ${'y'.repeat(33)}\r\n`,
  `w NOOP ${'y'.repeat(34)}\r\n`,
];
const piece = fc.constantFrom(...PIECES);
const STARTTLS = 'z STARTTLS\r\n';

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
  return { text: written(actions), final, actions };
}

function checkActions(actions: Action[]): void {
  checkContract(actions, {
    send: (a) => expect(dec(a.data)).toMatch(/^([^\r\n]*\r\n)+$/),
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
          (pieces, withStartTls, cuts) => {
            const bytes = enc(pieces.join('') + (withStartTls ? `${STARTTLS}b NOOP\r\n` : ''));
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
      fc.constantFrom('{', '}', '+}', '{9+}', '\r', '\n', ' ', '"', '(', ')').map(enc),
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
        checkActions(actions);
      }),
      TIME,
    );
  });

  it('the case of command names does not matter', () => {
    const commands = [
      'a CAPABILITY',
      'b NOOP',
      'c LOGIN x y',
      'd AUTHENTICATE PLAIN',
      'e SELECT x',
      'f ID NIL',
      'g LOGOUT',
      'h STARTTLS x',
      'i STARTTLS',
    ];
    const recase = fc.tuple(
      fc.constantFrom(...commands),
      fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }),
    );
    fc.assert(
      fc.property(fc.array(recase, { maxLength: 8 }), (picked) => {
        const upper = picked.map(([c]) => `${c}\r\n`).join('');
        const mixed = picked
          .map(([c, flips]) => {
            const [tag, name, ...rest] = c.split(' ');
            const n = [...name!].map((ch, i) => (flips[i] ? ch.toLowerCase() : ch)).join('');
            return `${[tag, n, ...rest].join(' ')}\r\n`;
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

  // The framer reads received octets where they lie (no copy per read): what it has not framed
  // when receive() returns must be copied, as the engine may reuse or overwrite its buffer.
  it('the engine may overwrite a received buffer once receive() returned', () => {
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 10 }),
        fc.boolean(),
        fc.array(fc.nat(), { maxLength: 20 }),
        fc.constantFrom(0x0a, 0x20, 0x7b, 0x41),
        (pieces, withStartTls, cuts, junk) => {
          const bytes = enc(pieces.join('') + (withStartTls ? `${STARTTLS}b NOOP\r\n` : ''));
          const run = (overwrite: boolean) => {
            const s = newSession({}, SMALL);
            s.start(0);
            const seen: string[] = [];
            const keep = (actions: Action[]) => {
              // Octets in actions are read when received, as the engine would send them.
              for (const a of actions) {
                if (a.type === 'send') seen.push(dec(a.data));
                else if (a.type === 'close')
                  seen.push(`close ${a.reason} ${dec(a.data ?? enc(''))}`);
                else if (a.type === 'starttls')
                  seen.push(`starttls ${dec(a.goAhead)} ${dec(a.trailing)}`);
              }
              return actions;
            };
            const trailing: Uint8Array[] = [];
            for (const chunk of splitAt(bytes, cuts)) {
              const mine = chunk.slice();
              for (const a of keep(s.receive(mine, 0)))
                if (a.type === 'starttls') trailing.push(a.trailing);
              if (overwrite) mine.fill(junk);
            }
            // A trailing buffer is the session's own copy, not a view of a received one.
            return { seen, trailing: trailing.map(dec) };
          };
          expect(run(true)).toEqual(run(false));
        },
      ),
      TIME,
    );
  });

  it('nothing after STARTTLS is ever answered or framed', () => {
    const after = fc.oneof(piece.map(enc), fc.uint8Array({ maxLength: 40 }));
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('a CAPABILITY\r\n', 'b NOOP\r\n', 'k FROB\r\n', 'd ID NIL\r\n'), {
          maxLength: 4,
        }),
        fc.array(after, { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (before, rest, cuts) => {
          const head = enc(before.join('') + STARTTLS);
          const tail = enc(rest.map(dec).join(''));
          const all = new Uint8Array([...head, ...tail]);
          const s = newSession();
          s.start(0);
          const r = feedPastStartTls(s, splitAt(all, cuts));
          expect(r.problems).toEqual([]);
          expect(r.starttls).toBeDefined();
          expect(r.starttls?.state).toEqual({ tag: 'z' });
          // every octet after the STARTTLS line went to trailing or a later (logged) receive
          expect(dec(r.trailing)).toBe(dec(tail));
        },
      ),
      TIME,
    );
  });
});

// Issue 14: before TLS no reply ever invites credentials: no `+` continuation for LOGIN or
// AUTHENTICATE, with literals of either kind, with or without SASL-IR, in any chunking.
describe('no credential is invited before TLS', () => {
  const AUTH = [
    'a LOGIN {5}\r\n',
    'a LOGIN alice {6}\r\n',
    'a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n',
    'a LOGIN "alice" {6}\r\n',
    'a login {5}\r\n',
    'a AUTHENTICATE PLAIN\r\n',
    'a AUTHENTICATE PLAIN {8}\r\n',
    'a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n',
    'a AUTHENTICATE LOGIN\r\n',
    'a AUTHENTICATE PLAIN =\r\n',
    'b NOOP\r\n',
    'c CAPABILITY\r\n',
  ];
  it('no + continuation for any authentication command', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...AUTH), { minLength: 1, maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (pieces, cuts) => {
          const { text } = observe(splitAt(enc(pieces.join('')), cuts), {});
          expect(text).not.toMatch(/(^|\r\n)\+/);
          expect(text).not.toMatch(/AUTH=/);
        },
      ),
      TIME,
    );
  });
});

// Issue 14: a client that sends the refused literal anyway: its content is never a command and
// never echoed (as a tag or otherwise), in any chunking.
describe('a refused credential literal sent anyway', () => {
  it('is discarded unread', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^[qzjxkv0-9][qzjxkv0-9 ]{3,19}$/),
        fc.constantFrom('LOGIN {9}', 'LOGIN alice {9}', 'AUTHENTICATE PLAIN {9}'),
        fc.array(fc.nat(), { maxLength: 8 }),
        (secret, command, cuts) => {
          const input = `a ${command}\r\n${secret}\r\nb NOOP\r\n`;
          const { text } = observe(splitAt(enc(input), cuts), {});
          expect(text).toMatch(/^a NO \[PRIVACYREQUIRED\] [^\r]*\r\nb OK NOOP completed\r\n$/);
        },
      ),
      TIME,
    );
  });
});
