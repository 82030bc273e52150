// Issue 17 item 4: where the preamble answers as Dovecot's pop3-login does (recorded in
// fixtures/transcripts/pop3/real-*.txt by fixtures/record/record-real.sh), or where the RFC wins.
import { describe, expect, it } from 'vitest';
import { feed } from './helpers.js';

const CAPA =
  '+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nSASL\r\n.\r\n';
const TOO_LONG = '-ERR Command line too long.\r\n';
const UNKNOWN = '-ERR Unknown command.\r\n';

describe('an overlong command line (Dovecot: "-ERR Input buffer full, aborting" and close)', () => {
  const long = `FROB ${'x'.repeat(300)}\r\nCAPA\r\n`;

  it('is answered with -ERR and a close, whatever the chunking', () => {
    for (const chunks of [[long], [...long]]) {
      const { actions, text } = feed(chunks);
      expect(text).toBe(TOO_LONG);
      expect(actions.at(-1)?.type).toBe('close');
    }
  });

  it('closes as soon as the line is certainly too long, before its LF', () => {
    const { actions, text } = feed([`FROB ${'x'.repeat(300)}`]);
    expect(text).toBe(TOO_LONG);
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('never starts TLS for an overlong STLS line', () => {
    const { actions, text } = feed([`STLS ${'x'.repeat(2000)}\r\n`]);
    expect(text).toBe(TOO_LONG);
    expect(actions.some((a) => a.type === 'starttls')).toBe(false);
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('still accepts 255 octets with the CRLF (RFC 2449 section 4)', () => {
    const ok = `FROB ${'x'.repeat(248)}\r\n`;
    expect(ok.length).toBe(255);
    expect(feed([ok, 'CAPA\r\n']).text).toBe(`${UNKNOWN}${CAPA}`);
  });
});

describe('bad commands (Dovecot pop3-login: 3 in a row, a +OK answer resets the count)', () => {
  it('closes after maxBadCommands bad commands in a row', () => {
    const { actions, text } = feed(['FROB\r\n'.repeat(4)], {}, { maxBadCommands: 3 });
    expect(text).toBe(`${UNKNOWN.repeat(3)}-ERR Too many bad commands.\r\n`);
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('starts counting again after a command answered +OK', () => {
    const { actions, text } = feed(
      ['FROB\r\n', 'CAPA\r\n', 'FROB\r\n', 'FROB\r\n', 'FROB\r\n'],
      {},
      { maxBadCommands: 3 },
    );
    expect(text).toBe(
      `${UNKNOWN}${CAPA}${UNKNOWN}${UNKNOWN}${UNKNOWN}-ERR Too many bad commands.\r\n`,
    );
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('does not reset the count on a refusal that is not a bad command (USER before TLS)', () => {
    const { actions } = feed(
      ['FROB\r\n', 'USER a\r\n', 'FROB\r\n', 'FROB\r\n'],
      {},
      { maxBadCommands: 3 },
    );
    expect(actions.at(-1)?.type).toBe('close');
  });
});

describe('STLS spelled like Dovecot accepts it', () => {
  it('takes any letter case', () => {
    for (const word of ['stls', 'Stls', 'STLS']) {
      expect(
        feed([`${word}\r\n`]).actions.some((a) => a.type === 'starttls'),
        word,
      ).toBe(true);
    }
  });

  it('answers -ERR to an argument or extra spaces (RFC 2595 section 4: no arguments)', () => {
    for (const line of ['STLS now', 'STLS ', 'STLS  now', 'STLS\tnow', ' STLS']) {
      const { actions, text } = feed([`${line}\r\n`]);
      expect(text, JSON.stringify(line)).toMatch(/^-ERR [^\r\n]+\r\n$/);
      expect(actions.some((a) => a.type === 'starttls')).toBe(false);
    }
  });
});

describe('the documented number of bad commands (README: maxBadCommands 10)', () => {
  it('the 10th bad command in a row gets its -ERR, then -ERR Too many bad commands. and a close', () => {
    const { actions, text } = feed(['FROB\r\n'.repeat(11)]);
    expect(text).toBe(`${UNKNOWN.repeat(10)}-ERR Too many bad commands.\r\n`);
    expect(actions.at(-1)?.type).toBe('close');
  });
});
