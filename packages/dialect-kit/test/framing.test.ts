// The kit's framers for strings/literals and self-delimiting PDUs: exact events, the same events
// under any chunking, garbage never throws, and the cost stays O(input) for a peer sending one
// octet per read.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  berDefiniteLength,
  type CommandEvent,
  CommandFramer,
  type CommandFramerLimits,
  type CommandFramerOptions,
  lengthPrefixed,
  type PduEvent,
  PduFramer,
  type PduHeaderDecoder,
  type Token,
  tokenizeLine,
  tokenText,
} from '../src/index.js';
import { enc } from '../src/testing.js';

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 300 };
const LIMITS: CommandFramerLimits = {
  maxLineLength: 100,
  maxLiteralSize: 1000,
  maxCommandSize: 4000,
  maxTokens: 50,
};

/** How a test answers a synchronizing literal: accept (send `+ OK`) or refuse. */
type Policy = (size: number) => boolean;
const acceptAll: Policy = () => true;

/** A readable form of an event, so different chunkings compare with toEqual. */
function show(e: CommandEvent): string {
  switch (e.type) {
    case 'command':
      return `command ${e.size} ${e.tokens.map(showToken).join(' ')}`;
    case 'literal':
      return `literal ${e.size} ${e.tokens.map(showToken).join(' ')}`;
    case 'bad':
      return `bad ${e.reason} [${e.tokens.map(showToken).join(' ')}] head=${JSON.stringify(e.head)}`;
    case 'fatal':
      return `fatal ${e.detail}`;
  }
}
function showToken(t: Token): string {
  switch (t.type) {
    case 'atom':
      return `a:${JSON.stringify(t.text)}`;
    case 'quoted':
      return `q:${JSON.stringify(t.text)}`;
    case 'literal':
      return `${t.sync ? 'L' : 'L+'}:${JSON.stringify(tokenText(t))}`;
    case 'open':
      return '(';
    case 'close':
      return ')';
  }
}

function frameCommands(
  chunks: readonly Uint8Array[],
  limits: CommandFramerLimits = LIMITS,
  options: CommandFramerOptions = {},
  policy: Policy = acceptAll,
): string[] {
  const f = new CommandFramer(limits, options);
  const out: string[] = [];
  for (const c of chunks) {
    f.push(c);
    for (let e = f.next(); e; e = f.next()) {
      out.push(show(e));
      if (e.type === 'literal') {
        if (policy(e.size)) f.accept();
        else f.refuse();
      }
    }
  }
  return out;
}

