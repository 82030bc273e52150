// backendGreeting: which bytes of a legacy IMAP server's first output the engine swallows.
import { describe, expect, it } from 'vitest';
import { backendGreeting } from '../src/backend-greeting.js';
import { dialect } from '../src/index.js';

const b = (s: string) => new TextEncoder().encode(s);

/** Feed one byte at a time, as the engine might; the answer must not depend on chunking. */
function byteByByte(s: string): number | null {
  const all = b(s);
  for (let i = 1; i <= all.length; i++) {
    const r = backendGreeting(all.subarray(0, i));
    if (r !== null) return r;
  }
  return null;
}

describe('IMAP backendGreeting', () => {
  it('is declared on the dialect', () => {
    expect(dialect.backendGreeting).toBe(backendGreeting);
  });

  it('swallows a Dovecot greeting with a CAPABILITY code, and only that line', () => {
    const g =
      '* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot (Debian) ready.\r\n';
    expect(backendGreeting(b(g))).toBe(g.length);
    expect(backendGreeting(b(`${g}* BYE later\r\n`))).toBe(g.length);
    expect(byteByByte(g)).toBe(g.length);
  });

  it('asks for more until the line ends', () => {
    expect(backendGreeting(b(''))).toBeNull();
    expect(backendGreeting(b('* O'))).toBeNull();
    expect(backendGreeting(b('* OK IMAP4 ready'))).toBeNull();
    expect(backendGreeting(b('* ok ready\r\n'))).toBe(12);
  });

  it('relays what is not an OK greeting (BYE, PREAUTH, garbage) at once', () => {
    expect(backendGreeting(b('* BYE Too many connections\r\n'))).toBe(0);
    expect(backendGreeting(b('* B'))).toBe(0);
    expect(backendGreeting(b('* PREAUTH hi\r\n'))).toBe(0);
    expect(backendGreeting(b('* OKAY\r\n'))).toBe(0);
    expect(backendGreeting(b('HTTP/1.1 400'))).toBe(0);
  });
});
