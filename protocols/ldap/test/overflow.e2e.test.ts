// Issue 17 item 4: the engine's pre-TLS byte cap (maxPreambleBytes, 64 KiB) never ends a
// connection without a word: through a real TlsProxy on loopback the client reads LDAP's
// own error before the close, whether the dialect's limits answer first (the default) or the
// cap is crossed first and the engine sends the dialect's overflow() reply.
import { afterEach, describe, expect, it } from 'vitest';
import { engineHarness, exchange } from '../../../fixtures/e2e.mjs';
import { dialect } from '../src/index.js';
import { noticeOfDisconnection, RESULT } from '../src/messages.js';

const h = engineHarness(dialect);
afterEach(h.close);

describe('LDAP through the engine: too much before TLS', () => {
  it('70 KiB without an end: the dialect’s own error, then the close', async () => {
    const port = await h.listen({});
    const r = await exchange(
      port,
      '',
      '',
      Uint8Array.from([0x30, 0x83, 0x01, 0x86, 0xa0, ...new Uint8Array(70 * 1024)]),
    );
    expect(r.reply).toMatch(/^0/);
    expect(r.closed).toBe(true);
  }, 20_000);

  it('past maxPreambleBytes first: overflow() is written, then the close', async () => {
    const port = await h.listen({ maxPreambleBytes: 4096, limits: { maxPduSize: 200_000 } });
    const r = await exchange(
      port,
      '',
      '',
      Uint8Array.from([0x30, 0x83, 0x01, 0x86, 0xa0, ...new Uint8Array(5000)]),
    );
    expect(Buffer.from(r.reply, 'latin1').toString('hex')).toBe(
      Buffer.from(
        noticeOfDisconnection(RESULT.protocolError, 'too much data before StartTLS'),
      ).toString('hex'),
    );
    expect(r.closed).toBe(true);
    expect(h.lines.some((l) => l.includes('too many bytes before TLS'))).toBe(true);
  }, 20_000);
});
