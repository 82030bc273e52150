// Issue 17 item 4: the engine's pre-TLS byte cap (maxPreambleBytes, 64 KiB) never ends a
// connection without a word: through a real TlsProxy on loopback the client reads POP3's
// own error before the close, whether the dialect's limits answer first (the default) or the
// cap is crossed first and the engine sends the dialect's overflow() reply.
import { afterEach, describe, expect, it } from 'vitest';
import { engineHarness, exchange } from '../../../fixtures/e2e.mjs';
import { dialect } from '../src/index.js';

const h = engineHarness(dialect);
afterEach(h.close);

describe('POP3 through the engine: too much before TLS', () => {
  it('70 KiB without an end: the dialect’s own error, then the close', async () => {
    const port = await h.listen({});
    const r = await exchange(port, '+OK', '', new TextEncoder().encode('x'.repeat(70 * 1024)));
    expect(r.reply).toMatch(/^-ERR [^\r\n]+\r\n$/);
    expect(r.closed).toBe(true);
  }, 20_000);

  it('past maxPreambleBytes first: overflow() is written, then the close', async () => {
    const port = await h.listen({ maxPreambleBytes: 4096, limits: { maxLineLength: 100_000 } });
    const r = await exchange(port, '+OK', '', new TextEncoder().encode('x'.repeat(5000)));
    expect(r.reply).toBe('-ERR Too much data before STLS, closing connection.\r\n');
    expect(r.closed).toBe(true);
    expect(h.lines.some((l) => l.includes('too many bytes before TLS'))).toBe(true);
  }, 20_000);
});
