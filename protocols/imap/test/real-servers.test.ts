// Issue 17 item 4: where the preamble answers as Dovecot's imap-login does (recorded in
// fixtures/transcripts/imap/real-*.txt by fixtures/record/record-real.sh), or where the RFC wins.
import { describe, expect, it } from 'vitest';
import { feed } from './helpers.js';

const BYE = '* BYE Command line too long.\r\n';

describe('an overlong command line (Dovecot: "* BYE Input buffer full, aborting" and close)', () => {
  const limits = { maxLineLength: 50 };
  const long = `a NOOP ${'x'.repeat(100)}\r\nb NOOP\r\n`;

  it('is answered with * BYE and a close, never a BAD and more reading', () => {
    const { actions, text } = feed([long], {}, limits);
    expect(text).toBe(BYE);
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('closes the same whatever the chunking, and before the line ends', () => {
    expect(feed([...long], {}, limits).text).toBe(BYE);
    // 60 octets without an LF are already too long: no need to wait for the rest
    const { actions, text } = feed([`a NOOP ${'x'.repeat(60)}`], {}, limits);
    expect(text).toBe(BYE);
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('never starts TLS for an overlong STARTTLS line', () => {
    const { actions, text } = feed([`a STARTTLS ${'x'.repeat(9000)}\r\n`]);
    expect(text).toBe(BYE);
    expect(actions.some((a) => a.type === 'starttls')).toBe(false);
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('closes at once when the overlong line announces a literal', () => {
    const { actions, text } = feed(
      [`a NOOP ${'x'.repeat(30)}{${'0'.repeat(40)}5+}\r\n`],
      {},
      { maxLineLength: 20 },
    );
    expect(text).toBe(BYE);
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('accepts a line of exactly maxLineLength octets', () => {
    const line = `a NOOP ${'x'.repeat(43)}`; // 50 octets without CRLF
    expect(line.length).toBe(50);
    expect(feed([`${line}\r\n`], {}, limits).text).toMatch(/^a BAD /);
  });
});

describe('STARTTLS spelled like Dovecot accepts it', () => {
  it('takes any letter case', () => {
    for (const word of ['starttls', 'StartTls', 'STARTTLS']) {
      expect(
        feed([`a ${word}\r\n`]).actions.some((a) => a.type === 'starttls'),
        word,
      ).toBe(true);
    }
  });

  it('answers BAD for an argument, a trailing space, a tab or two spaces (RFC 9051: no arguments)', () => {
    for (const line of ['a STARTTLS now', 'a STARTTLS ', 'a STARTTLS\tnow', 'a  STARTTLS']) {
      const { actions, text } = feed([`${line}\r\n`]);
      expect(text, JSON.stringify(line)).toMatch(/^a BAD [^\r\n]+\r\n$/);
      expect(actions.some((a) => a.type === 'starttls')).toBe(false);
    }
    expect(feed([' a STARTTLS\r\n']).text).toMatch(/^\* BAD /);
  });
});

describe('bad commands (Dovecot imap-login: the 3rd is replaced by BYE, good ones do not reset)', () => {
  it('counts bad commands across good ones', () => {
    const { actions, text } = feed(
      ['a FROB\r\n', 'b NOOP\r\n', 'c FROB\r\n', 'd FROB\r\n', 'e NOOP\r\n'],
      {},
      { maxBadCommands: 3 },
    );
    expect(text).toBe(
      'a BAD Unknown command.\r\nb OK NOOP completed\r\nc BAD Unknown command.\r\n* BYE Too many invalid IMAP commands.\r\n',
    );
    expect(actions.at(-1)?.type).toBe('close');
  });
});

describe('an overlong line while discarding after a refused LOGIN literal', () => {
  it('still gets * BYE and a close (nothing of it is echoed)', () => {
    const { actions, text } = feed(
      ['a LOGIN {5}\r\n', `alice ${'x'.repeat(100)}secret\r\n`],
      {},
      { maxLineLength: 50 },
    );
    expect(text).toMatch(
      /^a NO \[PRIVACYREQUIRED\] [^\r\n]+\r\n\* BYE Command line too long\.\r\n$/,
    );
    expect(text).not.toContain('alice');
    expect(actions.at(-1)?.type).toBe('close');
  });
});

describe('the documented number of bad commands (README: maxBadCommands 10)', () => {
  it('the 10th BAD is replaced by * BYE and a close', () => {
    const { actions, text } = feed(['x FROB\r\n'.repeat(11)]);
    expect(text).toBe(
      `${'x BAD Unknown command.\r\n'.repeat(9)}* BYE Too many invalid IMAP commands.\r\n`,
    );
    expect(actions.at(-1)?.type).toBe('close');
  });
});
