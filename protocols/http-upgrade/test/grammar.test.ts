// The nearley grammar (src/request.ne): accepts RFC 9112 request and field lines, refuses the
// rest, and never yields more than one parse.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  grammarAcceptsPrefix,
  LineChecker,
  parseAll,
  parseFieldLine,
  parseRequestLine,
  parseWithGrammar,
  scanField,
  scanRequest,
} from '../src/parse.js';

const GOOD_REQUESTS = [
  'OPTIONS * HTTP/1.1',
  'GET / HTTP/1.1',
  'GET /a/b?c=d&e=%20#x HTTP/1.0',
  'POST http://example.com:631/printers/x HTTP/1.1',
  'CONNECT example.com:443 HTTP/1.1',
  'PRI * HTTP/2.0',
  'M-SEARCH * HTTP/1.1',
  "x!#$%&'*+-.^_`|~9 /p HTTP/9.9",
  `GET /${'x'.repeat(8000)} HTTP/1.1`,
];

const BAD_REQUESTS = [
  '',
  'GET',
  'GET /',
  'GET / HTTP/1.1 ',
  ' GET / HTTP/1.1',
  'GET  / HTTP/1.1',
  'GET / http/1.1',
  'GET / HTTP/1',
  'GET / HTTP/1.10',
  'GET / HTTP/11.1',
  'GET\t/ HTTP/1.1',
  'G(T / HTTP/1.1',
  'GET /\u00e9 HTTP/1.1',
  'GET /a b HTTP/1.1',
  'GET / HTTP/1.1\r',
  '\u0016\u0003\u0001\u0002\u0000',
];

const GOOD_FIELDS: [string, [string, string]][] = [
  ['Host: a', ['Host', 'a']],
  ['Host:a', ['Host', 'a']],
  ['Host:   a  \t', ['Host', 'a']],
  ['X-Empty:', ['X-Empty', '']],
  ['X-Empty:   \t ', ['X-Empty', '']],
  ['Upgrade: TLS/1.2,TLS/1.1,TLS/1.0', ['Upgrade', 'TLS/1.2,TLS/1.1,TLS/1.0']],
  ['A: b  c\td', ['A', 'b  c\td']],
  ['A: \u00e9\u00ff', ['A', '\u00e9\u00ff']],
  ["!#$%&'*+-.^_`|~: x", ["!#$%&'*+-.^_`|~", 'x']],
];

const BAD_FIELDS = [
  '',
  ': x',
  'Host : a',
  'Host\t: a',
  ' Host: a',
  '\tcontinued',
  'Host a',
  'Ho(st: a',
  'A: b\u0000c',
  'A: b\u007fc',
  'A: b\rc',
  'A: b\u0001',
];

describe('request line', () => {
  it.each(GOOD_REQUESTS)('parses %j exactly once', (line) => {
    expect(parseAll('request', line)).toHaveLength(1);
    expect(parseRequestLine(line).ok).toBe(true);
  });

  it.each(BAD_REQUESTS)('refuses %j', (line) => {
    expect(parseAll('request', line)).toHaveLength(0);
    expect(parseRequestLine(line).ok).toBe(false);
  });

  it('returns the parts', () => {
    expect(parseRequestLine('OPTIONS * HTTP/1.1')).toEqual({
      ok: true,
      value: { method: 'OPTIONS', target: '*', version: 'HTTP/1.1', major: 1, minor: 1 },
    });
  });

  it('fails at the first impossible octet when fed incrementally', () => {
    const p = new LineChecker('request');
    expect(p.feed('GET /')).toBe(true);
    expect(p.feed(' HTTP/')).toBe(true);
    expect(p.feed('1.1x')).toBe(false);
    expect(p.ok).toBe(false);
    const q = new LineChecker('request');
    expect(q.feed('\u0016')).toBe(false);
  });
});

describe('field line', () => {
  it.each(GOOD_FIELDS)('parses %j exactly once', (line, expected) => {
    expect(parseAll('field', line)).toHaveLength(1);
    expect(parseFieldLine(line)).toEqual({ ok: true, value: expected });
  });

  it.each(BAD_FIELDS)('refuses %j', (line) => {
    expect(parseAll('field', line)).toHaveLength(0);
  });

  it('a request line is not a field line and the other way round', () => {
    expect(parseAll('field', 'GET / HTTP/1.1')).toHaveLength(0);
    expect(parseAll('request', 'Host: a')).toHaveLength(0);
  });

  it('parses a long value in linear time', () => {
    const t = Date.now();
    expect(parseAll('field', `X: ${'a b '.repeat(2000)}z`)).toHaveLength(1);
    expect(Date.now() - t).toBeLessThan(2000);
  });
});

// Issue 14: the framer no longer feeds nearley octet by octet; an O(1)-per-octet automaton
// decides when a line can no longer parse. It must refuse exactly where nearley would.
describe('the octet checker agrees with the grammar', () => {
  const octet = fc.constantFrom(
    ...'GETOPIONS HTTP/1.0:;*/ \t\x00\x7f\x80\xff\x16x9-'.split(''),
    'HTTP/1.1',
    'Host: ',
  );
  const text = fc.array(octet, { maxLength: 12 }).map((a) => a.join(''));
  for (const kind of ['request', 'field'] as const) {
    it(`${kind} lines: every prefix`, () => {
      fc.assert(
        fc.property(text, (t) => {
          const checker = new LineChecker(kind);
          for (let i = 1; i <= t.length; i++) {
            const prefix = t.slice(0, i);
            expect(checker.feed(t[i - 1]!), JSON.stringify(prefix)).toBe(
              grammarAcceptsPrefix(kind, prefix),
            );
          }
        }),
        { numRuns: 2000 },
      );
    });
  }
});

// The scan replaces nearley at the line end (a complete line cost ~2 ms per KB in nearley): for
// every line, what it returns — refusal, or the parts — must be the grammar's.
describe('the line scan agrees with the grammar', () => {
  const octet = fc.constantFrom(
    ...'GETOPIONS HTTP/1.0:;*/ \t\x00\x7f\x80\xff\x16x9-'.split(''),
    'HTTP/1.1',
    ' HTTP/1.1',
    'Host: ',
    '  ',
    '\t ',
    '\u013a',
  );
  const text = fc.array(octet, { maxLength: 14 }).map((a) => a.join(''));
  const fields = [...GOOD_FIELDS.map(([l]) => l), ...BAD_FIELDS];
  const cases = (kind: 'request' | 'field') =>
    fc.oneof(
      text,
      fc.constantFrom(...fields),
      kind === 'request' ? fc.constantFrom(...GOOD_REQUESTS, ...BAD_REQUESTS) : text,
    );
  it('request lines', () => {
    fc.assert(
      fc.property(cases('request'), (t) => {
        expect(scanRequest(t), JSON.stringify(t)).toEqual(parseWithGrammar('request', t));
      }),
      { numRuns: 3000 },
    );
  });
  it('field lines', () => {
    fc.assert(
      fc.property(cases('field'), (t) => {
        expect(scanField(t), JSON.stringify(t)).toEqual(parseWithGrammar('field', t));
      }),
      { numRuns: 3000 },
    );
  });
  it('a 16 KB field line is scanned whole', () => {
    const line = `X: ${'a b '.repeat(4000)}z`;
    expect(scanField(line)).toEqual({ ok: true, value: ['X', line.slice(3)] });
  });
});