/** `data` cut at the given points (sorted, deduplicated, in range). */
function cut(data: Uint8Array, points: readonly number[]): Uint8Array[] {
  const at = [...new Set(points.map((p) => p % (data.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const p of at) {
    out.push(data.subarray(from, p));
    from = p;
  }
  out.push(data.subarray(from));
  return out;
}

const bytesOf = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

describe('tokenizeLine', () => {
  it('reads atoms, quoted strings with escapes, parentheses and a final literal marker', () => {
    const r = tokenizeLine(enc('a1 ID ("name" "x\\"y\\\\z") \\Seen {12+}'));
    expect(r).toEqual({
      ok: true,
      tokens: [
        { type: 'atom', text: 'a1' },
        { type: 'atom', text: 'ID' },
        { type: 'open' },
        { type: 'quoted', text: 'name' },
        { type: 'quoted', text: 'x"y\\z' },
        { type: 'close' },
        { type: 'atom', text: '\\Seen' },
      ],
      literal: { size: 12, sync: false },
    });
    expect(tokenizeLine(enc('x {007}'))).toMatchObject({
      ok: true,
      literal: { size: 7, sync: true },
    });
    expect(tokenizeLine(enc(''))).toEqual({ ok: true, tokens: [], literal: null });
  });

  it('refuses what would let a client hide or move a boundary, keeping the tokens before it', () => {
    const bad = (s: string) => {
      const r = tokenizeLine(bytesOf(s));
      return r.ok ? 'ok' : `${r.reason}: ${r.detail} [${r.tokens.map(showToken).join(' ')}]`;
    };
    expect(bad('a "open')).toBe('syntax: unterminated quoted string [a:"a"]');
    expect(bad('a "x\\n"')).toBe('syntax: bad escape in a quoted string [a:"a"]');
    expect(bad('a "x"y')).toBe('syntax: no space after a string [a:"a"]');
    expect(bad('a x{5}')).toBe('syntax: octet 0x7b in an atom [a:"a"]');
    expect(bad('a {5} b')).toBe('syntax: a literal marker not at the end of the line [a:"a"]');
    expect(bad('a {} b')).toBe('syntax: no digits in a literal marker [a:"a"]');
    expect(bad('a {5')).toBe('syntax: bad literal marker [a:"a"]');
    expect(bad('a b\x00c')).toBe('syntax: octet 0x00 in an atom [a:"a"]');
    expect(bad('a \xe9')).toBe('syntax: octet 0xe9 outside a string [a:"a"]');
    expect(bad('a "\x00"')).toBe('syntax: NUL or CR in a quoted string [a:"a"]');
    // UTF-8 is fine inside a quoted string (IMAP4rev2, ManageSieve).
    expect(tokenizeLine(enc('"caf\u00e9"'))).toMatchObject({ ok: true });
    const many = tokenizeLine(enc('a b c d'), 3);
    expect(many).toMatchObject({ ok: false, reason: 'too-many-tokens' });
    expect(tokenizeLine(enc('a b {1}'), 2)).toMatchObject({ ok: false, reason: 'too-many-tokens' });
    expect(tokenizeLine(enc('x'), 1, true)).toMatchObject({
      ok: false,
      detail: 'no space after a literal',
    });
  });
});

describe('CommandFramer', () => {
  it('pauses at a synchronizing literal until the dialect accepts it', () => {
    const f = new CommandFramer(LIMITS);
    f.push(enc('a LOGIN {5}\r\n'));
    expect(show(f.next()!)).toBe('literal 5 a:"a" a:"LOGIN"');
    f.push(enc('alice "pw"\r\nb NOOP\r\n'));
    expect(f.next()).toBeNull(); // paused: nothing is framed before accept()
    f.accept();
    expect(show(f.next()!)).toBe('command 21 a:"a" a:"LOGIN" L:"alice" q:"pw"');
    expect(show(f.next()!)).toBe('command 6 a:"b" a:"NOOP"');
    expect(f.next()).toBeNull();
  });

  it('after refuse() the octets the client will not send are not swallowed', () => {
    const out = frameCommands([enc('a LOGIN {5}\r\nb NOOP\r\n')], LIMITS, {}, () => false);
    expect(out).toEqual(['literal 5 a:"a" a:"LOGIN"', 'command 6 a:"b" a:"NOOP"']);
  });

  it('reads non-synchronizing literals, and {n} at once with synchronizing: immediate', () => {
    const input = enc('PUTSCRIPT "s" {4+}\r\nkeep\r\nx {2}\r\nab\r\n');
    expect(frameCommands([input], LIMITS, { synchronizing: 'immediate' })).toEqual([
      'command 22 a:"PUTSCRIPT" q:"s" L+:"keep"',
      'command 7 a:"x" L:"ab"',
    ]);
  });

  it('a literal followed by anything but a space, ) or the line end is refused', () => {
    expect(frameCommands([enc('a {1+}\r\nxy\r\nb NOOP\r\n')])).toEqual([
      'bad syntax [a:"a" L+:"x"] head="a {1+}"',
      'command 6 a:"b" a:"NOOP"',
    ]);
  });

  it('a refused line that announces {n+} has its octets skipped, never framed', () => {
    // The literal's octets look like a command; they must not become one.
    const out = frameCommands([enc('a "x {9+}\r\nb LOGOUT\r\nc NOOP\r\n')]);
    expect(out).toEqual(['bad syntax [a:"a"] head="a \\"x {9+}"', 'command 6 a:"c" a:"NOOP"']);
  });

  it('a line too long is refused once, as soon as that is certain, and discarded to its end', () => {
    const f = new CommandFramer(LIMITS);
    f.push(enc(`t1 ${'x'.repeat(98)}`));
    expect(f.next()).toBeNull();
    f.push(enc('y'));
    const e = f.next();
    expect(e).toMatchObject({ type: 'bad', reason: 'line-too-long' });
    expect(e?.type === 'bad' && e.head.startsWith('t1 xxx')).toBe(true);
    f.push(enc(`${'z'.repeat(5000)}\r\nt2 NOOP\r\n`));
    expect(show(f.next()!)).toBe('command 7 a:"t2" a:"NOOP"');
    // 100 octets + CRLF fits whatever the chunking.
    expect(frameCommands(cut(enc(`${'a'.repeat(100)}\r\n`), [101]))).toHaveLength(1);
    expect(frameCommands([enc(`${'a'.repeat(100)}\r\n`)])[0]).toMatch(/^command 100/);
  });

  it('a discarded overlong line that ends in {n+} has its literal skipped too', () => {
    const out = frameCommands([enc(`a ${'x'.repeat(200)} {3+}\r\nabc\r\nb NOOP\r\n`)]);
    expect(out).toEqual([expect.stringMatching(/^bad line-too-long/), 'command 6 a:"b" a:"NOOP"']);
  });

  it('limits: literal, command and tokens', () => {
    // Synchronizing and too big: refused, nothing to skip (the client waits for `+`).
    expect(frameCommands([enc('a APPEND {5000}\r\nb NOOP\r\n')])).toEqual([
      'bad literal-too-big [a:"a" a:"APPEND"] head="a APPEND {5000}"',
      'command 6 a:"b" a:"NOOP"',
    ]);
    // Non-synchronizing and too big: the stream cannot be resynchronised.
    const f = new CommandFramer(LIMITS);
    f.push(enc('a APPEND {5000+}\r\nb NOOP\r\n'));
    expect(f.next()).toMatchObject({ type: 'fatal' });
    expect(f.dead).toBe(true);
    f.push(enc('c NOOP\r\n'));
    expect(f.next()).toBeNull();
    // A 20-digit count is over every limit.
    expect(frameCommands([enc('a {99999999999999999999}\r\n')])[0]).toMatch(/literal-too-big/);
    // The command's total: four 900-octet literals fit in 4000, a fifth cannot be skipped.
    const four = `a X${' {900+}\r\n'.concat('q'.repeat(900)).repeat(4)}`;
    expect(frameCommands([enc(`${four}\r\n`)])[0]).toMatch(/^command 3631 /);
    expect(frameCommands([enc(`${four} {900+}\r\n${'q'.repeat(900)}\r\n`)])).toEqual([
      'fatal a literal of 900 octets that cannot be skipped',
    ]);
    expect(frameCommands([enc(`${'('.repeat(51)}\r\nb\r\n`)])).toEqual([
      expect.stringMatching(/^bad too-many-tokens/),
      'command 1 a:"b"',
    ]);
  });

  it('a discarded line whose count was cut off is fatal', () => {
    const out = frameCommands([enc(`a ${'x'.repeat(200)}{${'1'.repeat(30)}+}\r\n`)]);
    expect(out).toEqual([
      expect.stringMatching(/^bad line-too-long/),
      expect.stringMatching(/^fatal/),
    ]);
  });

  it('takeRest() returns the octets after the last framed command, unread', () => {
    const f = new CommandFramer(LIMITS);
    f.push(enc('a STARTTLS\r\nb LOGIN x y\r\n'));
    expect(show(f.next()!)).toBe('command 10 a:"a" a:"STARTTLS"');
    expect(new TextDecoder().decode(f.takeRest())).toBe('b LOGIN x y\r\n');
    expect(f.next()).toBeNull();
  });

  // The words a client could send, including every marker and every broken form.
  const piece = fc.constantFrom(
    'a ',
    'LOGIN ',
    '"q\\"x" ',
    '"open',
    '\\',
    '(',
    ') ',
    '{3}',
    '{2+}',
    '{0}',
    '{12+}',
    '{9999+}',
    '{x}',
    '\r\n',
    '\n',
    '\r',
    'abc',
    'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz',
    '\x00',
    '\xff',
  );
  const smallLimits: CommandFramerLimits = {
    maxLineLength: 40,
    maxLiteralSize: 100,
    maxCommandSize: 150,
    maxTokens: 12,
  };

  it('a refused line ending in `{n+}` then a bare CR announces nothing, cut or whole (CI seed 572874352)', () => {
    const data = bytesOf(`a ${'z'.repeat(31)}{9999+}\r\r\n`);
    const policy: Policy = () => true;
    for (const synchronizing of ['pause', 'immediate'] as const) {
      const whole = frameCommands([data], smallLimits, { synchronizing }, policy);
      const octets = frameCommands(
        cut(data, [...data.keys()]),
        smallLimits,
        { synchronizing },
        policy,
      );
      expect(whole).toEqual(octets);
      expect(whole.some((e) => e.startsWith('fatal'))).toBe(false);
    }
  });

  it('property: any chunking gives the same events, in both synchronizing modes', () => {
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 40 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        fc.constantFrom<'pause' | 'immediate'>('pause', 'immediate'),
        (pieces, points, synchronizing) => {
          const data = bytesOf(pieces.join(''));
          const policy: Policy = (size) => size % 2 === 0; // some accepted, some refused
          const whole = frameCommands([data], smallLimits, { synchronizing }, policy);
          const split = frameCommands(cut(data, points), smallLimits, { synchronizing }, policy);
          const octets = frameCommands(
            cut(data, [...data.keys()]),
            smallLimits,
            { synchronizing },
            policy,
          );
          expect(split).toEqual(whole);
          expect(octets).toEqual(whole);
        },
      ),
      TIME,
    );
  });

  it('property: random octets never throw, and after fatal nothing is framed', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 10 }),
        fc.constantFrom<'pause' | 'immediate'>('pause', 'immediate'),
        (chunks, synchronizing) => {
          const f = new CommandFramer(smallLimits, { synchronizing });
          let dead = false;
          for (const c of chunks) {
            f.push(c);
            for (let e = f.next(); e; e = f.next()) {
              expect(dead).toBe(false);
              if (e.type === 'fatal') dead = true;
              if (e.type === 'literal') f.accept();
            }
          }
        },
      ),
      TIME,
    );
  });

  // Commands built from tokens come back as those tokens, however they arrive.
  const atom = fc
    .stringMatching(/^[A-Za-z0-9.\\*%\][-]{1,8}$/)
    .map((text): Token => ({ type: 'atom', text }));
  const quoted = fc
    .string({ maxLength: 10, unit: fc.constantFrom('a', ' ', '"', '\\', '{', '}', '(', '\xe9') })
    .map((text): Token => ({ type: 'quoted', text }));
  const literal = fc
    .tuple(fc.uint8Array({ maxLength: 20 }), fc.boolean())
    .map(([data, sync]): Token => ({ type: 'literal', data, sync }));
  const encodeCommand = (tokens: readonly Token[]): string => {
    let out = '';
    tokens.forEach((t, i) => {
      if (i > 0) out += ' ';
      if (t.type === 'atom') out += t.text;
      else if (t.type === 'quoted') out += `"${t.text.replace(/[\\"]/g, (m) => `\\${m}`)}"`;
      else if (t.type === 'literal') {
        out += `{${t.data.length}${t.sync ? '' : '+'}}\r\n${String.fromCharCode(...t.data)}`;
      }
    });
    return `${out}\r\n`;
  };

  it('property: encoded commands frame back to their tokens under any chunking', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(atom, fc.array(fc.oneof(atom, quoted, literal), { maxLength: 6 })), {
          minLength: 1,
          maxLength: 5,
        }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (commands, points) => {
          const lists = commands.map(([tag, rest]) => [tag, ...rest]);
          const data = bytesOf(lists.map(encodeCommand).join(''));
          const expected = lists.map((tokens) =>
            tokens.map((t) => (t.type === 'literal' ? showToken(t) : showToken(t))).join(' '),
          );
          const got = frameCommands(cut(data, points), {
            maxLineLength: 1000,
            maxLiteralSize: 1000,
            maxCommandSize: 100_000,
            maxTokens: 100,
          })
            .filter((e) => e.startsWith('command'))
            .map((e) => e.replace(/^command \d+ /, '').replace(/^command \d+$/, ''));
          expect(got).toEqual(expected);
        },
      ),
      TIME,
    );
  });

  it('a 1 MiB literal and a long line sent one octet per read cost O(their length)', () => {
    const size = 1 << 20;
    const f = new CommandFramer(
      { maxLineLength: 200_000, maxLiteralSize: size, maxCommandSize: 2 * size, maxTokens: 10 },
      { synchronizing: 'immediate' },
    );
    const data = enc(`a ${'x'.repeat(100_000)} {${size}+}\r\n${'y'.repeat(size)}\r\n`);
    const t0 = performance.now();
    let last: CommandEvent | null = null;
    for (let i = 0; i < data.length; i++) {
      f.push(data.subarray(i, i + 1));
      for (let e = f.next(); e; e = f.next()) last = e;
    }
    // Re-scanning or re-copying the pending octets on each read takes minutes here (O(n²)).
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(
      last?.type === 'command' && last.tokens[2]?.type === 'literal' && last.tokens[2].data.length,
    ).toBe(size);
  });
});

