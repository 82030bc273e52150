import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nameOf, parseAll, parseCommand, parseWithGrammar } from '../src/parse.js';

const GOOD = [
  'CAPA',
  'capa',
  'STLS',
  'QUIT',
  'USER alice',
  'PASS secret',
  'PASS s3cr3t!"#$%&',
  'APOP mrose c4c9334bac560ecc979e58001b3e22fb',
  'AUTH PLAIN',
  'AUTH PLAIN AGFsaWNlAHNlY3JldA==',
  'TOP 1 10',
  'LIST 1',
  'GET / HTTP/1.1',
  `USER ${'\u00e9'.repeat(50)}`,
  `NOOP ${'x'.repeat(250)}`,
  'X',
];

const BAD = [
  '',
  ' ',
  ' CAPA',
  'CAPA ',
  'USER  alice',
  'USER alice ',
  'CA\tPA',
  'CAPA\r',
  'NOOP \u0000',
  '\u00e9CAPA',
];

describe('command grammar', () => {
  it.each(GOOD)('has exactly one parse: %s', (line) => {
    expect(parseAll(line)).toHaveLength(1);
  });

  it.each(BAD)('has no parse: %j', (line) => {
    expect(parseAll(line)).toHaveLength(0);
  });

  it('has exactly one parse for many arguments (no ambiguity in the list)', () => {
    const line = `X ${Array.from({ length: 120 }, (_, i) => `a${i}`).join(' ')}`;
    expect(parseAll(line)).toHaveLength(1);
  });

  it('splits keyword and arguments, keyword in upper case', () => {
    expect(parseCommand('top 1 10')).toEqual({
      ok: true,
      command: { name: 'TOP', args: ['1', '10'] },
    });
    expect(parseCommand('sTlS')).toEqual({ ok: true, command: { name: 'STLS', args: [] } });
    expect(parseCommand('CAPA ')).toEqual({ ok: false, reason: 'syntax' });
  });

  it('finds the keyword of a refused line', () => {
    expect(nameOf('user  x')).toBe('USER');
    expect(nameOf(' x')).toBeNull();
    expect(nameOf('')).toBeNull();
  });
});

// parseCommand scans (nearley cost ~2 ms per KB of line, a CPU attack on the proxy): for every
// line, what the scan returns — refusal, or keyword and arguments — must be the grammar's.
describe('the command scan agrees with the grammar', () => {
  const piece = fc.constantFrom(
    'USER',
    'capa',
    'x',
    ' ',
    '  ',
    '\t',
    '!"#',
    '\u0000',
    '\u007f',
    '\u0080',
    '\u00e9',
    '\u00ff',
    '\r',
    '9',
  );
  const line = fc.oneof(
    fc.array(piece, { maxLength: 8 }).map((a) => a.join('')),
    fc.constantFrom(...GOOD, ...BAD),
  );
  it('any line', () => {
    fc.assert(
      fc.property(line, (l) => {
        expect(parseCommand(l), JSON.stringify(l)).toEqual(parseWithGrammar(l));
      }),
      { numRuns: 5000 },
    );
  });
});
