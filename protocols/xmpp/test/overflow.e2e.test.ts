// Issue 17 item 4: the engine's pre-TLS byte cap (maxPreambleBytes, 64 KiB) never ends a
// connection without a word: through a real TlsProxy on loopback the client reads XMPP's
// own error before the close, whether the dialect's limits answer first (the default) or the
// cap is crossed first and the engine sends the dialect's overflow() reply.
import { afterEach, describe, expect, it } from 'vitest';
import { engineHarness, exchange } from '../../../fixtures/e2e.mjs';
import { dialect } from '../src/index.js';

const h = engineHarness(dialect, { listener: { options: { domains: ['localhost'] } } });
afterEach(h.close);

describe('XMPP through the engine: too much before TLS', () => {
  it('70 KiB without an end: the dialect’s own error, then the close', async () => {
    const port = await h.listen({});
    const r = await exchange(
      port,
      '',
      "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
      new TextEncoder().encode('x'.repeat(70 * 1024)),
    );
    expect(r.reply).toMatch(
      /^<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'\/>[\s\S]*<\/stream:stream>$/,
    );
    expect(r.closed).toBe(true);
  }, 20_000);

  it('past maxPreambleBytes first: overflow() is written, then the close', async () => {
    const port = await h.listen({ maxPreambleBytes: 4096, limits: { maxStanzaSize: 200_000 } });
    const r = await exchange(
      port,
      '',
      "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
      new TextEncoder().encode('x'.repeat(5000)),
    );
    expect(r.reply).toBe(
      "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Too much data before STARTTLS</text></stream:error></stream:stream>",
    );
    expect(r.closed).toBe(true);
    expect(h.lines.some((l) => l.includes('too many bytes before TLS'))).toBe(true);
  }, 20_000);
});
