// backendGreeting: which bytes of a legacy SMTP server's first output the engine swallows.
import { describe, expect, it } from 'vitest';
import { backendGreeting } from '../src/backend-greeting.js';
import { backendReplay } from '../src/backend-replay.js';
import { dialect } from '../src/index.js';

const b = (s: string) => new TextEncoder().encode(s);

describe('SMTP backendGreeting', () => {
  it('is declared on the dialect', () => {
    expect(dialect.backendGreeting).toBe(backendGreeting);
  });

  it('swallows a one-line 220 greeting', () => {
    const g = '220 mx.example.org ESMTP Postfix (Debian/GNU)\r\n';
    expect(backendGreeting(b(g))).toBe(g.length);
    expect(backendGreeting(b(`${g}250 x\r\n`))).toBe(g.length);
    expect(backendGreeting(b('220\r\n'))).toBe(5);
  });

  it('waits for the last line of a multi-line 220 greeting, in any chunking', () => {
    const g = '220-mx.example.org ESMTP\r\n220-No UCE\r\n220 ready\r\n';
    expect(backendGreeting(b(g))).toBe(g.length);
    for (let i = 0; i < g.length; i++) expect(backendGreeting(b(g.slice(0, i)))).toBeNull();
  });

  it('relays any other reply at once (554, 421, garbage)', () => {
    expect(backendGreeting(b('554 5.3.2 mx.example.org No SMTP service here\r\n'))).toBe(0);
    expect(backendGreeting(b('421 4.3.2 Service shutting down\r\n'))).toBe(0);
    expect(backendGreeting(b('5'))).toBe(0);
    expect(backendGreeting(b('220-ok\r\n554 no\r\n'))).toBe(0);
    expect(backendGreeting(b('2200 x\r\n'))).toBe(0);
  });
});

describe('backendReplay (MX mode into a connect-mode server)', () => {
  const text = (b: Uint8Array) => new TextDecoder().decode(b);

  it('replays the client’s EHLO or HELO and swallows a complete 250 reply', () => {
    const r = backendReplay({ ehlo: 'sender.example', esmtp: true })!;
    expect(text(r.send)).toBe('EHLO sender.example\r\n');
    const reply = b('250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n');
    expect(r.reply(reply.subarray(0, 20))).toBeNull();
    expect(r.reply(reply)).toBe(reply.length);
    expect(text(backendReplay({ ehlo: 'old.example', esmtp: false })!.send)).toBe(
      'HELO old.example\r\n',
    );
  });

  it('relays a refusal and replays nothing without a valid name', () => {
    const r = backendReplay({ ehlo: 'sender.example', esmtp: true })!;
    expect(r.reply(b('550 5.7.1 go away\r\n'))).toBe(0);
    expect(backendReplay({ ehlo: null, esmtp: false })).toBeNull();
    expect(backendReplay({ ehlo: 'a b\r\nRSET', esmtp: true })).toBeNull();
    expect(backendReplay({})).toBeNull();
  });
});
