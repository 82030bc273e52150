// The parser's fast path (parseSimple) must give exactly what nearley gives for every command it
// takes, and decline the rest: generated lines, valid and invalid, are checked both ways, as the
// framer cuts them and as raw text (line end included).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Framer } from '../src/framer.js';
import { nameOf, parseCommand, parseSimple, parseWithGrammar } from '../src/parse.js';
import { enc } from './helpers.js';

const TIME = { interruptAfterTimeLimit: 8000, numRuns: 3000 };

const TAGS = [
  'a',
  'a1',
  'A001',
  'x.y',
  'a]b',
  "~!#$&'",
  '*',
  '+',
  'a+',
  'a*',
  'a%',
  'a(b',
  'a)',
  'a"b',
  'a{1}',
  'a\\b',
  '{3}',
  '',
  '\u00e9',
  'a\u0000',
  'a\u007f',
  'a\u0080',
  'a\r',
  't'.repeat(101),
];
const NAMES = [
  'CAPABILITY',
  'capability',
  'StartTls',
  'NOOP',
  'LOGOUT',
  'ID',
  'LOGIN',
  'AUTHENTICATE',
  'X]',
  'a%',
  '*',
  'N*',
  'A+B',
  '',
  'NO\u00e9P',
  'NOOP\r',
  'NOOP\u0000',
  '(NOOP)',
  '"NOOP"',
];
const ARGS = [
  'NIL',
  'nil',
  'PLAIN',
  'AGFsaWNl==',
  '\\Seen',
  '1:*',
  'BODY.PEEK[HEADER]',
  '%',
  'a]',
  '}',
  '+',
  '*',
  '""',
  '"x"',
  '"a b"',
  '"q\\"x"',
  '"q\\\\x"',
  '"bad\\x"',
  '"\\',
  '"unterminated',
  '"\u00e9\u00ff"',
  '"\u0000"',
  '"{5}"',
  '"(a)"',
  '"a\r"',
  '"\u0100"',
  '()',
  '(a)',
  '("name" "x")',
  '("name" "Thunderbird" "version" "115.0" "os" NIL)',
  '((a))',
  '(a (b))',
  '(a ())',
  '((a)',
  '(a (b)',
  '(()',
  '(a',
  'a)',
  '( a)',
  '(a )',
  '(a)(b)',
  '(a)b',
  '"a""b"',
  '{5}',
  '{5+}',
  '{}',
  'x{5}',
  '{3}\r\nabc',
  '{2+}\r\nxy',
  '{0}\r\n',
  '\u0080',
  'a\u0000',
  '(',
  ')',
  '"',
  '\\',
  '{',
];
const SEPS = [' ', ' ', ' ', ' ', '', '  ', '\t', '\r'];
const ENDS = ['\r\n', '\r\n', '\n', '', '\r', ' \r\n', '\r\r\n', '\n\n'];

const pick = (xs: readonly string[]) => fc.constantFrom(...xs);
/** `tag SP name (SP arg)* CRLF`, with every part sometimes wrong. */
const shaped = fc
  .tuple(
    pick(TAGS),
    pick(SEPS),
    pick(NAMES),
    fc.array(fc.tuple(pick(SEPS), pick(ARGS)), { maxLength: 5 }),
    pick(ENDS),
  )
  .map(([tag, sep, name, args, end]) => tag + sep + name + args.flat().join('') + end);
/** Mostly what clients send: valid parts, one space apart, sometimes one wrong part. */
const plausible = fc
  .tuple(
    pick(TAGS.slice(0, 6)),
    pick(NAMES.slice(0, 8)),
    fc.array(pick(ARGS.slice(0, 31)), { maxLength: 4 }),
    fc.option(pick(ARGS), { nil: '' }),
    pick(['\r\n', '\n']),
  )
  .map(
    ([tag, name, args, odd, end]) => `${[tag, name, ...args].join(' ')}${odd && ` ${odd}`}${end}`,
  );
/** Text from the characters that matter to the grammar, in any order. */
const scrambled = fc
  .array(pick([...'aZ1 ()"\\{}+*%]\u0000\u007f\u00e9\r\n', '{1}', '"x"', 'a NOOP']), {
    maxLength: 24,
  })
  .map((parts) => parts.join(''));
