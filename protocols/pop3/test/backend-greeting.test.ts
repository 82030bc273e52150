// backendGreeting: which bytes of a legacy POP3 server's first output the engine swallows.
import { describe, expect, it } from 'vitest';
import { backendGreeting } from '../src/backend-greeting.js';
import { dialect } from '../src/index.js';

const b = (s: string) => new TextEncoder().encode(s);

describe('POP3 backendGreeting', () => {
  it('is declared on the dialect', () => {
    expect(dialect.backendGreeting).toBe(backendGreeting);
  });

  it('swallows the +OK line only, in any chunking', () => {
    const g = '+OK Dovecot (Debian) ready.\r\n';
    expect(backendGreeting(b(g))).toBe(g.length);
    expect(backendGreeting(b(`${g}-ERR x\r\n`))).toBe(g.length);
    for (let i = 0; i < g.length; i++) expect(backendGreeting(b(g.slice(0, i)))).toBeNull();
    expect(backendGreeting(b('+OK <1896.697170952@dbc.mtview.ca.us>\r\n'))).toBe(39);
    expect(backendGreeting(b('+OK\r\n'))).toBe(5);
  });

  it('relays -ERR and anything else at once', () => {
    expect(backendGreeting(b('-ERR [SYS/TEMP] Too many connections\r\n'))).toBe(0);
    expect(backendGreeting(b('-'))).toBe(0);
    expect(backendGreeting(b('+OKAY\r\n'))).toBe(0);
    expect(backendGreeting(b('* OK imap\r\n'))).toBe(0);
  });
});
