// Properties from DESIGN.md "Dialect interface - contract": any chunking behaves the same, peer
// input never throws, BER length lies and deep nesting end in a Notice of Disconnection, nothing
// pipelined after StartTLS is ever answered. Time-boxed.
import type { Action } from '@tlsproxy/dialect-kit';
import {
  checkActions as checkContract,
  feedPastStartTls,
  bytewise as octetByOctet,
  splitAt,
} from '@tlsproxy/dialect-kit/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parse } from '../src/ber.js';
import {
  abandon,
  cat,
  critical,
  DECODING_NOTICE,
  equal,
  extended,
  feed,
  hex,
  int,
  msg,
  newSession,
  present,
  SLAPD,
  search,
  seq,
  simpleBind,
  startTls,
  str,
  tlv,
  toHex,
  written,
} from './helpers.js';

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 400 };
const SMALL = { maxPduSize: 64, maxDepth: 6, maxPdus: 1000, maxBadPdus: 1000 };

/** Pieces of sessions: valid requests, refused ones, malformed and over-limit ones. */
const PIECES: Uint8Array[] = [
  search(1, '', 0),
  search(2, '', 0, ['supportedExtension', 'supportedLDAPVersion']),
  search(3, '', 0, ['+'], tlv(0xa1, equal('objectClass', 'x'), present('objectClass'))),
  search(4, 'dc=example,dc=test', 2),
  simpleBind(5, 'cn=admin', 'secret'),
  extended(6, '1.3.6.1.4.1.4203.1.11.3'),
  extended(7, '1.2.3'),
  extended(8, '1.3.6.1.4.1.1466.20037', 'v'),
  startTls(9, critical('1.2.3.4')),
  abandon(10, 1),
  msg(11, str('cn=x', 0x4a)),
  search(12, '', 0, [], tlv(0xa0, tlv(0xa0, tlv(0xa0, tlv(0xa0, tlv(0xa0, present('x'))))))),
  search(13, '', 0, ['a'.repeat(80)]),
  hex('3080'),
  hex('310100'),
  hex('30 84 00 00 00 03 020101'),
  msg(14, tlv(0x61, int(0, 0x0a), str(''), str(''))),
  seq(int(0), tlv(0x42)),
  msg(15, Uint8Array.of(0x42, 0x00)),
];
const piece = fc.constantFrom(...PIECES);
const STARTTLS = startTls(99);

/** What the client observes: bytes written, then the final action (timers and logs aside). */
function observe(chunks: Uint8Array[], limits: Record<string, number>) {
  const s = newSession({}, limits);
  s.start(0);
  const actions: Action[] = [];
  for (const c of chunks) actions.push(...s.receive(c, 0));
  const last = actions.filter((a) => a.type !== 'timer' && a.type !== 'log').at(-1);
  const final =
    last?.type === 'starttls'
      ? {
          type: 'starttls',
          state: last.state,
          goAhead: toHex(last.goAhead),
        }
      : last?.type === 'close'
        ? { type: 'close', reason: last.reason }
        : null;
  return { out: toHex(written(actions)), final, actions };
}