/** Any octets (8-bit included), as the framer decodes them. */
const octets = fc.uint8Array({ maxLength: 40 }).map((bytes) => String.fromCharCode(...bytes));
const line = fc.oneof(
  { arbitrary: plausible, weight: 3 },
  { arbitrary: shaped, weight: 3 },
  scrambled,
  octets,
);

const seen = { taken: 0, declined: 0 };

/** The fast path declines or agrees with nearley, and parseCommand is nearley's answer. */
function agrees(text: string, literalEnds: number[] = [], literals: Uint8Array[] = []): void {
  const reference = parseWithGrammar(text, literalEnds, literals);
  // As in parseCommand: a text the framer cut literals from never takes the fast path (it cannot
  // see where they were: `{5+}` inside what looks like a quoted string was one).
  const fast = literalEnds.length === 0 ? parseSimple(text) : undefined;
  if (fast === undefined) seen.declined++;
  else {
    seen.taken++;
    expect(fast, JSON.stringify(text)).toStrictEqual(reference);
  }
  expect(parseCommand(text, literalEnds, literals), JSON.stringify(text)).toStrictEqual(reference);
}

/** Every command the framer cuts from `input`, synchronizing literals accepted. */
function framed(input: string): void {
  const framer = new Framer({ maxLineLength: 8192, maxLiteralSize: 4096, maxCommandSize: 65536 });
  framer.push(enc(input));
  for (let event = framer.next(); event; event = framer.next()) {
    if (event.type === 'command') agrees(event.text, event.literalEnds, event.literals);
    else if (event.type === 'literal') framer.accept();
  }
}

describe('the fast path agrees with the grammar', () => {
  it('on generated lines, framed and raw: it declines or gives the same result', () => {
    fc.assert(
      fc.property(fc.array(line, { minLength: 1, maxLength: 4 }), (lines) => {
        for (const l of lines) {
          agrees(l);
          agrees(l.replace(/\r?\n$/, ''));
        }
        framed(lines.join(''));
      }),
      TIME,
    );
    // Not vacuous: both outcomes were exercised, many times.
    expect(seen.taken).toBeGreaterThan(500);
    expect(seen.declined).toBeGreaterThan(500);
  });

  it('a literal the framer cut inside what looks like a quoted string: the grammar decides', () => {
    // Found by the property above (seed -1928806530): the framer takes `{5+}` at a line's end as
    // a literal even inside an unterminated quoted string; parseSimple alone would read the
    // joined text as one quoted string, which is why parseCommand never asks it then.
    framed('a CAPABILITY "unterminated {5+}\r\na  "(a)"\r\na CAPABILITY\r\n');
  });

  it('takes what real clients send before TLS', () => {
    for (const text of [
      'a1 CAPABILITY',
      'a2 STARTTLS',
      'a3 noop',
      'A004 LOGOUT',
      'a ID NIL',
      'a ID ("name" "Thunderbird" "version" "115.0")',
      'a ID ()',
      'a LOGIN alice "se\\"cret"',
      'a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==',
    ]) {
      expect(parseSimple(text), text).toStrictEqual(parseWithGrammar(text, [], []));
    }
    expect(parseSimple('a1 CAPABILITY')).toStrictEqual({
      ok: true,
      command: { tag: 'a1', name: 'CAPABILITY', args: [] },
    });
  });

  it('leaves literals, nested lists and every invalid text to the grammar', () => {
    for (const text of [
      'a LOGIN {5} {6}',
      'a ID ("name" {5})',
      'a X (a (b))',
      '* NOOP',
      'a+ NOOP',
      'a  NOOP',
      'a NOOP ',
      'a NOOP\r',
      '',
      'a',
    ]) {
      expect(parseSimple(text), text).toBeUndefined();
    }
    // A literal the framer cut is checked against the tree, even when the text looks simple.
    expect(parseCommand('a NOOP', [6], [enc('x')])).toStrictEqual({
      ok: false,
      reason: 'literal',
    });
  });
});

describe('nameOf', () => {
  it('is the second space-separated word, upper case, as /^[^ ]+ ([^ ]+)/ finds it', () => {
    const reference = (text: string): string | null => {
      const m = /^[^ ]+ ([^ ]+)/.exec(text);
      return m ? m[1]!.toUpperCase() : null;
    };
    fc.assert(
      fc.property(
        fc.oneof(line, fc.string({ unit: pick([' ', 'a', 'B', '\r', '\u00e9']) })),
        (text) => {
          expect(nameOf(text)).toBe(reference(text));
        },
      ),
      TIME,
    );
  });
});
