// Issue 17 item 4: where the preamble answers as Postfix's smtpd does (recorded in
// fixtures/transcripts/smtp/real-*.txt by fixtures/record/record-real.sh), or where RFC 5321 wins.
import { describe, expect, it } from 'vitest';
import { feed } from './helpers.js';

const UNKNOWN = '500 5.5.2 Error: command not recognized\r\n';
const EHLO = 'EHLO client.example\r\n';

describe('an overlong line (RFC 5321 4.5.3.1.4; Postfix also reads on)', () => {
  it('gets 500 5.5.2 Line too long once, and the session goes on', () => {
    const { actions, text } = feed([`FROB ${'x'.repeat(9000)}\r\nNOOP\r\n`]);
    expect(text).toBe('500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n');
    expect(actions.some((a) => a.type === 'close')).toBe(false);
  });

  it('never starts TLS for an overlong STARTTLS line', () => {
    const { actions, text } = feed([EHLO, `STARTTLS ${'x'.repeat(9000)}\r\n`]);
    expect(text).toMatch(/500 5\.5\.2 Line too long\r\n$/);
    expect(actions.some((a) => a.type === 'starttls')).toBe(false);
  });
});

describe('STARTTLS spellings (Postfix: case and a trailing space are fine)', () => {
  it('takes any letter case and a trailing space', () => {
    for (const line of ['StartTls', 'starttls', 'STARTTLS ']) {
      const { actions } = feed([EHLO, `${line}\r\n`]);
      expect(
        actions.some((a) => a.type === 'starttls'),
        JSON.stringify(line),
      ).toBe(true);
    }
  });

  it('refuses a leading space, a tab or an argument without starting TLS', () => {
    for (const line of [' STARTTLS', 'STARTTLS\tnow', 'STARTTLS now']) {
      const { actions, text } = feed([EHLO, `${line}\r\n`]);
      expect(text, JSON.stringify(line)).toMatch(/\r\n50[01] 5\.5\.[24] [^\r\n]+\r\n$/);
      expect(actions.some((a) => a.type === 'starttls')).toBe(false);
    }
  });
});

describe('bad commands (Postfix smtpd_hard_error_limit: good commands do not reset the count)', () => {
  it('counts errors across good commands', () => {
    const { actions, text } = feed(
      ['FROB 1\r\n', 'NOOP\r\n', 'FROB 2\r\n', 'FROB 3\r\n', 'FROB 4\r\n', 'FROB 5\r\n'],
      {},
      { maxBadCommands: 5 },
    );
    expect(text).toBe(
      `${UNKNOWN}250 2.0.0 Ok\r\n${UNKNOWN.repeat(4)}421 4.7.0 mail.example Error: too many errors\r\n`,
    );
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('closes after the documented default of 20 error replies', () => {
    const { actions, text } = feed(['FROB\r\n'.repeat(21)]);
    expect(text).toBe(`${UNKNOWN.repeat(20)}421 4.7.0 mail.example Error: too many errors\r\n`);
    expect(actions.at(-1)?.type).toBe('close');
  });
});