/** Every send is whole LDAPMessages from us; a close carries at most a Notice. */
function checkActions(actions: Action[]): void {
  // after a close or the StartTLS go-ahead, only logs
  const end = actions.findIndex((a) => a.type === 'close' || a.type === 'starttls');
  if (end >= 0) expect(actions.slice(end + 1).every((a) => a.type === 'log')).toBe(true);
  checkContract(actions, {
    send: (a) => expect(parse(a.data, 8).tag).toBe(0x30),
    close: (a) => {
      if (!a.data) return;
      const notice = parse(a.data, 8);
      expect(notice.children[0]!.value).toEqual(Uint8Array.of(0)); // messageID 0
      expect(notice.children[1]!.tag).toBe(0x78);
    },
    starttls: (a) => {
      parse(a.goAhead, 8);
      parse(a.unavailable, 8);
    },
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
          fc.array(piece, { maxLength: 8 }),
          fc.boolean(),
          fc.array(fc.nat(), { maxLength: 20 }),
          (pieces, withStartTls, cuts) => {
            const bytes = cat(...pieces, ...(withStartTls ? [STARTTLS, search(100, '', 0)] : []));
            const whole = observe([bytes], limits);
            const split = observe(splitAt(bytes, cuts), limits);
            const bytewise = observe(octetByOctet(bytes), limits);
            expect(split.out).toBe(whole.out);
            expect(split.final).toEqual(whole.final);
            expect(bytewise.out).toBe(whole.out);
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
      piece,
      fc.uint8Array({ maxLength: 8 }).map((b) => cat(hex('30'), b)),
      fc.constantFrom(hex('30'), hex('3084'), hex('0201'), hex('77'), hex('80')),
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
        actions.push(...s.timer(now + 1e6), ...(s.eof?.(now) ?? []));
        checkActions(actions);
        expect(actions.some((a) => a.type === 'close' || a.type === 'starttls')).toBe(true);
      }),
      TIME,
    );
  });

  it('a PDU whose header is not a definite length within the limit ends in a Notice at once', () => {
    const header = fc.oneof(
      fc.constant(hex('3080')), // indefinite
      fc.integer({ min: 5, max: 126 }).map((n) => Uint8Array.of(0x30, 0x80 | n)), // > 4 octets
      fc
        .integer({ min: 65, max: 0xffffffff })
        .map((n) =>
          Uint8Array.of(0x30, 0x84, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff),
        ), // over SMALL.maxPduSize
      fc
        .integer({ min: 0, max: 255 })
        .filter((t) => t !== 0x30)
        .map((t) => Uint8Array.of(t, 0x03)),
    );
    fc.assert(
      fc.property(
        fc.array(
          piece.filter((p) => p[0] === 0x30 && p.length < 60),
          { maxLength: 3 },
        ),
        header,
        fc.uint8Array({ maxLength: 32 }),
        (before, head, rest) => {
          const s = newSession({}, { ...SMALL, maxBadPdus: 1000 });
          s.start(0);
          const acts = [...before.flatMap((b) => s.receive(b, 0))];
          if (acts.some((a) => a.type === 'close' || a.type === 'starttls')) return;
          const now = s.receive(head, 0);
          expect(toHex(written(now))).toBe(DECODING_NOTICE);
          expect(now.at(-1)?.type).toBe('close');
          expect(s.receive(rest, 0)).toEqual([]);
        },
      ),
      TIME,
    );
  });

  it('inner lengths that lie never throw: a Notice, or waiting for more octets', () => {
    fc.assert(
      fc.property(
        piece.filter((p) => p[0] === 0x30 && p[1]! < 0x80),
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        (p, at, value) => {
          const bytes = p.slice();
          const i = 2 + (at % (bytes.length - 2));
          bytes[i] = value; // any octet inside the contents, lengths included
          const s = newSession();
          s.start(0);
          const acts = s.receive(bytes, 0);
          checkActions(acts);
        },
      ),
      TIME,
    );
  });

  it('nesting up to maxDepth is answered, deeper is a Notice', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 60 }),
        fc.array(fc.constantFrom(0xa0, 0xa1, 0xa2), { maxLength: 60 }),
        (depth, kinds) => {
          let filter = present('objectClass');
          for (let i = 0; i < depth; i++) filter = tlv(kinds[i] ?? 0xa0, filter);
          const { out } = observe([search(1, '', 0, [], filter)], {});
          // LDAPMessage 1, SearchRequest 2, filter 3 + depth
          if (3 + depth > 32) expect(out).toBe(DECODING_NOTICE);
          else expect(out).not.toContain(DECODING_NOTICE);
        },
      ),
      TIME,
    );
  });

  it('nothing after the StartTLS PDU is ever answered or framed', () => {
    const after = fc.oneof(piece, fc.uint8Array({ maxLength: 40 }));
    fc.assert(
      fc.property(
        fc.array(
          fc.constantFrom(
            search(1, '', 0),
            simpleBind(2, '', ''),
            extended(3, '1.2'),
            abandon(4, 1),
          ),
          { maxLength: 4 },
        ),
        fc.array(after, { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (before, rest, cuts) => {
          const head = cat(...before, STARTTLS);
          const tail = cat(...rest);
          const s = newSession();
          s.start(0);
          const r = feedPastStartTls(s, splitAt(cat(head, tail), cuts));
          expect(r.problems).toEqual([]);
          expect(r.starttls).toBeDefined();
          expect(r.starttls?.state).toEqual({ messageId: 99 });
          expect(toHex(r.trailing)).toBe(toHex(tail));
        },
      ),
      TIME,
    );
  });
});

// Issue 14: before TLS no bind is ever accepted or continued: every BindRequest (simple with or
// without a password, SASL with or without credentials) gets confidentialityRequired (13), never
// success (0) or saslBindInProgress (14), in any chunking.
describe('no credential is accepted or invited before TLS', () => {
  const sasl = (mech: string, creds?: string) =>
    msg(
      1,
      tlv(
        0x60,
        int(3),
        str(''),
        tlv(0xa3, str(mech), ...(creds === undefined ? [] : [str(creds)])),
      ),
    );
  const BINDS = [
    simpleBind(1, 'cn=admin,dc=example,dc=test', 'secret'),
    simpleBind(1, '', ''),
    simpleBind(1, 'cn=admin', ''),
    sasl('PLAIN', '\0alice\0secret'),
    sasl('DIGEST-MD5'),
    sasl('EXTERNAL'),
  ];
  it('every bind gets 13 and nothing else', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...BINDS), { minLength: 1, maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (binds, cuts) => {
          const bytes = cat(...binds);
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort(
            (a, b) => a - b,
          );
          const chunks: Uint8Array[] = [];
          let prev = 0;
          for (const p of [...points, bytes.length]) {
            chunks.push(bytes.subarray(prev, p));
            prev = p;
          }
          expect(feed(chunks).out).toBe(SLAPD.bind13.repeat(binds.length));
        },
      ),
      { interruptAfterTimeLimit: 4000, numRuns: 300 },
    );
  });
});
