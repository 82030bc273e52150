import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isViablePrefix, PrefixChecker, parseAll, parseCommand, tagOf } from '../src/parse.js';
import { enc } from './helpers.js';

// Representative framed commands (literal data already cut out by the framer).
const GOOD = [
  'a CAPABILITY',
  'a1 noop',
  'A001 STARTTLS',
  'x LOGOUT',
  'a LOGIN alice secret',
  'a LOGIN "alice" "se\\"cr\\\\et"',
  'a LOGIN {5} {6}',
  'a LOGIN {5+} {6+}',
  'a LOGIN "" ""',
  'a AUTHENTICATE PLAIN',
  'a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==',
  'a ID NIL',
  'a ID ("name" "Thunderbird" "version" "115.0")',
  'a ID ("name" {11} "os" NIL)',
  'a ID ()',
  'a SELECT INBOX',
  'a FETCH 1:* (FLAGS BODY.PEEK[HEADER])',
  'a STORE 1 +FLAGS (\\Seen \\Deleted)',
  'a LIST "" %',
  'a]b NOOP',
  `a NOOP ${'x'.repeat(8000)}`,
  `a LOGIN "${'\u00e9'.repeat(50)}" x`,
];

const BAD = [
  '',
  'a',
  'a ',
  'a  NOOP',
  'a NOOP ',
  '* NOOP',
  'a+ NOOP',
  'a NOOP (',
  'a NOOP ())',
  'a LOGIN "unterminated',
  'a LOGIN x{5}',
  'a LOGIN {} x',
  'a LOGIN {5',
  'a NOOP\r',
  'a NOOP \u0000',
  '(a) NOOP',
];

describe('command grammar', () => {
  it.each(GOOD)('has exactly one parse: %s', (line) => {
    expect(parseAll(line)).toHaveLength(1);
  });

  it.each(BAD)('has no parse: %j', (line) => {
    expect(parseAll(line)).toHaveLength(0);
  });

  it('parses a maximum length line quickly (linear postprocessors)', () => {
    const line = `a ID (${Array.from({ length: 2000 }, () => 'k v').join(' ')})`;
    const t0 = performance.now();
    expect(parseAll(line)).toHaveLength(1);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('converts arguments: quoted unescaping, literals in order, nested lists', () => {
    const text = 'a X "q\\"x" {3} (b {2+} (c))';
    const r = parseCommand(
      text,
      [text.indexOf('{3}') + 3, text.indexOf('{2+}') + 4],
      [enc('abc'), enc('de')],
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.command.tag).toBe('a');
    expect(r.command.name).toBe('X');
    expect(r.command.args).toEqual([
      { type: 'quoted', value: 'q"x' },
      { type: 'literal', value: enc('abc'), sync: true },
      {
        type: 'list',
        items: [
          { type: 'atom', value: 'b' },
          { type: 'literal', value: enc('de'), sync: false },
          { type: 'list', items: [{ type: 'atom', value: 'c' }] },
        ],
      },
    ]);
  });

  it('refuses literal markers the framer did not cut', () => {
    expect(parseCommand('a LOGIN {5} x', [], [])).toEqual({ ok: false, reason: 'literal' });
    expect(parseCommand('a LOGIN {5} {3}', [15], [enc('abc')])).toEqual({
      ok: false,
      reason: 'literal',
    });
  });

  it('knows viable prefixes', () => {
    expect(isViablePrefix('a LOGIN {5}')).toBe(true);
    expect(isViablePrefix('a ID ("name" {5}')).toBe(true);
    expect(isViablePrefix('a LOGIN x{5}')).toBe(false);
  });

  it('validates tags as Dovecot and RFC 9051 do', () => {
    expect(tagOf('a1 NOOP')).toBe('a1');
    expect(tagOf('a]1 NOOP')).toBe('a]1');
    for (const bad of ['* NOOP', 'a+ NOOP', 'a% x', '"a" x', `${'t'.repeat(101)} NOOP`, '']) {
      expect(tagOf(bad)).toBeNull();
    }
  });
});

// Issue 14: the session checks a command's viability char by char as its parts arrive, instead
// of running nearley over the whole command at every `{n}` (O(n²) in the command size).
describe('PrefixChecker agrees with the grammar', () => {
  const piece = fc.constantFrom(
    ...'aB1 ()"\\{}+*%]\x00\x7f\xe9'.split(''),
    'a ',
    'ID ',
    'LOGIN ',
    '{5}',
    '{5+}',
    '"x"',
  );
  it('on every prefix of random text', () => {
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 14 }), (pieces) => {
        const text = pieces.join('');
        const checker = new PrefixChecker();
        for (let i = 0; i <= text.length; i++) {
          const prefix = text.slice(0, i);
          expect(checker.viable(prefix), JSON.stringify(prefix)).toBe(isViablePrefix(prefix));
        }
      }),
      { numRuns: 3000 },
    );
  });
});
