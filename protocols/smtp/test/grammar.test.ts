import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { KNOWN_COMMANDS } from '../src/commands.js';
import {
  parseAll,
  parseCommand,
  parseWithGrammar,
  scanCommand,
  trimEnd,
  verbOf,
} from '../src/parse.js';

// Representative framed lines (no CRLF; trailing spaces are trimmed before parsing).
const GOOD = [
  'EHLO client.example',
  'ehlo [192.0.2.1]',
  'EHLO [IPv6:2001:db8::1]',
  'HELO x',
  'EHLO b\u00fccher.example',
  'MAIL FROM:<a@b.example>',
  'MAIL FROM:<>',
  'mail from: <a@b> SIZE=1000 BODY=8BITMIME',
  'MAIL FROM:<"odd > local"@b>',
  'RCPT TO:<Postmaster>',
  'RCPT TO:<a@b> NOTIFY=NEVER',
  'DATA',
  'BDAT 1000',
  'BDAT 0 LAST',
  'bdat 7 last',
  'Rcpt to:<a@b>',
  'auth x-oauth2 dG9rZW4=',
  'RSET',
  'NOOP',
  'NOOP any text at all',
  'HELP',
  'HELP MAIL',
  'QUIT',
  'STARTTLS',
  'starttls',
  'AUTH PLAIN',
  'AUTH PLAIN AGFsaWNlAHNlY3JldA==',
  'AUTH LOGIN =',
  'VRFY root',
  'EXPN staff',
  'ETRN @example.org',
  `NOOP ${'x'.repeat(505)}`,
];

const BAD = [
  '',
  'EHLO',
  'EHLO ',
  'EHLO a b',
  'EHLOx a',
  'HELO',
  'MAIL',
  'MAIL FROM:',
  'MAIL TO:<a@b>',
  'MAILFROM:<a@b>',
  'RCPT',
  'DATA x',
  'BDAT',
  'BDAT x',
  'BDAT 10 NOW',
  'RSET x',
  'QUIT now',
  'STARTTLS now',
  'STARTTLS  ',
  'AUTH',
  'AUTH PL@IN',
  'NOOP \u0000',
  'NOOP\r',
  'FROB',
  'GET / HTTP/1.1',
];

describe('command grammar', () => {
  it.each(GOOD)('has exactly one parse: %s', (line) => {
    expect(parseAll(line)).toHaveLength(1);
  });

  it.each(BAD)('has no parse: %j', (line) => {
    expect(parseAll(line)).toHaveLength(0);
  });

  it('covers every known command', () => {
    const parsed = new Set(
      GOOD.map((l) => (parseCommand(l) as { command: { verb: string } }).command.verb),
    );
    expect([...parsed].sort()).toEqual([...KNOWN_COMMANDS].sort());
  });

  it('extracts the argument', () => {
    expect(parseCommand('EHLO client.example')).toEqual({
      ok: true,
      command: { verb: 'EHLO', arg: 'client.example' },
    });
    expect(parseCommand('mail from:<a@b> SIZE=9  ')).toEqual({
      ok: true,
      command: { verb: 'MAIL', arg: '<a@b> SIZE=9' },
    });
    expect(parseCommand('BDAT 42 LAST')).toEqual({
      ok: true,
      command: { verb: 'BDAT', arg: '42' },
    });
    expect(parseCommand('QUIT')).toEqual({ ok: true, command: { verb: 'QUIT', arg: null } });
    expect(parseCommand('STARTTLS x')).toEqual({ ok: false, reason: 'syntax' });
  });

  it('parses a maximum length line quickly (linear postprocessors)', () => {
    const t0 = performance.now();
    expect(parseAll(`NOOP ${'x y '.repeat(2000)}z`)).toHaveLength(1);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('finds the command word', () => {
    expect(verbOf('mail FROM:<a>')).toBe('MAIL');
    expect(verbOf('QUIT  ')).toBe('QUIT');
    expect(verbOf('')).toBe('');
  });
});

// parseCommand scans (nearley cost ~2 ms per KB of line, a CPU attack on the proxy): for every
// line, what the scan returns — refusal, or verb and argument — must be the grammar's.
describe('the command scan agrees with the grammar', () => {
  const piece = fc.constantFrom(
    ...[...KNOWN_COMMANDS, 'EHLO', 'ehlo', 'MaIl', 'rcpt', 'bdat', 'Last', 'LAST', 'FROB'],
    'FROM:',
    'from:',
    'TO:',
    ' ',
    '  ',
    '\t',
    '<a@b>',
    'x',
    '9',
    '42',
    '_-',
    '=',
    '@',
    '\u0000',
    '\u007f',
    '\u0080',
    '\u00e9',
    '\u00ff',
    '\r',
    ':',
  );
  const line = fc.oneof(
    fc.array(piece, { maxLength: 8 }).map((a) => a.join('')),
    fc.constantFrom(...GOOD, ...BAD),
  );
  it('any line, as parseCommand trims it', () => {
    fc.assert(
      fc.property(line, (l) => {
        const t = trimEnd(l);
        expect(scanCommand(t), JSON.stringify(t)).toEqual(parseWithGrammar(t));
      }),
      { numRuns: 5000 },
    );
  });
  it('trimEnd drops trailing spaces and tabs only, in one pass', () => {
    expect(trimEnd('QUIT \t ')).toBe('QUIT');
    expect(trimEnd(' \tx')).toBe(' \tx');
    expect(trimEnd(`${' '.repeat(20000)}x`)).toHaveLength(20001);
  });
});