function framePdus(
  chunks: readonly Uint8Array[],
  decode: PduHeaderDecoder,
  maxPduSize: number,
): string[] {
  const f = new PduFramer(decode, { maxPduSize });
  const out: string[] = [];
  const showPdu = (e: PduEvent) =>
    e.type === 'pdu'
      ? `pdu ${e.headerLength} ${Buffer.from(e.pdu).toString('hex')}`
      : `error ${e.reason}`;
  for (const c of chunks) {
    f.push(c);
    for (let e = f.next(); e; e = f.next()) out.push(showPdu(e));
  }
  return out;
}

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s/g, ''), 'hex'));

describe('PduFramer with lengthPrefixed', () => {
  it('frames by a length field: body length, whole-PDU length (TPKT), field length (PostgreSQL)', () => {
    // DNS over TCP (RFC 1035 section 4.2.2): 2 octets, the message after them.
    expect(framePdus([hex('0003 aabbcc 0001 dd')], lengthPrefixed({ size: 2 }), 100)).toEqual([
      'pdu 2 0003aabbcc',
      'pdu 2 0001dd',
    ]);
    // TPKT (RFC 1006): version, reserved, 2-octet length of the whole packet.
    expect(
      framePdus(
        [hex('0300 0007 e0ffee')],
        lengthPrefixed({ offset: 2, size: 2, counts: 'pdu' }),
        100,
      ),
    ).toEqual(['pdu 4 03000007e0ffee']);
    // PostgreSQL: a type octet, then a 4-octet length that counts itself.
    expect(
      framePdus(
        [hex('51 00000006 6869 58 00000004')],
        lengthPrefixed({ offset: 1, size: 4, counts: 'field' }),
        100,
      ),
    ).toEqual(['pdu 5 51000000066869', 'pdu 5 5800000004']);
    // MySQL: 3-octet little-endian length, then a sequence octet.
    expect(
      framePdus(
        [hex('020000 00 abcd')],
        lengthPrefixed({ size: 3, littleEndian: true, headerLength: 4 }),
        100,
      ),
    ).toEqual(['pdu 4 02000000abcd']);
  });

  it('refuses a length over the limit from the header alone, and one shorter than the header', () => {
    const f = new PduFramer(lengthPrefixed({ size: 4 }), { maxPduSize: 1024 });
    f.push(hex('7fffffff 00'));
    expect(f.next()).toEqual({
      type: 'error',
      reason: 'too-big',
      detail: '2147483651 octets, at most 1024',
    });
    expect(f.dead).toBe(true);
    f.push(hex('00000000'));
    expect(f.next()).toBeNull();
    expect(framePdus([hex('0001 00')], lengthPrefixed({ size: 2, counts: 'pdu' }), 100)).toEqual([
      'error malformed',
    ]);
    expect(() => lengthPrefixed({ size: 5 as 4 })).toThrow(RangeError);
  });
});

describe('PduFramer with berDefiniteLength', () => {
  const ldap = berDefiniteLength({ tags: [0x30] });
  it('short and long form lengths, high tag numbers', () => {
    expect(framePdus([hex('3003 020101 3081 03 020102')], ldap, 100)).toEqual([
      'pdu 2 3003020101',
      'pdu 3 308103020102',
    ]);
    expect(framePdus([hex('5f2101 ff')], berDefiniteLength(), 100)).toEqual(['pdu 3 5f2101ff']);
    expect(framePdus([hex('3082 0000')], ldap, 100)).toEqual(['pdu 4 30820000']);
  });

  it('refuses the indefinite form, 0xff, too many length octets, an unexpected tag, too big', () => {
    expect(framePdus([hex('3080 0000')], ldap, 100)).toEqual(['error malformed']);
    expect(framePdus([hex('30ff')], ldap, 100)).toEqual(['error malformed']);
    expect(framePdus([hex('3085 0000000001')], ldap, 100)).toEqual(['error malformed']);
    expect(framePdus([hex('0401 00')], ldap, 100)).toEqual(['error malformed']);
    expect(framePdus([hex('1fffffffff01')], berDefiniteLength(), 100)).toEqual(['error malformed']);
    // Decided from the header: nothing of the 16 MiB is waited for or kept.
    const f = new PduFramer(ldap, { maxPduSize: 1000 });
    f.push(hex('3084 01000000'));
    expect(f.next()).toMatchObject({ type: 'error', reason: 'too-big' });
    expect(f.pending).toBe(0);
  });

  it('a decoder that throws is a malformed PDU, not a crash', () => {
    const f = new PduFramer(
      () => {
        throw new Error('bug');
      },
      { maxPduSize: 10 },
    );
    f.push(hex('00'));
    expect(f.next()).toEqual({
      type: 'error',
      reason: 'malformed',
      detail: 'header decoder threw: bug',
    });
  });

  const berPdu = fc
    .tuple(fc.uint8Array({ maxLength: 300 }), fc.constantFrom(0, 1, 2))
    .map(([body, form]) => {
      const n = body.length;
      const len =
        form === 0 && n < 128 ? [n] : form === 1 && n < 256 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
      return Uint8Array.from([0x30, ...len, ...body]);
    });

  it('property: any chunking gives the same PDUs and errors; garbage never throws', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(berPdu, fc.uint8Array({ maxLength: 8 })), { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        fc.integer({ min: 1, max: 400 }),
        (parts, points, max) => {
          const data = Uint8Array.from(parts.flatMap((p) => [...p]));
          for (const decode of [ldap, berDefiniteLength(), lengthPrefixed({ size: 2 })]) {
            const whole = framePdus([data], decode, max);
            expect(framePdus(cut(data, points), decode, max)).toEqual(whole);
            expect(framePdus(cut(data, [...data.keys()]), decode, max)).toEqual(whole);
          }
        },
      ),
      TIME,
    );
  });

  it('property: encoded PDUs come back whole', () => {
    fc.assert(
      fc.property(
        fc.array(berPdu, { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (pdus, points) => {
          const data = Uint8Array.from(pdus.flatMap((p) => [...p]));
          const got = framePdus(cut(data, points), ldap, 400);
          expect(got.map((g) => g.split(' ')[2])).toEqual(
            pdus.map((p) => Buffer.from(p).toString('hex')),
          );
        },
      ),
      TIME,
    );
  });

  it('a 4 MiB PDU sent one octet per read costs O(its length)', () => {
    const size = 4 << 20;
    const data = new Uint8Array(size + 6);
    data.set([
      0x30,
      0x84,
      (size >>> 24) & 0xff,
      (size >>> 16) & 0xff,
      (size >>> 8) & 0xff,
      size & 0xff,
    ]);
    const f = new PduFramer(ldap, { maxPduSize: size + 6 });
    const t0 = performance.now();
    let got = 0;
    for (let i = 0; i < data.length; i++) {
      f.push(data.subarray(i, i + 1));
      const e = f.next();
      if (e?.type === 'pdu') got = e.pdu.length;
    }
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(got).toBe(size + 6);
  });
});
